"""The Helm chart in charts/webhook, checked without helm: Chart.yaml, values against values.schema.json, every
`.Values` reference, `include`/`define` pairs, block balance, and the settings that matter in the templates."""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "webhook"
TEMPLATES = CHART / "templates"
HELPERS = TEMPLATES / "_helpers.tpl"

VALUES_REFERENCE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
INCLUDE = re.compile(r"\b(?:include|template)\s+\"([^\"]+)\"")
DEFINE = re.compile(r"\{\{-?\s*define\s+\"([^\"]+)\"")
COMMENT = re.compile(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", re.DOTALL)
ACTION = re.compile(r"\{\{-?\s*(if|range|with|define|block|else|end)\b(.*?)-?\}\}", re.DOTALL)
OPENERS = {"if", "range", "with", "define", "block"}


def template_files() -> list[Path]:
    return sorted(path for path in TEMPLATES.rglob("*") if path.is_file())


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def schema() -> dict[str, Any]:
    loaded = json.loads((CHART / "values.schema.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def schema_errors(candidate: dict[str, Any]) -> list[str]:
    return [error.message for error in jsonschema.Draft7Validator(schema()).iter_errors(candidate)]


@functools.cache
def command_flags(command: str) -> frozenset[str]:
    """The long options `webhook COMMAND --help` lists."""
    result = subprocess.run([sys.executable, "-m", "webhook", command, "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    return frozenset(re.findall(r"--[a-z][a-z-]*", result.stdout))


def serve_flags() -> frozenset[str]:
    return command_flags("serve")


def without_comments(text: str) -> str:
    return COMMENT.sub("", text)


def enclosing_blocks(text: str, needle: str) -> list[str]:
    """The openers (`if ...`, `range ...`, ...) of the blocks around the first occurrence of `needle`."""
    text = without_comments(text)
    position = text.index(needle)
    stack: list[str] = []
    for match in ACTION.finditer(text[:position]):
        keyword, rest = match.group(1), " ".join(match.group(2).split())
        if keyword in OPENERS:
            stack.append(f"{keyword} {rest}")
        elif keyword == "end":
            stack.pop()
    return stack


def container_args(text: str) -> list[str]:
    """The lines of the first `args:` list in a template (the server container's)."""
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip() == "args:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block: list[str] = []
    for line in lines[start + 1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith(("-", "#", "{{")) and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(stripped)
    return block


# Chart.yaml, values and schema

def test_chart_yaml_has_the_required_fields() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "webhook" == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"
    assert isinstance(chart["appVersion"], str)  # quoted, so that 0.10 never becomes the float 0.1
    assert chart["kubeVersion"] == ">=1.26.0-0"
    assert chart.get("type", "application") == "application"


def test_schema_is_draft_07_and_closed() -> None:
    loaded = schema()
    jsonschema.Draft7Validator.check_schema(loaded)
    assert loaded["$schema"] == "http://json-schema.org/draft-07/schema#"
    # Every object the chart defines (one with `properties`) rejects unknown keys, at any depth; free-form
    # maps (annotations, resources, affinity, ...) have no `properties` and stay open.
    defined: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                defined.append(where)
                assert node.get("additionalProperties") is False, f"{where or '(root)'} accepts unknown keys"
            for key, child in node.items():
                if key not in {"if", "then", "else"}:  # conditions narrow a defined object, they define none
                    walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{where}/{index}")

    walk(loaded, "")
    assert len(defined) > 20
    assert {f"/properties/{name}" for name in ("image", "server", "policies", "events", "state", "certificates",
                                               "cluster", "registration", "webhooks", "metrics", "networkPolicy")} \
        <= set(defined)
    # Every key of values.yaml is described by the schema.
    assert set(values()) <= set(loaded["properties"])


def test_values_yaml_is_valid_against_the_schema() -> None:
    assert schema_errors(values()) == []


@pytest.mark.parametrize(("path", "key"), [
    ((), "replicasCount"),
    ((), "certificate"),
    (("image",), "tags"),
    (("webhooks",), "timeoutSecond"),
    (("state", "persistence"), "enable"),
])
def test_a_misspelled_key_fails_schema_validation(path: tuple[str, ...], key: str) -> None:
    candidate = copy.deepcopy(values())
    target = candidate
    for part in path:
        target = target[part]
    target[key] = 1
    errors = schema_errors(candidate)
    assert any(f"'{key}' was unexpected" in error for error in errors), errors


@pytest.mark.parametrize(("path", "value"), [
    (("certificates", "mode"), "selfSigned"),
    (("registration", "mode"), "manual"),
    (("webhooks", "timeoutSeconds"), 31),
    (("server", "logLevel"), "verbose"),
    (("policies", "files"), {"nested/dir.yaml": "x"}),
])
def test_the_schema_rejects_bad_values(path: tuple[str, ...], value: object) -> None:
    candidate = copy.deepcopy(values())
    target = candidate
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert schema_errors(candidate) != []


def test_existing_secret_mode_needs_the_secret_and_the_ca_bundle() -> None:
    candidate = copy.deepcopy(values())
    candidate["certificates"]["mode"] = "existingSecret"
    assert schema_errors(candidate) != []
    candidate["certificates"]["existingSecret"] = "my-tls"
    candidate["certificates"]["caBundle"] = "LS0tLS1CRUdJTi..."
    assert schema_errors(candidate) == []


def test_defaults() -> None:
    defaults = values()
    assert defaults["replicaCount"] == 2
    assert defaults["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    assert defaults["server"]["shutdownDelaySeconds"] == 5
    assert defaults["server"]["gracefulTimeoutSeconds"] == 20
    # The builtin CEL engine keeps nothing per review: the memory-bounding restart is off (a last resort).
    assert defaults["server"]["restartAboveMb"] == 0
    for wrong in (-1, 10, 63):
        candidate = copy.deepcopy(defaults)
        candidate["server"]["restartAboveMb"] = wrong
        assert schema_errors(candidate) != [], wrong
    assert defaults["webhooks"]["timeoutSeconds"] == 5
    assert defaults["registration"]["mode"] == "chart"
    assert defaults["certificates"]["mode"] in {"certManager", "helm", "existingSecret"}
    assert defaults["state"]["persistence"]["enabled"] is False
    assert defaults["cluster"]["authorizer"] is False
    covered = {(group, resource, operation) for rule in defaults["webhooks"]["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for operation in rule["operations"]}
    for group, resources in {"": ["pods"], "apps": ["deployments", "statefulsets", "daemonsets", "replicasets"],
                             "batch": ["jobs", "cronjobs"]}.items():
        for resource in resources:
            assert {(group, resource, "CREATE"), (group, resource, "UPDATE")} <= covered


# The templates as text

def test_every_values_reference_exists_in_values_yaml() -> None:
    defaults = values()
    missing, seen = [], 0
    for path in template_files():
        for match in VALUES_REFERENCE.finditer(path.read_text()):
            seen += 1
            node: Any = defaults
            for part in match.group(1).lstrip(".").split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{path.name}: .Values{match.group(1)}")
                    break
                node = node[part]
    assert seen > 50
    assert missing == []


def test_every_include_has_a_define_in_helpers() -> None:
    defined = set(DEFINE.findall(HELPERS.read_text()))
    assert {"webhook.name", "webhook.fullname", "webhook.labels", "webhook.selectorLabels",
            "webhook.serviceAccountName"} <= defined
    used: dict[str, set[str]] = {}
    for path in template_files():
        for name in INCLUDE.findall(path.read_text()):
            used.setdefault(name, set()).add(path.name)
        if path != HELPERS:
            assert DEFINE.findall(path.read_text()) == [], f"{path.name}: defines belong in _helpers.tpl"
    assert used
    undefined = {name: sorted(files) for name, files in used.items() if name not in defined}
    assert undefined == {}


@pytest.mark.parametrize("path", template_files(), ids=lambda path: path.name)
def test_blocks_are_balanced(path: Path) -> None:
    depth = 0
    for match in ACTION.finditer(without_comments(path.read_text())):
        keyword = match.group(1)
        if keyword in OPENERS:
            depth += 1
        elif keyword == "end":
            depth -= 1
            assert depth >= 0, f"{path.name}: `end` without a block at offset {match.start()}"
        elif keyword == "else":
            assert depth > 0, f"{path.name}: `else` outside a block at offset {match.start()}"
    assert depth == 0, f"{path.name}: {depth} block(s) never closed"


def test_the_templates_that_must_be_there() -> None:
    names = {path.name for path in template_files()}
    assert {"_helpers.tpl", "NOTES.txt", "deployment.yaml", "service.yaml", "serviceaccount.yaml", "rbac.yaml",
            "pdb.yaml", "configmap-policies.yaml", "secret-subscribers.yaml", "certificates.yaml",
            "webhook-configurations.yaml", "servicemonitor.yaml", "networkpolicy.yaml"} <= names
    assert (CHART / "README.md").is_file()


def test_the_deployment_is_hardened_and_probed() -> None:
    text = template("deployment.yaml")
    for expected in ("readOnlyRootFilesystem: true", "runAsNonRoot: true", "runAsUser: 65532", "fsGroup: 65532",
                     "allowPrivilegeEscalation: false", 'drop: ["ALL"]', "type: RuntimeDefault",
                     "path: /healthz", "path: /readyz", "startupProbe:", "livenessProbe:", "readinessProbe:",
                     "scheme: HTTPS", "containerPort: 8443", "fieldPath: metadata.name", "name: WEBHOOK_SERVER_NAME",
                     "mountPath: /tmp", "mountPath: /var/lib/webhook", "topology.kubernetes.io/zone",
                     "kubernetes.io/hostname", "podAntiAffinity:", "checksum/policies:", "checksum/subscribers:",
                     "volumeClaimTemplates:", "terminationGracePeriodSeconds:"):
        assert expected in text, expected
    assert text.count("scheme: HTTPS") == 3


def test_the_grace_period_outlasts_the_shutdown_delay_and_the_graceful_timeout() -> None:
    match = re.search(r"terminationGracePeriodSeconds: \{\{ add \.Values\.server\.shutdownDelaySeconds "
                      r"\.Values\.server\.gracefulTimeoutSeconds (\d+) \}\}", template("deployment.yaml"))
    assert match is not None
    assert int(match.group(1)) > 0


def test_the_state_volume_is_an_empty_dir_unless_persistence_is_enabled() -> None:
    text = template("deployment.yaml")
    assert enclosing_blocks(text, "emptyDir: {}")[:1] == ["if not $persistent"]
    assert enclosing_blocks(text, "volumeClaimTemplates:") == ["if $persistent"]
    assert "$persistent := .Values.state.persistence.enabled" in text


def test_deployment_args_are_flags_of_webhook_serve() -> None:
    args = container_args(template("deployment.yaml"))
    assert args[0] == "- serve"
    used = {match for line in args for match in re.findall(r"^- (--[a-z][a-z-]*)", line)}
    assert {"--host", "--port", "--policies", "--tls-cert-file", "--tls-key-file", "--state-dir", "--server-name",
            "--workers", "--shutdown-delay-seconds", "--graceful-timeout-seconds"} <= used
    assert sorted(used - serve_flags()) == []


def test_registration_job_args_are_flags_of_webhook_register() -> None:
    args = container_args(template("registration-job.yaml"))
    assert args[0] == "- register"
    used = {match for line in args for match in re.findall(r"^- (--[a-z][a-z-]*)", line)}
    assert {"--policies", "--ca-file", "--service-name", "--service-namespace", "--name"} <= used
    assert sorted(used - command_flags("register")) == []


def test_webhook_configurations() -> None:
    text = template("webhook-configurations.yaml")
    for expected in ("kind: {{ ternary \"ValidatingWebhookConfiguration\" \"MutatingWebhookConfiguration\"",
                     "NoneOnDryRun", "kube-system",
                     'admissionReviewVersions: ["v1", "v1beta1"]', "matchPolicy: Equivalent",
                     "reinvocationPolicy: IfNeeded", "operator: NotIn", "key: kubernetes.io/metadata.name",
                     "{{ $.Release.Namespace }}", "timeoutSeconds: {{ $webhooks.timeoutSeconds }}",
                     "name: {{ lower $failurePolicy }}.{{ $phase }}.", 'range $failurePolicy := list "Fail" "Ignore"',
                     "failurePolicy: {{ $failurePolicy }}", "path: /{{ $phase }}/{{ lower $failurePolicy }}"):
        assert expected in text, expected
    assert enclosing_blocks(text, "apiVersion: admissionregistration.k8s.io/v1")[0] == \
        'if eq .Values.registration.mode "chart"'
    # reinvocation only on the mutating configuration
    assert enclosing_blocks(text, "reinvocationPolicy: IfNeeded")[-1] == "if not $validating"
    assert "$webhooks := .Values.webhooks" in text


def test_certificate_modes() -> None:
    text = template("certificates.yaml")
    assert enclosing_blocks(text, "kind: Issuer")[-1] == 'if eq .Values.certificates.mode "certManager"'
    for expected in ("selfSigned: {}", "isCA: true", "algorithm: ECDSA", "size: 256", "ca:\n    secretName:"):
        assert expected in text, expected
    helpers = HELPERS.read_text()
    dns_names = helpers[helpers.index('define "webhook.dnsNames"'):]
    assert '"%s.%s.svc" $fullname $ns' in dns_names
    assert '"%s.%s.svc.%s" $fullname $ns .Values.clusterDomain' in dns_names
    assert "cert-manager.io/inject-ca-from" in helpers
    for function in ("lookup", "genCA", "genSignedCert"):
        assert re.search(rf"\b{function}\b", helpers), function
    assert 'required "certificates.caBundle is required' in helpers


def test_rbac_is_least_privilege() -> None:
    text = template("rbac.yaml")
    assert enclosing_blocks(text, '"namespaces", "pods"')[-1] == "if .Values.cluster.enabled"
    assert enclosing_blocks(text, '"subjectaccessreviews"')[-1] == "if .Values.cluster.authorizer"
    assert enclosing_blocks(text, '"validatingwebhookconfigurations", "mutatingwebhookconfigurations"') == \
        ['if eq .Values.registration.mode "job"']
    assert 'verbs: ["get", "list", "create", "update", "patch"]' in text
    for broad in ('"delete"', '"*"', "secrets"):
        assert broad not in text, broad


@pytest.mark.parametrize(("name", "condition"), [
    ("pdb.yaml", "if and .Values.podDisruptionBudget.enabled (gt (int .Values.replicaCount) 1)"),
    ("servicemonitor.yaml", "if .Values.metrics.serviceMonitor.enabled"),
    ("networkpolicy.yaml", "if .Values.networkPolicy.enabled"),
    ("configmap-policies.yaml", "if and .Values.policies.files (not .Values.policies.existingConfigMap)"),
    ("secret-subscribers.yaml", "if and .Values.events.subscribers (not .Values.events.existingSecret)"),
])
def test_optional_objects_are_guarded(name: str, condition: str) -> None:
    text = template(name)
    assert enclosing_blocks(text, "apiVersion:")[0] == condition


def test_service_and_service_monitor() -> None:
    service = template("service.yaml")
    assert "port: {{ .Values.service.port }}" in service
    assert "targetPort: 8443" in service
    assert values()["service"]["port"] == 443
    monitor = template("servicemonitor.yaml")
    assert "scheme: https" in monitor
    assert "path: /metrics" in monitor
