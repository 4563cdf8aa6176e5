"""ValidatingAdmissionPolicy and MutatingAdmissionPolicy judged exactly as the API server judges them: verdicts,
codes and texts, each test written from the Kubernetes sources it names (k8s.io/apiserver, under
staging/src/k8s.io/apiserver/pkg/). The project's own Policy kind keeps its friendlier texts (last tests).

Each policy here selects ConfigMaps carrying a label named after it, so that one object can reach several.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import RunningServer, review, running_server
from webhook.admission import admit
from webhook.config import Settings
from webhook.policies.cel import ENGINE_NAMES, make_engine
from webhook.policies.loader import load_policy_set
from webhook.reviews import parse_review


def _select(label: str) -> str:
    return f"""  matchConstraints:
    resourceRules:
      - {{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["configmaps"]}}
    objectSelector:
      matchExpressions: [{{key: {label}, operator: Exists}}]
"""


def _vap(name: str, body: str, *, actions: str = "[Deny]", binding: str | None = None, label: str | None = None,
         binding_spec: str = "") -> str:
    return f"""---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
{_select(label or name)}{body}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {binding or name}}}
spec:
  policyName: {name}
  validationActions: {actions}
{binding_spec}"""


POLICIES = "".join([
    _vap("match-conditions", """  matchConditions:
    - {name: reads-missing, expression: "object.data.missing == 'x'"}
    - {name: only-run, expression: "object.metadata.name == 'run'"}
  validations:
    - {expression: "false", message: the validations ran}
"""),
    _vap("match-conditions-reversed", """  matchConditions:
    - {name: only-run, expression: "object.metadata.name == 'run'"}
    - {name: reads-missing, expression: "object.data.missing == 'x'"}
  validations:
    - {expression: "false", message: the validations ran}
"""),
    _vap("two-failed-conditions", """  matchConditions:
    - {name: a, expression: "object.data.a == 'x'"}
    - {name: b, expression: "object.data.b == 'x'"}
  validations:
    - {expression: "false", message: the validations ran}
"""),
    _vap("ignored-condition", """  failurePolicy: Ignore
  matchConditions:
    - {name: reads-missing, expression: "object.data.missing == 'x'"}
  validations:
    - {expression: "false", message: the validations ran}
"""),
    # The example: the name `p`, the binding `b`.
    _vap("p", """  validations:
    - expression: "object.data.required == 'yes'"
""", binding="b", label="required"),
    _vap("required-ignored", """  failurePolicy: Ignore
  validations:
    - expression: "object.data.required == 'yes'"
""", actions="[Deny, Audit]"),
    _vap("first-denial", """  validations:
    - {expression: "object.data.a == 'ok'", message: a is not ok, reason: Forbidden}
    - {expression: "object.data.b == 'ok'", message: b is not ok}
"""),
    _vap("warned", """  validations:
    - {expression: "object.data.a == 'ok'", message: a is not ok}
    - {expression: "object.data.b == 'ok'", message: b is not ok}
    - {expression: "object.data.c == 'ok'", message: c is not ok}
""", actions="[Warn, Audit]"),
    _vap("messages", """  validations:
    - {expression: "!('spaced' in object.data)", messageExpression: "object.data.spaced", message: static}
    - {expression: "!('lines' in object.data)", messageExpression: "object.data.lines", message: "  static lines  "}
    - {expression: "!('long' in object.data)", messageExpression: "object.data.long", message: too long}
    - {expression: "!('fails' in object.data)", messageExpression: "object.data.nothing", message: on error}
    - {expression: "!('blank' in object.data)", messageExpression: "object.data.blank"}
    - expression: |
        !('plain' in object.data)
"""),
    _vap("variables", """  variables:
    - {name: missing, expression: "object.data.missing"}
  validations:
    - expression: "variables.missing == 'x'"
"""),
    _vap("annotations", """  auditAnnotations:
    - {key: value, valueExpression: "'value' in object.data ? object.data.value : null"}
""", actions="[Audit]"),
    _vap("annotation-error", """  auditAnnotations:
    - {key: value, valueExpression: "object.data.missing"}
""", actions="[Audit]"),
    _vap("annotation-type", """  failurePolicy: Ignore
  auditAnnotations:
    - {key: generation, valueExpression: "object.metadata.generation"}
""", actions="[Audit]"),
    _vap("teams", """  paramKind: {apiVersion: v1, kind: ConfigMap}
  auditAnnotations:
    - {key: team, valueExpression: "params.data.team"}
