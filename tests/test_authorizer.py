"""The authorizer library (`authorizer.group(...).resource(...).check(verb)`) on the builtin engine: checks are
SubjectAccessReviews through the server's own cluster connection (the real `kubernetes` client against the fake
API server of tests/fake_apiserver.py, which answers per user and group), cached briefly; a review that fails is
a decision with `errored()` true, never a hang; without a cluster a policy using it is refused at load."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import RunningServer, deployment, deployment_review, pod, review, running_server, wait_for
from tests.test_chart import enclosing_blocks, schema_errors, template, values
from webhook.admission import admit
from webhook.cel.environment import Program
from webhook.cel.kubernetes.access import AccessReviewer, review_timeout
from webhook.cel.kubernetes.authz import Attributes, Authorizer, Decision, Subject
from webhook.certs import ensure_self_signed
from webhook.cli import main
from webhook.cluster import api_client_for, review_access
from webhook.config import Settings
from webhook.errors import PolicyLoadError
from webhook.policies.cel import ENGINE_NAMES, CelEvaluationError, make_engine
from webhook.policies.cel_runtime import BuiltinEngine
from webhook.policies.compiled import PolicySet
from webhook.policies.loader import load_policy_set
from webhook.reviews import parse_review

# A ValidatingAdmissionPolicy as Kubernetes takes it: namespace bypass holders are skipped (matchConditions), the
# others need the right to scale the Deployment they write (`authorizer.requestResource`).
NATIVE = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: scale-rights
spec:
  matchConstraints:
    resourceRules:
      - {apiGroups: ["apps"], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["deployments"]}
  matchConditions:
    - name: no-bypass
      expression: >-
        !authorizer.group('example.com').resource('bypasses').namespace(request.namespace).check('use').allowed()
  validations:
    - expression: "authorizer.requestResource.subresource('scale').check('update').allowed()"
      message: you may not scale deployments in this namespace
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: scale-rights
spec:
  policyName: scale-rights
  validationActions: [Deny]
"""

POLICY = """\
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata:
  name: {name}
spec:
  matchConstraints:
    resourceRules:
      - {{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["pods"]}}
  matchConditions:
    - name: this-check
      expression: "object.metadata.?labels.check.orValue('') == '{name}'"
"""
# The project's own kind: the decision in a variable, its error and reason in the message.
CREATE = POLICY.format(name="create") + """\
  variables:
    - name: decision
      expression: "authorizer.group('').resource('pods').namespace(object.metadata.namespace).check('create')"
  validations:
    - expression: variables.decision.allowed()
      messageExpression: >-
        variables.decision.errored() ? 'cannot check: ' + variables.decision.error()
        : 'not allowed: ' + variables.decision.reason()
"""
SELECTORS = POLICY.format(name="selectors") + """\
  validations:
    - expression: >-
        authorizer.group('').resource('pods').namespace(object.metadata.namespace)
        .fieldSelector('spec.nodeName=' + object.spec.nodeName)
        .labelSelector('app in (' + object.metadata.labels.app + ')')
        .check('list').allowed()
      message: you may not list the Pods on that node
    - expression: "!authorizer.group('').resource('pods').fieldSelector('spec.nodeName').check('list').errored()"
      message: a selector the API server cannot parse is ignored, as Kubernetes ignores it, not an error
"""
IDENTITIES = POLICY.format(name="identities") + """\
  validations:
    - expression: >-
        authorizer.serviceAccount(object.metadata.namespace, object.spec.serviceAccountName)
        .group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()
      messageExpression: "'service account ' + object.spec.serviceAccountName + ' may not read secrets'"
    - expression: "authorizer.path('/metrics').check('get').allowed()"
      message: you may not read /metrics
"""


def write_policies(directory: Path, *texts: str) -> Path:
    directory.mkdir(exist_ok=True)
    for index, text in enumerate(texts):
        (directory / f"p{index}.yaml").write_text(text)
    return directory



