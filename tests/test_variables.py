"""Variables as the API server has them: lazy, each with its own type, on both engines."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.helpers import pod, review
from webhook.admission import admit
from webhook.policies.cel import ENGINE_NAMES, make_engine
from webhook.policies.loader import load_policy_set
from webhook.reviews import parse_review

POLICY = """\
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata: {name: variables}
spec:
  podTemplates: true
  matchConstraints:
    resourceRules: [{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["pods"]}]
  variables:
    - name: priority
      expression: "has(object.spec.priorityClassName) ? object.spec.priorityClassName : ''"
    - name: creating
      expression: "oldObject == null"
    - name: broken
      expression: "object.spec.noSuchField.size()"
  validations:
    - expression: "!variables.creating || !(variables.priority in ['forbidden', 'also-forbidden'])"
      message: forbidden priority class
    - expression: "variables.creating ? true : variables.oldPodSpec.containers.size() > 0"
      message: an old pod without containers
    - expression: "variables.priority != 'broken' || variables.broken > 0"
      message: reaches the broken variable
    - expression: >-
        object.spec.containers.filter(c, c.name != '').map(c, c.name)
        .all(n, object.spec.containers.map(c, c.name).exists(m, m == n))
"""


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_lazy_variables_of_different_types(tmp_path: Path, engine: str) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    policy_set = load_policy_set(tmp_path, engine=make_engine(engine))  # loads: types kept apart, chains ok

    def decide(obj: dict[str, object], **kwargs: object) -> tuple[bool, str]:
        parsed, raw = parse_review(orjson.dumps(review(obj, **kwargs)))  # type: ignore[arg-type]
        decision = admit(policy_set, parsed.request, raw, phase="validate")
        return decision.allowed, decision.message

    # CREATE: oldPodSpec (a failing variable on CREATE) sits in an untaken branch; broken is never reached
    assert decide(pod()) == (True, "")
    assert decide(pod(priorityClassName="forbidden")) == (False, "variables: forbidden priority class")
    allowed, message = decide(pod(priorityClassName="broken"))
    assert allowed is False
    assert message.startswith("variables: policy fault: expression 'variables.priority != 'broken' || "
                              "variables.broken > 0': variables.broken:")
    assert decide(pod(), operation="UPDATE", old=pod()) == (True, "")


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_request_has_the_typed_defaults(tmp_path: Path, engine: str) -> None:
    (tmp_path / "p.yaml").write_text(POLICY.split("  variables:")[0] + """\
  validations:
    - expression: "request.subResource == '' && request.requestSubResource == '' && request.dryRun == false"
    - expression: "request.userInfo.groups.size() >= 0 && request.requestKind.kind == 'Pod'"
""")
    policy_set = load_policy_set(tmp_path, engine=make_engine(engine))
    body = review(pod())
    del body["request"]["requestKind"], body["request"]["dryRun"]
    del body["request"]["userInfo"]["groups"]
    parsed, raw = parse_review(orjson.dumps(body))
    decision = admit(policy_set, parsed.request, raw, phase="validate")
    assert (decision.allowed, decision.message) == (True, "")


def chain_policy(length: int) -> str:
    """A policy whose variables form chains of `length`: count0..countN (each the one before plus one) and
    bad0..badN (bad0 fails), so that an expression using the last of a chain reaches all of it."""
    lines = ["    - {name: count0, expression: 'object.spec.containers.size()'}",
             "    - {name: bad0, expression: 'object.spec.noSuchField.size()'}"]
    for i in range(1, length):
        lines.append(f"    - {{name: count{i}, expression: 'variables.count{i - 1} + 1'}}")
        lines.append(f"    - {{name: bad{i}, expression: 'variables.bad{i - 1} + 1'}}")
    last = length - 1
    return POLICY.split("  variables:")[0] + "  variables:\n" + "\n".join(lines) + f"""
  validations:
    - expression: "variables.count{last} == size(object.spec.containers) + {last}"
      message: the count chain is wrong
    - expression: "!has(object.metadata.labels) || variables.bad{last} > 0"
      message: reaches the broken chain
"""


@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("length", [3, 40])
def test_chains_of_variables_are_lazy_and_name_the_failed_variable(tmp_path: Path, engine: str,
                                                                   length: int) -> None:
    # 40 bindings nest deeper than cel-cpp's parser takes (32): cel-expr-python reaches those through calls
    (tmp_path / "p.yaml").write_text(chain_policy(length))
    policy_set = load_policy_set(tmp_path, engine=make_engine(engine))

    def decide(obj: dict[str, object]) -> tuple[bool, str]:
        parsed, raw = parse_review(orjson.dumps(review(obj)))
        decision = admit(policy_set, parsed.request, raw, phase="validate")
        return decision.allowed, decision.message

    assert decide(pod(images=("a:1", "b:2"))) == (True, "")  # the broken chain is never reached
    allowed, message = decide(pod(labels={"app": "web"}))
    chain = ": ".join(f"variables.bad{i}" for i in reversed(range(length - 3, length)))
    assert allowed is False
    assert f"'!has(object.metadata.labels) || variables.bad{length - 1} > 0': {chain}: " in message
    if length == 3:  # a long chain's message is cut short
        assert "noSuchField" in message.rsplit("variables.bad0: ", 1)[1]
    assert "count chain" not in message


HAS_POLICY = """\
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata: {name: presence}
spec:
  matchConstraints:
    resourceRules: [{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["pods"]}]
  variables:
    - name: broken
      expression: "object.spec.noSuchField"
  validations:
    - expression: "has(variables.broken)"
      message: a declared variable is present even when it fails
    - expression: "!('undeclared' in variables)"
      message: a name that is not declared is not in variables
"""


def test_a_declared_variable_is_present_and_an_undeclared_name_is_not(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(HAS_POLICY)
    policy_set = load_policy_set(tmp_path, engine=make_engine("builtin"))
    parsed, raw = parse_review(orjson.dumps(review(pod())))
    decision = admit(policy_set, parsed.request, raw, phase="validate")
    assert (decision.allowed, decision.message) == (True, "")
