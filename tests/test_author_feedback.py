"""Issue 17: every mistake of a policy author pointed at its line (Python faults, params, lint)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import yaml

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import RunningServer, pod, review
from webhook.cli import main

RAISING_POLICY = '''\
from webhook import AdmissionRequest, validating


def _owner(labels):
    return labels["nope"]


@validating("owner-label", resources=["pods"], operations=["CREATE"])
def owner_label(request: AdmissionRequest):
    labels = request.object["metadata"].get("labels") or {}
    return None if _owner(labels) else None
'''

RAISING_TEST = '''\
apiVersion: webhook.dev/v1alpha1
kind: PolicyTest
metadata: {name: owner}
spec:
  cases:
  - name: a pod without labels
    object: {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: default}}
    expect: {allowed: true}
'''


def _run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _raising_directory(tmp_path: Path) -> Path:
    (tmp_path / "owner.py").write_text(RAISING_POLICY)
    (tmp_path / "owner.test.yaml").write_text(RAISING_TEST)
    return tmp_path


def test_python_fault_in_webhook_test_names_the_policy_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    directory = _raising_directory(tmp_path)
    code, out, _ = _run(capsys, "test", str(directory))
    assert code == 1
    # The innermost frame inside the policy file: the helper's line, not the decorated function's.
    assert f"owner-label: policy fault: raised KeyError: 'nope' at {directory}/owner.py:5" in out
    assert "Traceback" not in out


def test_webhook_test_verbose_prints_the_policy_side_traceback(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    directory = _raising_directory(tmp_path)
    code, out, _ = _run(capsys, "test", str(directory), "-v")
    assert code == 1
    assert "Traceback (most recent call last):" in out
    assert f'File "{directory}/owner.py", line 11, in owner_label' in out
    assert f'File "{directory}/owner.py", line 5, in _owner' in out
    assert "KeyError: 'nope'" in out
    assert "evaluation.py" not in out  # the server's own frames stay out


def test_python_fault_in_the_server_log_names_the_policy_line(fast_server: RunningServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="webhook.server"):
        response = fast_server.validate(review(pod(namespace="py-raise")))
    assert response["allowed"] is False
    assert "Traceback" not in response["status"]["message"]
    logged = [record.getMessage() for record in caplog.records if record.name == "webhook.server"]
    assert any("raised RuntimeError: policy bug at " in line and "python_policies.py:20" in line for line in logged)


REPLICAS_POLICY = '''\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: max-replicas
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
      - {apiGroups: ["apps"], apiVersions: ["v1"], operations: ["CREATE"], resources: ["deployments"]}
  validations:
    - expression: "object.spec.replicas <= int(params.data.maxReplicas)"
      messageExpression: "'at most ' + params.data.maxReplicas + ' replicas'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: max-replicas
spec:
  policyName: max-replicas
  validationActions: [Deny]
  paramRef: {name: replica-limits, namespace: default, parameterNotFoundAction: Deny}
'''

LIMITS = '''\
apiVersion: v1
kind: ConfigMap
metadata:
  name: replica-limits
  namespace: default
data: {{maxReplicas: "{limit}"}}
'''


def _lint(capsys: pytest.CaptureFixture[str], directory: Path, *extra: str) -> tuple[int, list[str]]:
    code, out, _ = _run(capsys, "lint", str(directory), *extra)
    return code, out.splitlines()


def test_duplicate_params_objects_are_a_lint_error_at_both_places(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy.yaml").write_text(REPLICAS_POLICY)
    (tmp_path / "a.yaml").write_text(LIMITS.format(limit=10))
    (tmp_path / "b.yaml").write_text("# the same object again\n" + LIMITS.format(limit=3))
    code, lines = _lint(capsys, tmp_path)
    assert code == 1
    assert lines == [
        f"{tmp_path}/a.yaml:4:9: ConfigMap default/replica-limits is defined again at {tmp_path}/b.yaml:5:9; "
        "params objects of one kind, namespace and name must be unique (rename or remove one)",
        f"{tmp_path}/b.yaml:5:9: ConfigMap default/replica-limits is defined again at {tmp_path}/a.yaml:4:9; "
        "params objects of one kind, namespace and name must be unique (rename or remove one)",
    ]


def test_a_policy_test_params_entry_replaces_the_directory_object(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy.yaml").write_text(REPLICAS_POLICY)
    (tmp_path / "limits.yaml").write_text(LIMITS.format(limit=10))
    (tmp_path / "replicas.test.yaml").write_text('''\
apiVersion: webhook.dev/v1alpha1
kind: PolicyTest
metadata: {name: replicas}
spec:
  params:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: replica-limits}, data: {maxReplicas: "3"}}
  cases:
  - name: fifteen replicas are over both limits
    object: {apiVersion: apps/v1, kind: Deployment, metadata: {name: web, namespace: default}, spec: {replicas: 15}}
    expect: {allowed: false}
''')
    code, out, _ = _run(capsys, "test", str(tmp_path), "--output", "json")
    assert code == 0
    message = json.loads(out)["cases"][0]["response"]["message"]
    assert "at most 3 replicas" in message
    assert "at most 10 replicas" not in message  # the directory's object is replaced, not evaluated too


def test_param_ref_name_with_no_object_warns_and_strict_refuses(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy.yaml").write_text(REPLICAS_POLICY.replace("name: replica-limits", "name: replica-limit"))
    (tmp_path / "limits.yaml").write_text(LIMITS.format(limit=10))
    warning = (f"{tmp_path}/policy.yaml:21:20: warning: paramRef.name 'replica-limit': no v1/ConfigMap of that "
               "name in namespace default in this directory; without a cluster the binding finds no params "
               "(parameterNotFoundAction Deny)")
    code, lines = _lint(capsys, tmp_path)
    assert code == 0
    assert lines == [warning, f"{tmp_path}: 1 policies, no problems, 1 warning"]
    code, lines = _lint(capsys, tmp_path, "--strict")
    assert code == 1
    assert lines == [warning]


def test_binding_of_a_missing_policy_is_a_warning_that_strict_refuses(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    policy = REPLICAS_POLICY.replace("policyName: max-replicas", "policyName: max-replica")
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "limits.yaml").write_text(LIMITS.format(limit=10))
    code, lines = _lint(capsys, tmp_path)
    assert code == 0
    assert (f"{tmp_path}/policy.yaml:19:15: warning: ValidatingAdmissionPolicy 'max-replica' is not in this "
            "directory: the binding does nothing") in lines
    code, _ = _lint(capsys, tmp_path, "--strict")
    assert code == 1


def test_python_resources_given_as_a_string_is_a_lint_error(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text('''\
from webhook import validating


@validating("pods-only", resources="pods")
def pods_only(request):
    return None
''')
    code, lines = _lint(capsys, tmp_path)
    assert code == 1
    assert lines == [f"{tmp_path}/p.py:4:1: importing the module raised TypeError: resources must be a list: "
                     "write resources=['pods'], not resources='pods'"]


def test_param_kind_typo_is_reported_at_the_param_kind_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy.yaml").write_text(REPLICAS_POLICY.replace("kind: ConfigMap}", "kind: ConfigMpa}"))
    (tmp_path / "limits.yaml").write_text(LIMITS.format(limit=10))
    code, lines = _lint(capsys, tmp_path)
    assert code == 1
    assert lines == [f"{tmp_path}/policy.yaml:6:37: paramKind v1/ConfigMpa: no object of this kind in the "
                     f"directory; did you mean v1/ConfigMap (as at {tmp_path}/limits.yaml:2:7)?"]


def test_policy_set_digest_hashes_contents_not_paths_or_times(tmp_path: Path) -> None:
    from webhook.policies.cel import make_engine
    from webhook.policies.loader import load_policy_set

    first, second = tmp_path / "replica-a", tmp_path / "replica-b"
    for directory in (first, second):
        directory.mkdir()
        (directory / "policy.yaml").write_text(REPLICAS_POLICY)
        (directory / "limits.yaml").write_text(LIMITS.format(limit=10))
    engine = make_engine("builtin")
    digest = load_policy_set(first, engine=engine).digest
    os.utime(second / "limits.yaml", (1, 1))  # another mount, another modification time: the same policies
    assert load_policy_set(second, engine=engine).digest == digest
    (second / "limits.yaml").write_text(LIMITS.format(limit=11))
    assert load_policy_set(second, engine=engine).digest != digest


def _two_context_kubeconfig(tmp_path: Path, url: str) -> Path:
    """`current-context` points at nothing listening; only the context named `fake` reaches the API server."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "down",
        "clusters": [{"name": "fake", "cluster": {"server": url}},
                     {"name": "down", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "admin", "user": {"token": "test-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}},
                     {"name": "down", "context": {"cluster": "down", "user": "admin"}}]}))
    return path


@pytest.mark.parametrize("flag", ["--kube-context", "--context"], ids=["kube-context", "context-alias"])
def test_register_and_audit_take_kube_context_as_serve_does(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           flag: str) -> None:
    api = FakeAPIServer()
    try:
        kubeconfig = str(_two_context_kubeconfig(tmp_path, api.url))
        code, out, err = _run(capsys, "register", "--delete", "--name", "nothing-here", "--kubeconfig", kubeconfig,
                              flag, "fake")
        assert code == 0, err
        assert "ValidatingWebhookConfiguration nothing-here not found" in out
        code, out, err = _run(capsys, "audit", "--policies", str(tmp_path / "none"), "--kubeconfig", kubeconfig,
                              flag, "fake")
        assert code == 2  # past the arguments, to the (missing) policy directory
        assert "policy directory does not exist" in err
    finally:
        api.close()