@pytest.fixture
def served(api: FakeAPIServer, tmp_path: Path, cert_dir: Path) -> Iterator[RunningServer]:
    """A real server (in this process, over TLS) with the test policies and the fake API server as its cluster."""
    policies = write_policies(tmp_path / "policies", NATIVE, CREATE, SELECTORS, IDENTITIES)
    settings = Settings(policies=policies, kubeconfig=api.kubeconfig(tmp_path), watch_policies=False)
    with running_server(settings, cert_dir) as running:
        wait_for(lambda: running.client.get("/readyz").status_code == 200, what="policies loaded, cluster synced")
        yield running


def labelled_pod(check: str, *, namespace: str = "team-a", **labels: str) -> dict[str, Any]:
    made = pod("web", namespace=namespace, labels={"check": check, **labels})
    made["spec"].update(nodeName="node-1", serviceAccountName="builder")
    return made


def reviewer(api: FakeAPIServer, tmp_path: Path, *, timeout: float = 2.0, **options: Any) -> AccessReviewer:
    client = api_client_for(kubeconfig=api.kubeconfig(tmp_path))
    return AccessReviewer(functools.partial(review_access, client, timeout=timeout), **options)


class Clock:
    """Time for a cache's TTLs, moved by the test (no sleeping, no timing asserts)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- checks through a real server ----------------------------------------------------------------------------


def test_checks_are_answered_per_user_and_group(api: FakeAPIServer, served: RunningServer) -> None:
    api.grant("alice", verb="create", resource="pods", namespace="team-a")
    api.grant("group:platform", verb="create", resource="pods")
    allowed = served.validate(review(labelled_pod("create"), user="alice"))
    assert allowed["allowed"] is True
    asked = api.access_reviews()[-1]
    assert asked == {"user": "alice", "uid": "u-1", "groups": ["system:authenticated"], "resourceAttributes": {
        "verb": "create", "version": "*", "resource": "pods", "namespace": "team-a"}}

    denied = served.validate(review(labelled_pod("create"), user="bob"))
    assert denied["allowed"] is False
    assert denied["status"]["message"].endswith("not allowed: no rule grants it")
    grouped = served.validate(review(labelled_pod("create", namespace="team-b"), user="carol",
                                     groups=("system:authenticated", "platform")))
    assert grouped["allowed"] is True
    assert api.access_reviews()[-1]["groups"] == ["system:authenticated", "platform"]


def test_native_policy_checks_its_request_resource_and_skips_on_a_match_condition(
        api: FakeAPIServer, served: RunningServer) -> None:
    api.grant("alice", group="apps", resource="deployments", subresource="scale", verb="update", namespace="prod",
              name="web")
    api.grant("group:sre", group="example.com", resource="bypasses", verb="use", namespace="prod")
    body = deployment_review(deployment("web", namespace="prod"), user="alice")
    assert served.validate(body)["allowed"] is True
    assert api.access_reviews()[-1]["resourceAttributes"] == {
        "verb": "update", "group": "apps", "version": "*", "resource": "deployments", "subresource": "scale",
        "namespace": "prod", "name": "web"}

    denied = served.validate(deployment_review(deployment("web", namespace="prod"), user="bob"))
    assert denied["allowed"] is False
    assert "you may not scale deployments in this namespace" in denied["status"]["message"]
    bypassing = deployment_review(deployment("web", namespace="prod"), user="bob", groups=("sre",))
    assert served.validate(bypassing)["allowed"] is True  # the matchCondition is false: the policy is skipped


def test_selectors_are_part_of_the_check(api: FakeAPIServer, served: RunningServer) -> None:
    api.grant("alice", verb="list", resource="pods", fieldSelector="spec.nodeName=node-1",
              labelSelector="app in (web)")
    assert served.validate(review(labelled_pod("selectors", app="web"), user="alice"))["allowed"] is True
    first, second = api.access_reviews()[-2:]
    assert first["resourceAttributes"] == {
        "verb": "list", "version": "*", "resource": "pods", "namespace": "team-a",
        "fieldSelector": {"rawSelector": "spec.nodeName=node-1"}, "labelSelector": {"rawSelector": "app in (web)"}}
    assert second["resourceAttributes"]["fieldSelector"] == {"rawSelector": "spec.nodeName"}  # ignored: no error

    denied = served.validate(review(labelled_pod("selectors", app="db"), user="alice"))  # another label selector
    assert denied["allowed"] is False
    assert "you may not list the Pods on that node" in denied["status"]["message"]


def test_service_account_and_path_checks(api: FakeAPIServer, served: RunningServer) -> None:
    api.grant("system:serviceaccount:team-a:builder", verb="get", resource="secrets", namespace="team-a")
    api.grant("group:monitoring", verb="get", path="/metrics")
    body = review(labelled_pod("identities"), user="dave", groups=("monitoring",))
    assert served.validate(body)["allowed"] is True
    account, path = api.access_reviews()[-2:]
    assert account == {"user": "system:serviceaccount:team-a:builder",
                       "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
                       "resourceAttributes": {"verb": "get", "version": "*", "resource": "secrets",
                                              "namespace": "team-a"}}
    assert path == {"user": "dave", "uid": "u-1", "groups": ["monitoring"],
                    "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}
    denied = served.validate(review(labelled_pod("identities"), user="erin"))
    assert "you may not read /metrics" in denied["status"]["message"]


def test_answers_are_reused_within_a_request_and_cached_across_requests(api: FakeAPIServer,
                                                                         served: RunningServer) -> None:
    api.grant("alice", verb="create", resource="pods")
    for _ in range(3):
        assert served.validate(review(labelled_pod("create"), user="alice"))["allowed"] is True
    assert len(api.access_reviews()) == 1
    served.validate(review(labelled_pod("create"), user="alice", groups=("system:authenticated", "other")))
    served.validate(review(labelled_pod("create", namespace="team-b"), user="alice"))
    assert len(api.access_reviews()) == 3  # other groups, another namespace: other checks


def test_an_unreachable_api_server_is_an_errored_decision_and_checks_resume(api: FakeAPIServer,
                                                                              served: RunningServer) -> None:
    api.grant("alice", verb="create", resource="pods")
    api.go_down()
    denied = served.validate(review(labelled_pod("create"), user="alice"))
    assert denied["allowed"] is False
    message = denied["status"]["message"]
    assert "cannot check: SubjectAccessReview failed: cannot reach the API server: " in message
    assert "Connection refused" in message
    api.come_back()
    wait_for(lambda: served.validate(review(labelled_pod("create"), user="alice"))["allowed"], timeout=30,
             what="checks answered again")


# --- the reviewer: cache, failures -----------------------------------------------------------------------------


def attributes(user: str = "alice", **fields: Any) -> Attributes:
    fields.setdefault("verb", "get")
    fields.setdefault("resource", "pods")
    return Attributes(Subject.of(user, groups=fields.pop("groups", ("dev",)), extra=fields.pop("extra", None)),
                      resource_request=True, version="*", **fields)


def test_cache_keys_on_every_attribute_and_expires_allowed_and_denied_answers(api: FakeAPIServer,
                                                                              tmp_path: Path) -> None:
    api.grant("alice", verb="get", resource="pods")
    clock = Clock()
    cached = reviewer(api, tmp_path, clock=clock)
    assert cached.decide(attributes()) == Decision(True, "granted by rule 0 (alice)")
    assert cached.decide(attributes()).allowed
    assert len(api.access_reviews()) == 1
    variants = [attributes("bob"), attributes(groups=("ops",)), attributes(extra={"scopes": ["a"]}),
                attributes(verb="list"), attributes(resource="secrets"), attributes(name="web"),
                attributes(namespace="team-a"), attributes(subresource="log"),
                attributes(field_selector="spec.nodeName=n"), attributes(label_selector="app=web")]
    for variant in variants:
        cached.decide(variant)
        cached.decide(variant)
    assert len(api.access_reviews()) == 1 + len(variants)
    assert api.access_reviews()[3]["extra"] == {"scopes": ["a"]}

    clock.now += 5.5  # past the denied answers' 5 s, not the allowed one's 10 s
    cached.decide(attributes())
    cached.decide(attributes("bob"))
    assert len(api.access_reviews()) == 2 + len(variants)
    clock.now += 5
    cached.decide(attributes())
    assert len(api.access_reviews()) == 3 + len(variants)


def test_cache_is_bounded_and_leaves_large_checks_out(api: FakeAPIServer, tmp_path: Path) -> None:
    bounded = reviewer(api, tmp_path, max_entries=3)
    for name in ("a", "b", "c", "d"):
        bounded.decide(attributes(name=name))
    assert len(bounded) == 3
    bounded.decide(attributes(name="d"))
    bounded.decide(attributes(name="a"))  # the least recently used: pushed out
    assert len(api.access_reviews()) == 5
    huge = attributes(name="x" * 20_000)
    bounded.decide(huge)
    bounded.decide(huge)
    assert len(api.access_reviews()) == 7


def test_refused_and_hung_reviews_are_errored_decisions(api: FakeAPIServer, tmp_path: Path) -> None:
    clock = Clock()
    refused = reviewer(api, tmp_path, clock=clock)
    api.access_status = 403
    decision = refused.decide(attributes())
    assert decision.allowed is False
    assert decision.error == (
        'SubjectAccessReview failed: 403 Forbidden: subjectaccessreviews.authorization.k8s.io is forbidden: User '
        '"system:serviceaccount:webhook:webhook" cannot create resource "subjectaccessreviews" in API group '
        '"authorization.k8s.io" at the cluster scope')
    # For a second, checks fail at once with the same error; then they are asked again.
    assert refused.decide(attributes("bob")).error == decision.error + " (not retried for 1s after a failure)"
    assert len(api.access_reviews()) == 1
    api.access_status = None
    clock.now += 1
    assert refused.decide(attributes("bob")) == Decision(False, "no rule grants it")

    api.hold_access_reviews()
    hung = reviewer(api, tmp_path, timeout=0.2).decide(attributes("carol"))
    api.release_access_reviews()
    assert hung == Decision(False, error="SubjectAccessReview failed: no answer from the API server within 0.2s")


def test_evaluation_errors_are_decision_errors_but_selector_notes_are_not(api: FakeAPIServer,
                                                                          tmp_path: Path) -> None:
    api.grant("alice", verb="get", resource="pods")
    api.access_error = 'clusterrole.rbac.authorization.k8s.io "missing" not found'
    checks = reviewer(api, tmp_path)
    assert checks.decide(attributes()) == Decision(True, "granted by rule 0 (alice)", api.access_error)
    assert checks.decide(attributes(field_selector="=")).error == api.access_error


def test_review_timeout_stays_under_the_evaluation_deadline() -> None:
    assert review_timeout(1.0) == 0.5
    assert review_timeout(10.0) == 2.0
    assert review_timeout(0) == 2.0  # no deadline


# --- the library on the engine -------------------------------------------------------------------------------


def evaluate(source: str, authorize: Callable[[Attributes], Decision], *, expect: str = "bool") -> Any:
    engine = BuiltinEngine(authorizer=True)
    program = engine.compile(source, expect=expect)  # type: ignore[arg-type]
    authorizer = Authorizer(Subject.of("alice"), authorize)
    bindings = {"object": {}, "oldObject": None, "request": {}, "params": None, "namespaceObject": None,
                "variables": {}, "authorizer": authorizer,
                "authorizer.requestResource": authorizer.request_resource(
                    group="", resource="pods", subresource="", namespace="ns", name="web")}
    return program.evaluate(engine.activation(bindings))


@pytest.mark.parametrize(("source", "message"), [
    ("authorizer.path('').check('get').allowed()", "path must not be empty"),
    ("authorizer.path('  ').check('get').allowed()", "path must not be empty"),
    ("authorizer.group('apps').resource('').check('get').allowed()", "resource must not be empty"),
    ("authorizer.group('apps').resource('  ').check('get').allowed()", "resource must not be empty"),
    ("authorizer.serviceAccount('default', 'invalid@*name').group('').resource('pods').check('get').allowed()",
     "Invalid service account name"),
    ("authorizer.serviceAccount('not@a#valid!namespace', 'validname').group('').resource('pods').check('get')"
     ".allowed()", "Invalid service account namespace"),
], ids=["empty-path", "blank-path", "empty-resource", "blank-resource", "bad-account-name", "bad-account-namespace"])
def test_library_errors_are_kubernetes(source: str, message: str) -> None:
    with pytest.raises(CelEvaluationError, match=f"^{message}$"):
        evaluate(source, lambda asked: Decision(True))


def test_decision_accessors_and_opaque_types() -> None:
    failed = Decision(False, "", "webhook timed out")
    assert evaluate("authorizer.requestResource.check('get').error()", lambda asked: failed, expect="string") == \
        "webhook timed out"
    assert evaluate("authorizer.requestResource.check('get').errored()", lambda asked: failed) is True
    assert evaluate("authorizer.requestResource.check('get').reason()", lambda asked: Decision(True, "rbac"),
                    expect="string") == "rbac"
    assert evaluate("authorizer.requestResource.check('get').error() == ''", lambda asked: Decision(True)) is True
    assert evaluate("authorizer.group('').resource('pods').subresource('').name('').check('get').allowed()",
                    lambda asked: Decision(asked.subresource == "" and asked.name == "")) is True
    assert evaluate("type(authorizer.group('apps')) == kubernetes.authorization.GroupCheck",
                    lambda asked: Decision(True)) is True


def test_fast_paths_give_the_same_verdicts(api: FakeAPIServer, tmp_path: Path) -> None:
    directory = write_policies(tmp_path / "policies", NATIVE, CREATE, SELECTORS, IDENTITIES)
    fast = load_policy_set(directory, engine=make_engine("builtin", cluster=True))
    slow = load_policy_set(directory, engine=make_engine("builtin", cluster=True))
    slow.fast_validators.clear()
    for policy in slow.policies:
        for program in [*(v.program for v in policy.variables), *(p for _, p in policy.match_conditions),
                        *(v.program for v in policy.validations)]:
            inner = program.program
            assert isinstance(inner, Program)
            inner.fast = None
    api.grant("alice", verb="create", resource="pods", namespace="team-a")
    api.grant("alice", group="apps", resource="deployments", subresource="scale", verb="update")
    api.grant("group:sre", group="example.com", resource="bypasses", verb="use")
    api.grant("system:serviceaccount:team-a:builder", verb="get", resource="secrets")
    api.grant("alice", verb="list", resource="pods")
    checks = reviewer(api, tmp_path)
    bodies = [review(labelled_pod(check, app="web"), user=user, groups=groups)
              for check in ("create", "selectors", "identities") for user in ("alice", "bob")
              for groups in (("system:authenticated",), ("sre",))]
    bodies += [deployment_review(deployment("web", namespace=namespace), user=user, groups=groups)
               for namespace in ("prod", "dev") for user in ("alice", "bob") for groups in ((), ("sre",))]

    def verdicts(policy_set: PolicySet) -> list[tuple[bool, str]]:
        decided = []
        for body in bodies:
            parsed, raw = parse_review(orjson.dumps(body))
            decision = admit(policy_set, parsed.request, raw, phase="validate", authorizer=checks)
            decided.append((decision.allowed, decision.message))
        return decided

    assert verdicts(fast) == verdicts(slow)
    assert {allowed for allowed, _ in verdicts(fast)} == {True, False}


# --- refused at load -----------------------------------------------------------------------------------------


def test_without_a_cluster_a_policy_using_authorizer_is_refused_at_load(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_policies(tmp_path / "policies", CREATE)
    assert main(["lint", str(directory)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"{directory / 'p0.yaml'}:14:19: `authorizer` needs a connection to a cluster (its checks are "
        "SubjectAccessReviews): start `webhook serve` with --kubeconfig, --kube-context or --in-cluster (webhook "
        "lint and webhook test have none); see README, Kubernetes policies")
    assert load_policy_set(directory, engine=make_engine("builtin", cluster=True)).policies


@pytest.mark.parametrize("engine", [name for name in ENGINE_NAMES if name != "builtin"])
def test_other_engines_refuse_authorizer_with_a_cluster_too(tmp_path: Path, engine: str) -> None:
    directory = write_policies(tmp_path / "policies", CREATE)
    with pytest.raises(PolicyLoadError) as refused:
        load_policy_set(directory, engine=make_engine(engine, cluster=True))
    assert "`authorizer` is available on the builtin CEL engine only (--cel-engine builtin); this server uses " \
        f"{engine}" in str(refused.value)


def test_native_message_expressions_have_no_authorizer_and_strings_are_not_uses(tmp_path: Path) -> None:
    native = NATIVE.replace("      message: you may not scale deployments in this namespace",
                            "      messageExpression: \"authorizer.path('/x').check('get').reason()\"")
    with pytest.raises(PolicyLoadError) as refused:
        load_policy_set(write_policies(tmp_path / "native", native), engine=make_engine("builtin", cluster=True))
    assert str(refused.value) == (
        f"{tmp_path / 'native' / 'p0.yaml'}:15:26: `authorizer` is not available in a messageExpression: Kubernetes "
        "declares it for expression, matchConditions, variables and auditAnnotations only (the Policy kind allows "
        "it here)")
    own = CREATE.replace("'not allowed: ' + variables.decision.reason()", "authorizer.path('/x').check('get').reason()")
    assert load_policy_set(write_policies(tmp_path / "own", own), engine=make_engine("builtin", cluster=True))
    quoted = POLICY.format(name="quoted") + "  validations:\n    - expression: \"'authorizer' != ''\"\n"
    assert load_policy_set(write_policies(tmp_path / "quoted", quoted), engine=make_engine("builtin"))


def test_register_reads_the_rules_of_policies_that_use_authorizer(tmp_path: Path, cert_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_policies(tmp_path / "policies", NATIVE, CREATE)
    ca_file = ensure_self_signed(cert_dir, dns_names=[]).ca_cert
    assert main(["register", "--dry-run", "--policies", str(directory), "--ca-file", str(ca_file)]) == 0
    assert "ValidatingWebhookConfiguration" in capsys.readouterr().out


# --- the chart -----------------------------------------------------------------------------------------------


def test_chart_grants_create_on_subject_access_reviews_only_and_needs_the_cluster_connection() -> None:
    rbac = template("rbac.yaml")
    rule = rbac[rbac.index('resources: ["subjectaccessreviews"]'):]
    assert rule.splitlines()[1].strip() == 'verbs: ["create"]'
    assert rbac.count("subjectaccessreviews") == 1
    assert enclosing_blocks(rbac, '"subjectaccessreviews"')[-1] == "if .Values.cluster.authorizer"
    asked = copy.deepcopy(values())
    asked["cluster"]["authorizer"] = True
    assert schema_errors(asked) == []
    asked["cluster"]["enabled"] = False  # no connection: no --in-cluster, so no authorizer
    assert schema_errors(asked) != []
