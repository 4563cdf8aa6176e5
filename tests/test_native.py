"""Kubernetes' own policy kinds, loaded unchanged and decided as the API server decides, on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from tests.helpers import DATA, RunningServer, deployment, deployment_review, pod, review, running_server
from webhook.cli import main
from webhook.config import Settings
from webhook.errors import PolicyLoadError
from webhook.policies.cel import ENGINE_NAMES, make_engine
from webhook.policies.loader import load_policy_set

NATIVE = DATA / "native"


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def native(request: pytest.FixtureRequest, cert_dir: Path) -> Iterator[RunningServer]:
    settings = Settings(policies=NATIVE, cel_engine=request.param, watch_policies=False)
    with running_server(settings, cert_dir) as running:
        yield running


def _deployment(namespace: str, replicas: int) -> dict[str, Any]:
    return deployment_review(deployment(namespace=namespace, replicas=replicas))


def _configmap(name: str, labels: dict[str, str] | None = None, *, user: str = "alice") -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}
    if labels is not None:
        obj["metadata"]["labels"] = labels  # type: ignore[index]
    return review(obj, kind=("", "v1", "ConfigMap"), resource=("", "v1", "configmaps"), user=user)


def _patched(original: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    import base64
    import json

    assert response["patchType"] == "JSONPatch"
    patched: dict[str, Any] = jsonpatch.apply_patch(original, json.loads(base64.b64decode(response["patch"])))
    return patched


def test_binding_denies_with_kubernetes_wording_and_default_reason(native: RunningServer) -> None:
    response = native.validate(_deployment("test-ns", 6))
    assert response["allowed"] is False
    assert response["status"]["message"] == ("ValidatingAdmissionPolicy 'replica-limit.example.com' with binding "
                                             "'replica-limit-test' denied request: failed expression: "
                                             "object.spec.replicas <= 5")
    assert response["status"]["code"] == 422  # no reason given: Invalid
    assert response["status"]["reason"] == "Invalid"
    assert native.validate(_deployment("test-ns", 5))["allowed"] is True


def test_binding_match_resources_narrow_the_policy(native: RunningServer) -> None:
    assert native.validate(_deployment("other-ns", 50))["allowed"] is True  # neither binding matches


def test_warn_and_audit_actions(native: RunningServer) -> None:
    response = native.validate(_deployment("staging-ns", 6))
    assert response["allowed"] is True
    assert response["warnings"] == ["Validation failed for ValidatingAdmissionPolicy 'replica-limit.example.com' "
                                    "with binding 'replica-limit-staging': failed expression: "
                                    "object.spec.replicas <= 5"]
    failure = response["auditAnnotations"]["validation_failure"]
    assert '"binding":"replica-limit-staging"' in failure
    assert '"validationActions":["Audit","Warn"]' in failure


def test_unbound_policy_does_nothing_and_lint_says_so(native: RunningServer,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert native.validate(review(pod(namespace="default")))["allowed"] is True
    assert main(["lint", str(NATIVE)]) == 0
    out = capsys.readouterr().out
    assert "unbound.yaml:4:9: note: ValidatingAdmissionPolicy 'never-bound' has no binding" in out


def test_message_expression_reason_variables_and_audit_annotations(native: RunningServer) -> None:
    response = native.validate(_configmap("settings"))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == ("ValidatingAdmissionPolicy 'owner-label' with binding "
                                             "'owner-label-everywhere' denied request: configmap settings needs "
                                             "an owner label")
    response = native.validate(_configmap("settings", {"owner": "a-very-long-owner"}))
    assert response["status"]["message"].endswith("denied request: owner label too long")
    response = native.validate(_configmap("settings", {"owner": "ana"}))
    assert response["allowed"] is True
    assert response["auditAnnotations"] == {"owner-label.owner": "owned by ana"}


def test_match_conditions_skip_system_users(native: RunningServer) -> None:
    assert native.validate(_configmap("settings", user="system:serviceaccount:kube-system:x"))["allowed"] is True


def test_params_by_name_from_the_request_namespace(native: RunningServer) -> None:
    assert native.validate(_deployment("params-ns", 3))["allowed"] is True
    response = native.validate(_deployment("params-ns", 4))
    assert response["allowed"] is False
    assert response["status"]["message"].endswith("denied request: at most 3 replicas")


def test_missing_params_deny_or_allow_as_the_binding_says(native: RunningServer) -> None:
    response = native.validate(_deployment("no-params-ns", 1))
    assert response["allowed"] is False
    assert "no params found for policy binding with `Deny` parameterNotFoundAction" in response["status"]["message"]
    assert native.validate(_deployment("allow-ns", 100))["allowed"] is True


def test_params_selector_evaluates_once_per_matching_object(native: RunningServer) -> None:
    assert native.validate(review(pod(namespace="params-ns", images=("registry.k8s.io/pause:3.9",))))["allowed"]
    for image, rule in (("docker.io/library/nginx:1.27", "no-dockerhub"), ("quay.io/org/app:1", "no-quay")):
        response = native.validate(review(pod(namespace="params-ns", images=(image,))))
        assert response["allowed"] is False
        assert response["status"]["message"].endswith(f"({rule})")


def test_map_json_patch_with_escaped_key(native: RunningServer) -> None:
    obj = pod(annotations={"example.com/team": "payments"})
    response = native.mutate(review(obj))
    assert _patched(obj, response)["metadata"]["labels"] == {"example.com/team": "payments"}
    assert native.mutate(review(pod()))["allowed"] is True  # match condition false: no patch
    assert "patch" not in native.mutate(review(pod()))


def test_map_apply_configuration_merges_containers_by_name(native: RunningServer) -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"] = [
        {"name": "app", "image": "example/app:latest"}, {"name": "sidecar", "image": "example/proxy:1.2",
                                                         "imagePullPolicy": "IfNotPresent"}]
    patched = _patched(obj, native.mutate(deployment_review(obj)))
    assert patched["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "example/app:latest", "imagePullPolicy": "Always"},
        {"name": "sidecar", "image": "example/proxy:1.2", "imagePullPolicy": "IfNotPresent"}]


def test_map_reinvocation_sees_a_later_policys_change(native: RunningServer) -> None:
    obj = pod(labels={"default-team": "yes"})  # default-team (later) adds the annotation team-label reads
    patched = _patched(obj, native.mutate(review(obj)))
    assert patched["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert patched["metadata"]["labels"] == {"default-team": "yes", "example.com/team": "platform"}


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_binding_errors_are_reported_with_positions(tmp_path: Path, engine: str) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: admissionregistration.k8s.io/v1\n"
        "kind: ValidatingAdmissionPolicyBinding\n"
        "metadata: {name: both}\n"
        "spec:\n"
        "  policyName: x\n"
        "  validationActions: [Deny, Warn]\n"
        "---\n"
        "apiVersion: example.com/v1\n"
        "kind: Unused\n"
        "metadata: {name: stray}\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_set(tmp_path, engine=make_engine(engine))
    problems = [str(problem) for problem in caught.value.problems]
    assert any(p.startswith(f"{tmp_path}/bad.yaml:5:3:") and "Deny and Warn" in p for p in problems), problems
    assert any(p.startswith(f"{tmp_path}/bad.yaml:9:7: unknown kind example.com/v1/Unused") for p in problems)


def test_typed_object_compile_error_points_at_the_authors_column(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text(
        "apiVersion: admissionregistration.k8s.io/v1alpha1\n"
        "kind: MutatingAdmissionPolicy\n"
        "metadata: {name: broken}\n"
        "spec:\n"
        "  matchConstraints:\n"
        "    resourceRules: [{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}]\n"
        "  mutations:\n"
        "    - patchType: ApplyConfiguration\n"
        "      applyConfiguration:\n"
        "        expression: 'Object{metadata: Object.metadata{labels: )}}'\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_set(tmp_path, engine=make_engine("cel-expr-python"))
    (problem,) = caught.value.problems
    # `)` is column 42 of the expression as written (the rewrite quoted two field names before it)
    assert (problem.line, problem.column) == (10, 21 + 42), str(problem)
