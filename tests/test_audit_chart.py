"""The chart's parts of the background audit, checked without helm: guarded templates, narrow RBAC, the flags,
and the report CRDs' schema against the reports the audit writes."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.test_chart import (
    container_args,
    enclosing_blocks,
    schema_errors,
    serve_flags,
    template,
    values,
    without_comments,
)
from webhook.background_audit.reports import FORMATS, reports_for, result
from webhook.background_audit.scan import Finding, Subject
from webhook.background_audit.targets import PolicyInfo


def test_audit_is_on_in_the_chart_with_its_defaults() -> None:
    audit = values()["audit"]
    assert audit["enabled"] is True
    assert (audit["intervalSeconds"], audit["reportFormat"], audit["reports"], audit["crds"]["enabled"]) == (
        3600, "openreports", True, True)
    assert {"pods", "deployments", "jobs", "cronjobs"} <= {name for rule in audit["resources"]
                                                           for name in rule["resources"]}


@pytest.mark.parametrize(("path", "value"), [
    (("audit", "reportFormat"), "kyverno"),
    (("audit", "intervalSeconds"), 0),
    (("audit", "crds", "enable"), True),
    (("audit", "resources"), [{"apiGroups": [""], "resources": ["*"]}]),
])
def test_the_schema_rejects_bad_audit_values(path: tuple[str, ...], value: object) -> None:
    candidate = copy.deepcopy(values())
    target = candidate
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert schema_errors(candidate) != []


def test_the_audit_objects_are_guarded() -> None:
    assert enclosing_blocks(template("audit-rbac.yaml"), "apiVersion:")[0] == \
        "if and .Values.audit.enabled .Values.cluster.enabled"
    assert enclosing_blocks(template("audit-crds.yaml"), "apiVersion:")[0] == \
        "if and .Values.audit.enabled .Values.audit.crds.enabled .Values.audit.reports"
    deployment = template("deployment.yaml")
    assert enclosing_blocks(deployment, "- --audit\n") == ["if and .Values.audit.enabled .Values.cluster.enabled"]
    assert "fieldPath: metadata.namespace" in deployment  # POD_NAMESPACE: the Lease's namespace


def test_the_audit_flags_of_the_chart_are_flags_of_webhook_serve() -> None:
    used = {match for line in container_args(template("deployment.yaml"))
            for match in re.findall(r"^- (--audit[a-z-]*)", line)}
    assert used == {"--audit", "--audit-interval-seconds", "--audit-report-format", "--audit-page-size", "--audit-qps",
                    "--audit-objects-per-second"}
    assert "--no-audit-reports" in serve_flags()
    assert used <= serve_flags()


def test_the_audit_rbac_lists_the_audited_kinds_writes_only_its_reports_and_its_lease() -> None:
    text = template("audit-rbac.yaml")
    verbs = re.findall(r"verbs: (\[.*\])", text)
    assert verbs == ['["list", "watch"]', '["get", "list", "create", "update", "delete"]',
                     '["get", "create", "update"]']
    assert enclosing_blocks(text, '"delete"')[-1] == "if .Values.audit.reports"
    assert 'resources: {{ toJson $plurals }}' in text
    assert '(list "reports" "clusterreports") (list "policyreports" "clusterpolicyreports")' in text
    assert 'resources: ["leases"]' in text
    lease_role = text[text.index("kind: Role\n"):]
    assert "namespace: {{ .Release.Namespace }}" in lease_role.split("rules:")[0]
    for broad in ('"*"', "secrets", "patch"):
        assert broad not in text, broad


def crd_schema() -> dict[str, Any]:
    """The CRD template with its template actions taken out, parsed."""
    lines = [line for line in without_comments(template("audit-crds.yaml")).splitlines()
             if not line.strip().startswith("{{")]
    text = re.sub(r"\{\{[^}]*\}\}", "x", "\n".join(lines))
    [crd] = [doc for doc in yaml.safe_load_all(text) if doc and doc.get("kind") == "CustomResourceDefinition"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    [version] = crd["spec"]["versions"]
    found: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return found


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_reports_the_audit_writes_fit_the_crd_schema(name: str) -> None:
    subject = Subject("apps/v1", "Deployment", "deployments", "shop", "web", "uid-1")
    results = [result(Finding("no-latest", "binding", "validations[0]", "fail", "images must name a version"), subject,
                      info=PolicyInfo("high", "Rollout"), stamp=1.5),
               result(Finding("team", "", "validations", "pass"), subject, info=PolicyInfo(), stamp=2.0)]
    schema = crd_schema()
    for report in reports_for(FORMATS[name], "shop", results) + reports_for(FORMATS[name], "", results):
        jsonschema.Draft7Validator(schema).validate(report)
        assert set(report) <= set(schema["properties"])
        for item in report["results"]:
            assert set(item) <= set(schema["properties"]["results"]["items"]["properties"])