""", actions="[Audit]", binding="teams-alpha", binding_spec="  paramRef: {name: team-alpha, namespace: default}\n"),
    """---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: teams-beta}
spec:
  policyName: teams
  validationActions: [Audit]
  paramRef: {name: team-beta, namespace: default}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: teams-alpha-again}
spec:
  policyName: teams
  validationActions: [Audit]
  paramRef: {name: team-alpha, namespace: default}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: team-alpha, namespace: default}
data: {team: alpha}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: team-beta, namespace: default}
data: {team: beta}
""",
    _vap("missing-params", """  paramKind: {apiVersion: v1, kind: ConfigMap}
  validations:
    - expression: "true"
""", actions="[Warn]", binding_spec="  paramRef: {name: absent, parameterNotFoundAction: Deny}\n"),
    """---
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata: {name: own-kind}
spec:
""" + _select("own-kind") + """  validations:
    - {expression: "object.data.a == 'ok'", message: a is not ok, reason: Forbidden}
    - {expression: "object.data.b == 'ok'", message: b is not ok}
    - {expression: "object.data.required == 'yes'"}
---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicy
metadata: {name: mutating}
spec:
""" + _select("mutating") + """  matchConditions:
    - {name: reads-missing, expression: "object.data.missing == 'x'"}
  mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/data/added", value: "yes"}]'
---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicyBinding
metadata: {name: mutating-binding}
spec:
  policyName: mutating
---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicy
metadata: {name: mutating-error}
spec:
""" + _select("mutating-error") + """  mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/data/added", value: object.data.missing}]'
---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicyBinding
metadata: {name: mutating-error}
spec:
  policyName: mutating-error
""",
])


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("exact")
    (directory / "policies.yaml").write_text(POLICIES)
    return directory


@pytest.fixture(scope="module")
def server(policies: Path, cert_dir: Path) -> Iterator[RunningServer]:
    """The default engine, whose error texts are cel-go's (`no such key: required`)."""
    with running_server(Settings(policies=policies, watch_policies=False), cert_dir) as running:
        yield running


def _configmap(*labels: str, name: str = "cm", **data: str) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": name, "namespace": "default", "labels": dict.fromkeys(labels, "")}, "data": data}
    return review(obj, kind=("", "v1", "ConfigMap"), resource=("", "v1", "configmaps"))


def _denied(response: dict[str, Any], code: int, reason: str) -> str:
    assert response["allowed"] is False
    assert (response["status"]["code"], response["status"]["reason"]) == (code, reason), response["status"]
    message: str = response["status"]["message"]
    return message


# --- matchConditions: webhook/matchconditions/matcher.go --------------------------------------------------------


@pytest.mark.parametrize("policy", ["match-conditions", "match-conditions-reversed"])
def test_a_false_match_condition_skips_the_policy_even_when_another_one_errored(server: RunningServer,
                                                                                 policy: str) -> None:
    """matcher.go Match: "If any condition false, skip calling webhook always", whichever errored before it."""
    response = server.validate(_configmap(policy, name="skip"))
    assert response["allowed"] is True
    assert "warnings" not in response
    assert "auditAnnotations" not in response


def test_an_errored_match_condition_with_none_false_goes_to_the_failure_policy(server: RunningServer) -> None:
    """matcher.go: "mix of true and errors with fail policy fail should fail request"; validator.go turns the error
    into a decision of no reason: dispatcher.go's Invalid, 422 (reasonToCode)."""
    message = _denied(server.validate(_configmap("match-conditions", name="run")), 422, "Invalid")
    assert message == ("ValidatingAdmissionPolicy 'match-conditions' with binding 'match-conditions' denied request: "
                       "expression 'object.data.missing == 'x'' resulted in error: no such key: missing")
    assert server.validate(_configmap("match-conditions", name="run", missing="y"))["allowed"] is True
    message = _denied(server.validate(_configmap("match-conditions", name="run", missing="x")), 422, "Invalid")
    assert message.endswith("denied request: the validations ran")


def test_several_errored_match_conditions_are_one_aggregate_error(server: RunningServer) -> None:
    """matcher.go: utilerrors.NewAggregate(errorList); its Error() is `[first, second]` (util/errors/errors.go)."""
    message = _denied(server.validate(_configmap("two-failed-conditions")), 422, "Invalid")
    assert message.endswith("denied request: [expression 'object.data.a == 'x'' resulted in error: no such key: a, "
                            "expression 'object.data.b == 'x'' resulted in error: no such key: b]")


