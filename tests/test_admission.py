"""Policy semantics through the real server, on both CEL engines."""

from __future__ import annotations

import base64
import json

import jsonpatch

from tests.helpers import TEST_POLICIES, RunningServer, deployment, deployment_review, pod, review


def test_pod_that_satisfies_every_policy_is_allowed(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="deny-ns", labels={"team": "a"})))
    assert response["allowed"] is True
    assert "status" not in response
    assert "patch" not in response


def test_missing_label_is_denied_with_the_policy_message(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="deny-ns", labels={})))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    assert response["status"]["message"] == "require-team-label: every Pod needs a team label"


def test_message_expression_and_reason_set_message_and_code(server: RunningServer) -> None:
    name = "a-very-long-pod-name-indeed"
    response = server.validate(review(pod(name, namespace="deny-ns", labels={"team": "a"})))
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert response["status"]["reason"] == "Invalid"
    assert response["status"]["message"] == f"short-names: name {name} is longer than 20 characters"


def test_validation_without_message_reports_the_failed_expression(server: RunningServer) -> None:
    response = server.validate(review(pod("xray", namespace="deny-ns", labels={"team": "a"})))
    assert response["status"]["message"] == "short-names: failed expression: !object.metadata.name.startsWith('x')"


def test_every_denying_policy_is_named_in_the_message(server: RunningServer) -> None:
    response = server.validate(review(pod("xray", namespace="deny-ns")))
    message = response["status"]["message"]
    assert "require-team-label: every Pod needs a team label" in message
    assert "short-names: failed expression" in message


def test_warn_action_allows_with_a_warning_built_from_variables(server: RunningServer) -> None:
    obj = pod(namespace="warn-ns", images=("nginx:latest", "redis:7", "busybox:latest"))
    response = server.validate(review(obj))
    assert response["allowed"] is True
    assert response["warnings"] == ["avoid-latest: images use :latest: nginx:latest, busybox:latest"]


def test_audit_action_and_audit_annotations(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="audit-ns", images=("a:1", "b:2"))))
    assert response["allowed"] is True
    annotations = response["auditAnnotations"]
    assert annotations["audit-images.containers"] == "2"
    assert "audit-images.never" not in annotations
    failures = json.loads(annotations["validation_failure"])
    assert failures == [{"policy": "audit-images", "message": "more than one container",
                         "validationActions": ["Audit"]}]


def test_single_container_passes_the_audit_policy_without_failure_record(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="audit-ns")))
    assert response["auditAnnotations"] == {"audit-images.containers": "1"}


def test_params_and_namespace_labels_from_the_policy_directory(server: RunningServer) -> None:
    denied = server.validate(deployment_review(deployment(namespace="prod-ns", replicas=1)))
    assert denied["allowed"] is False
    assert denied["status"]["message"] == "production-replicas: production Deployments need at least 2 replicas"
    assert server.validate(deployment_review(deployment(namespace="prod-ns", replicas=3)))["allowed"] is True
    assert server.validate(deployment_review(deployment(namespace="dev-ns", replicas=1)))["allowed"] is True


def test_match_conditions_skip_the_policy_when_false(server: RunningServer) -> None:
    assert server.validate(review(pod(namespace="cond-ns"), user="bob"))["allowed"] is False
    assert server.validate(review(pod(namespace="cond-ns"), user="admin"))["allowed"] is True


def test_subresource_rules_and_excludes_by_resource_name(server: RunningServer) -> None:
    def connect(sub_resource: str, name: str) -> dict:
        body = review(None, operation="CONNECT", namespace="exec-ns", name=name, sub_resource=sub_resource,
                      kind=("", "v1", "PodExecOptions"))
        body["request"]["object"] = {"kind": "PodExecOptions", "apiVersion": "v1", "command": ["sh"]}
        return server.validate(body)

    assert connect("exec", "web")["allowed"] is False
    assert connect("attach", "web")["allowed"] is False
    assert connect("attach", "debug-pod")["allowed"] is True
    assert connect("log", "web")["allowed"] is True
    assert server.validate(review(pod(namespace="exec-ns")))["allowed"] is True


def test_object_selector_matches_labels_of_any_kind(server: RunningServer) -> None:
    strict = {"check": "strict"}
    assert server.validate(review(pod(labels=strict)))["allowed"] is False
    assert server.validate(review(pod(labels=strict, annotations={"owner": "me"})))["allowed"] is True
    assert server.validate(review(pod(labels={"check": "lax"})))["allowed"] is True
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": strict}}
    body = review(config_map, namespace="default", kind=("", "v1", "ConfigMap"), resource=("", "v1", "configmaps"))
    assert server.validate(body)["status"]["message"].startswith("strict-objects:")