def test_an_errored_match_condition_under_ignore_skips_silently(server: RunningServer) -> None:
    """matcher.go: "if fail policy ignore then skip call to webhook"."""
    response = server.validate(_configmap("ignored-condition"))
    assert response["allowed"] is True
    assert "warnings" not in response


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_the_match_condition_rule_holds_on_every_engine(policies: Path, engine: str) -> None:
    """matcher.go's rule on each engine (the error texts after `resulted in error: ` are each engine's own)."""
    policy_set = load_policy_set(policies, engine=make_engine(engine))
    for policy in ("match-conditions", "match-conditions-reversed"):
        for name, allowed in (("skip", True), ("run", False)):
            parsed, raw = parse_review(orjson.dumps(_configmap(policy, name=name)))
            decision = admit(policy_set, parsed.request, raw, phase="validate")
            assert decision.allowed is allowed, (policy, name, decision.message)
            if not allowed:
                assert decision.message.startswith(
                    f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: expression "
                    "'object.data.missing == 'x'' resulted in error: ")


def test_the_fast_path_agrees_with_the_match_condition_rule(policies: Path) -> None:
    """policies/cel_runtime.py link_validations answers "clean" only at a false condition or when every validation
    holds, and gives way at an error: the verdicts are those of the usual path."""
    fast = load_policy_set(policies, engine=make_engine("builtin"))
    slow = load_policy_set(policies, engine=make_engine("builtin"))
    slow.fast_validators.clear()
    linked = {policy.name for policy in fast.policies if id(policy) in fast.fast_validators}
    assert {"match-conditions", "match-conditions-reversed", "first-denial"} <= linked
    for labels, name, data in ((("match-conditions",), "skip", {}), (("match-conditions-reversed",), "skip", {}),
                               (("match-conditions",), "run", {}), (("match-conditions",), "run", {"missing": "x"}),
                               (("first-denial", "required"), "cm", {"a": "ok", "b": "ok", "required": "yes"})):
        parsed, raw = parse_review(orjson.dumps(_configmap(*labels, name=name, **data)))
        on_fast, on_slow = ((v.allowed, v.code, v.message) for v in
                            (admit(policy_set, parsed.request, raw, phase="validate") for policy_set in (fast, slow)))
        assert on_fast == on_slow, (labels, name, data)


# --- evaluation errors: plugin/cel/filter.go, policy/validating/validator.go and dispatcher.go ------------------


def test_an_evaluation_error_under_fail_is_kubernetes_wording_and_422(server: RunningServer) -> None:
    """filter.go: `expression '%v' resulted in error: %v`; validator.go: ActionDeny with no reason under Fail;
    dispatcher.go: `ValidatingAdmissionPolicy '%s' with binding '%s' denied request: %s`, reason Invalid, 422."""
    message = _denied(server.validate(_configmap("required")), 422, "Invalid")
    assert message == ("ValidatingAdmissionPolicy 'p' with binding 'b' denied request: expression "
                       "'object.data.required == 'yes'' resulted in error: no such key: required")
    assert server.validate(_configmap("required", required="yes"))["allowed"] is True


def test_an_evaluation_error_under_ignore_admits_without_a_trace(server: RunningServer) -> None:
    """validator.go policyDecisionActionForError: Ignore is ActionAdmit: no denial, no warning, no audit record."""
    response = server.validate(_configmap("required-ignored"))
    assert response["allowed"] is True
    assert "warnings" not in response
    assert "auditAnnotations" not in response


def test_a_failed_variable_is_reported_with_its_own_error(server: RunningServer) -> None:
    """Variables are lazy (cel/lazy): the expression that reads one fails with the variable's error itself."""
    message = _denied(server.validate(_configmap("variables")), 422, "Invalid")
    assert message.endswith("denied request: expression 'variables.missing == 'x'' resulted in error: "
                            "no such key: missing")


# --- the first denying decision: dispatcher.go deniedDecisions[0] -----------------------------------------------


def test_only_the_first_denying_validation_is_reported_with_its_code(server: RunningServer) -> None:
    """dispatcher.go: the message, reason and code (reasonToCode) of deniedDecisions[0] only."""
    message = _denied(server.validate(_configmap("first-denial", a="no", b="no")), 403, "Forbidden")
    assert message == "ValidatingAdmissionPolicy 'first-denial' with binding 'first-denial' denied request: a is not ok"
    message = _denied(server.validate(_configmap("first-denial", a="ok", b="no")), 422, "Invalid")
    assert message.endswith("denied request: b is not ok")  # no reason given: Invalid (validator.go)


def test_an_error_before_a_failure_is_the_first_decision(server: RunningServer) -> None:
    """validator.go: one decision per validation, in order, an error's (EvalError, ActionDeny) among the others."""
    message = _denied(server.validate(_configmap("first-denial", b="no")), 422, "Invalid")
    assert message.endswith("denied request: expression 'object.data.a == 'ok'' resulted in error: no such key: a")


def test_of_two_denying_policies_only_the_first_is_reported(server: RunningServer) -> None:
    """Bindings are decided in the order of the directory: `b` (of `p`) comes before `first-denial`."""
    message = _denied(server.validate(_configmap("first-denial", "required", a="no", b="no")), 422, "Invalid")
    assert message == ("ValidatingAdmissionPolicy 'p' with binding 'b' denied request: expression "
                       "'object.data.required == 'yes'' resulted in error: no such key: required")


# --- messages: validator.go, apis/cel/config.go ------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    ({"spaced": " \t spaced out \n "}, "spaced out"),  # strings.TrimSpace
    ({"lines": "two\nlines"}, "static lines"),  # a line break: `message`, trimmed too
    ({"lines": "a\rb"}, "a\rb"),  # only "\n" counts as a line break
    ({"long": "x" * 5120}, "x" * 5120),  # MaxEvaluatedMessageExpressionSizeBytes = 5 * 1024: at most that
    ({"long": "x" * 5121}, "too long"),
    ({"long": "é" * 2561}, "too long"),  # 5122 bytes: the limit counts bytes
    ({"fails": "x"}, "on error"),  # a messageExpression error: logged, `message` used
    ({"blank": "   "}, "failed expression: !('blank' in object.data)"),  # no message: the expression
    ({"plain": "x"}, "failed expression: !('plain' in object.data)"),  # the expression trimmed
], ids=["trimmed", "line-break", "carriage-return", "at-the-limit", "over-the-limit", "bytes", "error", "blank",
        "expression-trimmed"])
def test_the_message_falls_back_as_kubernetes_decides(server: RunningServer, data: dict[str, str],
                                                      expected: str) -> None:
    """validator.go: the messageExpression result trimmed; longer than MaxEvaluatedMessageExpressionSizeBytes or
    with "\\n": ""; then `message` trimmed; then `failed expression: <expression trimmed>`."""
    message = _denied(server.validate(_configmap("messages", **data)), 422, "Invalid")
    assert message == f"ValidatingAdmissionPolicy 'messages' with binding 'messages' denied request: {expected}"


# --- warnings and the audit record: dispatcher.go ----------------------------------------------------------------


def test_warn_and_audit_report_every_failure_in_kubernetes_format(server: RunningServer) -> None:
    """dispatcher.go: a warning `Validation failed for ValidatingAdmissionPolicy '%s' with binding '%s': %s` per
    denying decision, and per decision a ValidationFailureValue {message, policy, binding, expressionIndex,
    validationActions} under validation_failure (the API server adds the webhook's name to the key)."""
    response = server.validate(_configmap("warned", a="no", b="ok", c="no"))
    assert response["allowed"] is True
    prefix = "Validation failed for ValidatingAdmissionPolicy 'warned' with binding 'warned': "
    assert response["warnings"] == [f"{prefix}a is not ok", f"{prefix}c is not ok"]
    records = json.loads(response["auditAnnotations"]["validation_failure"])
    assert records == [
        {"message": "a is not ok", "policy": "warned", "binding": "warned", "expressionIndex": 0,
         "validationActions": ["Audit", "Warn"]},
        {"message": "c is not ok", "policy": "warned", "binding": "warned", "expressionIndex": 2,
         "validationActions": ["Audit", "Warn"]}]
    assert list(records[0]) == ["message", "policy", "binding", "expressionIndex", "validationActions"]


# --- audit annotations: validator.go and dispatcher.go ----------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("  padded \n", "padded"),  # strings.TrimSpace
    ("   ", None),  # empty once trimmed: AuditAnnotationActionExclude
    ("y" * 10241, "y" * 10240),  # maxAuditAnnotationValueLength = 10 * 1024
    (None, None),  # null: excluded
], ids=["trimmed", "blank", "cut", "null"])
def test_audit_annotation_values_are_trimmed_cut_and_left_out_when_empty(server: RunningServer, value: str | None,
                                                                          expected: str | None) -> None:
    response = server.validate(_configmap("annotations", **({} if value is None else {"value": value})))
    assert response["allowed"] is True
    assert response.get("auditAnnotations", {}).get("annotations.value") == expected