def test_runtime_error_under_fail_denies_and_names_the_policy(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="fault-fail")))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message.startswith("broken-fail: policy fault: expression 'object.spec.doesNotExist == 1':")
    assert "doesNotExist" in message[len("broken-fail: policy fault: expression"):]


def test_runtime_error_under_ignore_allows_with_a_warning(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="fault-ignore")))
    assert response["allowed"] is True
    assert len(response["warnings"]) == 1
    assert response["warnings"][0].startswith("broken-ignore: policy fault ignored (failurePolicy Ignore):")


def test_wrong_result_type_is_a_policy_fault(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="fault-type")))
    assert response["allowed"] is False
    assert "expression must evaluate to bool, but it evaluated to str" in response["status"]["message"]


def test_failed_variable_faults_only_the_expressions_that_use_it(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="fault-variable")))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "expression 'variables.missing == 1': variables.missing:" in message
    assert "variables.fine" not in message


def test_python_policy_denies_warns_and_annotates(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="py-ns", labels={"forbidden": "1"}), user="carol"))
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert response["status"]["message"] == "forbidden-label: the forbidden label is forbidden"
    assert response["warnings"] == ["forbidden-label: checked by Python for carol"]
    assert response["auditAnnotations"] == {"forbidden-label.checked": "yes"}
    assert server.validate(review(pod(namespace="py-ns")))["allowed"] is True


def test_python_policy_that_raises_is_a_fault(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="py-raise")))
    assert response["allowed"] is False
    # The policy's own file and line, never a traceback or the server's own frames.
    assert response["status"]["message"] == (
        f"python-raises: policy fault: raised RuntimeError: policy bug at {TEST_POLICIES}/python_policies.py:20")


def _apply(obj: dict, response: dict) -> dict:
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(obj, operations)


def test_mutations_return_a_patch_that_applies_cleanly(server: RunningServer) -> None:
    obj = pod(namespace="mutate-ns", images=("a:1", "b:2", "c:3"))
    response = server.mutate(review(obj))
    assert response["allowed"] is True
    patched = _apply(obj, response)
    assert patched["metadata"]["labels"] == {"webhook.dev/mutated": "true"}
    assert patched["metadata"]["annotations"] == {"containers": "3", "checked": "yes"}
    assert patched["spec"]["priorityClassName"] == "standard"
    assert "guarded" not in patched["metadata"]["labels"]
    assert response["warnings"][0].startswith("mutate-fault-ignore: policy fault ignored")


def test_mutation_condition_keeps_existing_values(server: RunningServer) -> None:
    obj = pod(namespace="mutate-ns", labels={"webhook.dev/mutated": "true"}, priorityClassName="high")
    patched = _apply(obj, server.mutate(review(obj)))
    assert patched["spec"]["priorityClassName"] == "high"
    assert patched["metadata"]["labels"] == {"webhook.dev/mutated": "true"}


def test_python_mutation_patch_applies(server: RunningServer) -> None:
    obj = pod(namespace="py-ns")
    patched = _apply(obj, server.mutate(review(obj)))
    assert patched["metadata"]["annotations"] == {"owner": "platform"}


def test_no_change_means_no_patch(server: RunningServer) -> None:
    response = server.mutate(review(pod(namespace="quiet-ns")))
    assert response == {"uid": response["uid"], "allowed": True}


def test_validate_never_returns_a_patch(server: RunningServer) -> None:
    response = server.validate(review(pod(namespace="mutate-ns")))
    assert response["allowed"] is True
    assert "patch" not in response
    assert "patchType" not in response


def test_v1beta1_review_is_answered_in_v1beta1(server: RunningServer) -> None:
    body = review(pod(namespace="deny-ns"), api_version="admission.k8s.io/v1beta1")
    data = server.post("/validate", body)
    assert data["apiVersion"] == "admission.k8s.io/v1beta1"
    assert data["response"]["allowed"] is False


def test_delete_request_has_null_object(server: RunningServer) -> None:
    response = server.validate(review(None, operation="DELETE", old=pod(namespace="deny-ns")))
    assert response["allowed"] is True


def test_failure_policy_paths_evaluate_only_their_policies(server: RunningServer) -> None:
    failing = review(pod(namespace="fault-fail"))  # broken-fail (failurePolicy Fail) matches
    assert server.post("/validate/fail", failing)["response"]["allowed"] is False
    assert server.post("/validate/ignore", failing)["response"]["allowed"] is True  # Ignore policies only
    ignoring = review(pod(namespace="fault-ignore"))  # broken-ignore (failurePolicy Ignore) matches
    assert "warnings" not in server.post("/validate/fail", ignoring)["response"]
    assert server.post("/validate/ignore", ignoring)["response"]["warnings"][0].startswith("broken-ignore:")