def test_audit_annotation_values_of_the_bindings_of_a_policy_are_joined(server: RunningServer) -> None:
    """dispatcher.go auditAnnotationCollector: distinct values of one key, over the policy's bindings, joined ", "
    (a binding giving the same value again adds nothing)."""
    response = server.validate(_configmap("teams"))
    assert response["auditAnnotations"] == {"teams.team": "alpha, beta"}


def test_an_audit_annotation_error_under_fail_denies_whatever_the_actions(server: RunningServer) -> None:
    """dispatcher.go: "When failurePolicy=fail, audit annotation errors result in deny" (the binding audits only)."""
    message = _denied(server.validate(_configmap("annotation-error")), 422, "Invalid")
    assert message == ("ValidatingAdmissionPolicy 'annotation-error' with binding 'annotation-error' denied request: "
                       "expression 'object.data.missing' resulted in error: no such key: missing")


def test_an_audit_annotation_of_another_type_denies_even_under_ignore(server: RunningServer) -> None:
    """validator.go: a value neither string nor null is AuditAnnotationActionError whatever the failurePolicy."""
    body = _configmap("annotation-type")
    body["request"]["object"]["metadata"]["generation"] = 3
    message = _denied(server.validate(body), 422, "Invalid")
    assert message.endswith("denied request: valueExpression 'object.metadata.generation' resulted in unsupported "
                            "return type: int. Return type must be either string or null.")


# --- configuration errors: dispatcher.go addConfigError -----------------------------------------------------------


def test_a_binding_without_its_params_denies_whatever_the_actions(server: RunningServer) -> None:
    """generic/policy_dispatcher.go CollectParams, and dispatcher.go addConfigError: `failed to configure binding:
    %w`, denied under Fail though the binding only warns."""
    message = _denied(server.validate(_configmap("missing-params")), 422, "Invalid")
    assert message == ("ValidatingAdmissionPolicy 'missing-params' with binding 'missing-params' denied request: "
                       "failed to configure binding: no params found for policy binding with `Deny` "
                       "parameterNotFoundAction")


# --- MutatingAdmissionPolicy: policy/mutating/dispatcher.go, generic/policy_dispatcher.go ------------------------


def test_a_mutating_policy_error_is_kubernetes_wording_with_403(server: RunningServer) -> None:
    """mutating/dispatcher.go: a matchConditions error is addConfigError(..., StatusReasonInvalid); generic/
    policy_dispatcher.go PolicyError: `policy '%s' with binding '%s' denied request: %s`, in admission.NewForbidden's
    status, whose code stays 403."""
    message = _denied(server.mutate(_configmap("mutating")), 403, "Invalid")
    assert message == ("policy 'mutating' with binding 'mutating-binding' denied request: expression "
                       "'object.data.missing == 'x'' resulted in error: no such key: missing")
    message = _denied(server.mutate(_configmap("mutating-error")), 403, "Invalid")
    assert message == ("policy 'mutating-error' with binding 'mutating-error' denied request: expression "
                       "'[JSONPatch{op: \"add\", path: \"/data/added\", value: object.data.missing}]' resulted in "
                       "error: no such key: missing")  # the expression as written, typed literal and all
    response = server.mutate(_configmap("mutating", missing="x"))
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"


# --- the Policy kind keeps its own texts ---------------------------------------------------------------------------


def test_the_policy_kind_still_reports_every_failure_and_fault(server: RunningServer) -> None:
    """The project's own kind, side by side with `first-denial` and `p` (README, Kubernetes policies)."""
    message = _denied(server.validate(_configmap("own-kind", a="no", b="no")), 403, "Forbidden")
    assert message == ("own-kind: a is not ok; own-kind: b is not ok; own-kind: policy fault: expression "
                       "'object.data.required == 'yes'': no such key: required")


def test_with_both_kinds_denying_every_own_denial_and_the_first_native_one_are_reported(server: RunningServer) -> None:
    """In policy order (the Policy kind's first here); the first denial gives the code."""
    message = _denied(server.validate(_configmap("first-denial", "required", "own-kind", a="no", b="ok",
                                                 required="yes")), 403, "Forbidden")
    assert message == ("own-kind: a is not ok; ValidatingAdmissionPolicy 'first-denial' with binding 'first-denial' "
                       "denied request: a is not ok")
