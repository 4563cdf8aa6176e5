"""The background audit's pass, reports and command (webhook.background_audit) with the real `kubernetes` client
against a small real API server (tests/fake_apiserver.py): pages, API errors mid-pass, report formats,
`webhook audit`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import DATA
from webhook.background_audit.api import KubeApi
from webhook.background_audit.reports import FORMATS, MAX_RESULTS, ReportWriter, reports_for
from webhook.background_audit.scan import Auditor, AuditPass, ListedNamespaces
from webhook.background_audit.targets import plan
from webhook.cli import main
from webhook.cluster import api_client_for
from webhook.policies.cel import make_engine
from webhook.policies.loader import load_policy_set

AUDIT_POLICIES = DATA / "audit"
ROOT = Path(__file__).resolve().parent.parent
REPORTS = ("openreports.io/v1alpha1", "reports")
CLUSTER_REPORTS = ("openreports.io/v1alpha1", "clusterreports")


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def pod(name: str, namespace: str = "shop", *, team: str | None = "a", image: str = "nginx:1.27",
        requests: bool = True, host_network: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if requests:
        container["resources"] = {"requests": {"cpu": "100m"}}
    spec: dict[str, Any] = {"containers": [container]}
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"name": name, "namespace": namespace, **({"labels": {"team": team}} if team else {})},
            "spec": spec}


def deployment(name: str, namespace: str = "shop", *, replicas: int = 2, team: str | None = "a") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, **({"labels": {"team": team}} if team else {})},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}}


def populate(api: FakeAPIServer) -> None:
    """A compliant and a violating object of three kinds (Pods, Deployments, Namespaces)."""
    api.put("namespaces", namespace("shop", owner="team-a"))
    api.put("namespaces", namespace("lab"))  # no owner label
    api.put("namespaces", namespace("kube-system", owner="platform"))
    api.put("pods", pod("good"))
    api.put("pods", pod("bad", team=None, image="nginx:latest", requests=False))
    api.put("pods", pod("dns", "kube-system", team=None, image="coredns:latest"))  # exempt, as in admission
    api.api_put("apps/v1", "deployments", deployment("web"))
    api.api_put("apps/v1", "deployments", deployment("batch", replicas=1, team=None))



@pytest.fixture
def kubeconfig(api: FakeAPIServer, tmp_path: Path) -> Path:
    return api.kubeconfig(tmp_path)


def run_pass(kubeconfig: Path, *, page_size: int = 500, policies: Path = AUDIT_POLICIES) -> tuple[AuditPass, KubeApi]:
    audit_plan = plan(load_policy_set(policies, engine=make_engine("builtin")))
    kube = KubeApi(api_client_for(kubeconfig=kubeconfig), qps=0, backoff_seconds=(0.01, 0.05))
    cluster = ListedNamespaces.listed(kube)
    return Auditor(kube, page_size=page_size).run(audit_plan, cluster=cluster), kube


def results_by_object(reports: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for report in reports:
        for result in report["results"]:
            reference = result["resources"][0]
            found.setdefault((reference["kind"], reference["name"]), []).append((result["policy"], result["result"]))
    return {key: sorted(value) for key, value in found.items()}


def test_plan_lists_the_named_resources_and_notes_what_it_leaves_out() -> None:
    audit_plan = plan(load_policy_set(AUDIT_POLICIES, engine=make_engine("builtin")))
    assert [(r.group, r.resource, r.kind, r.namespaced) for r in audit_plan.resources] == [
        ("", "namespaces", "Namespace", False), ("", "pods", "Pod", True), ("apps", "deployments", "Deployment", True)]
    assert sorted(policy.name for policy in audit_plan.policy_set.policies) == [
        "namespace-owner", "no-latest", "pod-needs-requests", "require-team-label", "two-replicas"]
    assert audit_plan.notes == (
        "Python policy only-alice is not audited (opt in with @validating(..., audit=True))",
        "policy no-scale-down matches no CREATE: not audited (the audit presents objects as CREATE)")
    assert audit_plan.info["require-team-label"].severity == "medium"
    assert audit_plan.info["require-team-label"].category == "Ownership"
    assert audit_plan.info["no-latest"].severity == "high"  # Kyverno's annotation is read too
    assert audit_plan.info["pod-needs-requests"].category == "Quotas"  # a Python policy's annotations=


def test_violating_and_compliant_objects_of_several_kinds_are_reported(api: FakeAPIServer, kubeconfig: Path) -> None:
    populate(api)
    audit_pass, kube = run_pass(kubeconfig)
    assert audit_pass.complete
    assert audit_pass.objects == Counter({"Namespace": 2, "Pod": 2, "Deployment": 2})  # kube-system skipped
    summary = ReportWriter(kube, FORMATS["openreports"]).write(
        audit_pass.judged.values(), info=plan(load_policy_set(AUDIT_POLICIES, engine=make_engine("builtin"))).info,
        stamp=lambda finding, subject: 1_700_000_000.5)
    assert (summary.created, summary.updated, summary.deleted) == (2, 0, 0)
    [report] = api.api_objects(*REPORTS)
    [cluster_report] = api.api_objects(*CLUSTER_REPORTS)
    assert report["metadata"]["namespace"] == "shop"
    assert report["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "webhook-audit"}
    assert report["source"] == "webhook"
    assert results_by_object([report]) == {
        ("Deployment", "batch"): [("require-team-label", "fail"), ("two-replicas", "warn")],
        ("Deployment", "web"): [("require-team-label", "pass"), ("two-replicas", "pass")],
        ("Pod", "bad"): [("no-latest", "fail"), ("pod-needs-requests", "fail"), ("require-team-label", "fail")],
        ("Pod", "good"): [("no-latest", "pass"), ("pod-needs-requests", "pass"), ("require-team-label", "pass")],
    }
    assert report["summary"] == {"pass": 5, "fail": 4, "warn": 1, "error": 0, "skip": 0}
    assert results_by_object([cluster_report]) == {("Namespace", "lab"): [("namespace-owner", "fail")],
                                                   ("Namespace", "shop"): [("namespace-owner", "pass")]}
    latest = next(r for r in report["results"] if r["policy"] == "no-latest" and r["result"] == "fail")
    assert latest == {
        "source": "webhook", "policy": "no-latest", "rule": "validations[0]", "result": "fail", "scored": True,
        "timestamp": {"seconds": 1_700_000_000, "nanos": 0}, "message": "images must name a version",
        "severity": "high", "properties": {"binding": "no-latest-everywhere"},
        "resources": [{"apiVersion": "v1", "kind": "Pod", "name": "bad", "namespace": "shop",
                       "uid": "uid-pods-shop-bad"}]}
    team = next(r for r in report["results"] if r["policy"] == "require-team-label" and r["result"] == "fail")
    assert (team["severity"], team["category"]) == ("medium", "Ownership")


def test_the_older_policyreport_format_is_selectable(api: FakeAPIServer, kubeconfig: Path) -> None:
    populate(api)
    audit_pass, kube = run_pass(kubeconfig)
    ReportWriter(kube, FORMATS["policyreport"]).write(audit_pass.judged.values(), info={},
                                                      stamp=lambda finding, subject: 0.0)
    [report] = api.api_objects("wgpolicyk8s.io/v1alpha2", "policyreports")
    [cluster_report] = api.api_objects("wgpolicyk8s.io/v1alpha2", "clusterpolicyreports")
    assert (report["apiVersion"], report["kind"], cluster_report["kind"]) == (
        "wgpolicyk8s.io/v1alpha2", "PolicyReport", "ClusterPolicyReport")
    assert "source" not in report  # v1alpha2 has it per result only
    assert {result["source"] for result in report["results"]} == {"webhook"}
    assert api.api_objects(*REPORTS) == []


def test_stale_results_go_and_unchanged_reports_are_not_written_again(api: FakeAPIServer, kubeconfig: Path) -> None:
    populate(api)
    api.put("pods", pod("elsewhere", "lab"))
    writer = ReportWriter(KubeApi(api_client_for(kubeconfig=kubeconfig), qps=0), FORMATS["openreports"])

    def write() -> tuple[int, int, int, int]:
        audit_pass, _ = run_pass(kubeconfig)
        summary = writer.write(audit_pass.judged.values(), info={}, stamp=lambda finding, subject: 100.0)
        return summary.created, summary.updated, summary.unchanged, summary.deleted

    assert write() == (3, 0, 0, 0)
    assert write() == (0, 0, 3, 0)  # nothing changed: no write at all
    api.put("pods", pod("bad"))  # fixed
    api.delete("pods", "elsewhere", "lab")  # deleted: its namespace's report goes
    api.api_delete("apps/v1", "deployments", "batch", "shop")
    assert write() == (0, 1, 1, 1)
    [report] = api.api_objects(*REPORTS)
    assert results_by_object([report]) == {
        ("Deployment", "web"): [("require-team-label", "pass"), ("two-replicas", "pass")],
        ("Pod", "bad"): [("no-latest", "pass"), ("pod-needs-requests", "pass"), ("require-team-label", "pass")],
        ("Pod", "good"): [("no-latest", "pass"), ("pod-needs-requests", "pass"), ("require-team-label", "pass")]}


def test_pages_are_bounded_and_an_api_error_mid_pass_is_resumed_on_the_same_page(api: FakeAPIServer,
                                                                                 kubeconfig: Path) -> None:
    api.put("namespaces", namespace("shop", owner="a"))
    for index in range(25):
        api.put("pods", pod(f"p{index:02}", image="nginx:latest" if index % 2 else "nginx:1.27"))
    clean, _ = run_pass(kubeconfig, page_size=10)
    api.inject_failures("/api/v1/pods?limit=10&continue=", count=2, status=503)  # the 2nd page, twice
    resumed, _ = run_pass(kubeconfig, page_size=10)
    assert resumed.complete
    assert resumed.objects["Pod"] == 25
    assert {uid: judged.findings for uid, judged in resumed.judged.items()} == \
        {uid: judged.findings for uid, judged in clean.judged.items()}
    lists = [path for method, path, _ in api.requests if method == "GET" and path.startswith("/api/v1/pods?")]
    assert all("limit=10" in path for path in lists)
    assert len(lists) == 3 * 2 + 2  # two passes of three pages, and the two failed attempts (retried)
    assert resumed.requests == clean.requests + 2
    counts = Counter(finding.result for judged in resumed.judged.values() for finding in judged.findings
                     if finding.policy == "no-latest")
    assert counts == Counter({"pass": 13, "fail": 12})  # each Pod once: nothing twice, nothing lost


def test_an_expired_continue_token_lists_the_resource_again(api: FakeAPIServer, kubeconfig: Path) -> None:
    for index in range(7):
        api.put("pods", pod(f"p{index}"))
    api.inject_failures("/api/v1/pods?limit=3&continue=", count=1, status=410)
    audit_pass, _ = run_pass(kubeconfig, page_size=3)
    assert audit_pass.complete
    assert audit_pass.objects["Pod"] == 7
    assert len(audit_pass.judged) == 7


def test_a_resource_that_keeps_failing_makes_the_pass_incomplete(api: FakeAPIServer, kubeconfig: Path) -> None:
    populate(api)
    api.inject_failures("/apis/apps/v1/deployments", count=100, status=500)
    audit_pass, _ = run_pass(kubeconfig)
    assert not audit_pass.complete
    assert audit_pass.errors == ["deployments: 500: an injected failure"]  # after its retries
    assert ("v1", "Pod") in audit_pass.listed
    assert ("apps/v1", "Deployment") not in audit_pass.listed
    assert audit_pass.objects["Pod"] == 2  # the other resources are still judged


def test_a_namespace_past_the_report_bounds_gets_several_reports() -> None:
    results = [{"policy": "p", "result": "pass", "resources": [{"name": f"o{index}"}]}
               for index in range(MAX_RESULTS + 5)]
    reports = reports_for(FORMATS["openreports"], "big", results)
    assert [report["metadata"]["name"] for report in reports] == ["webhook-audit", "webhook-audit-2"]
    assert [report["summary"]["pass"] for report in reports] == [MAX_RESULTS, 5]


# --- `webhook audit` as a command -------------------------------------------------------------------------------


def audit_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webhook", "audit", *arguments], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


def test_audit_command_prints_a_table_and_exits_1_on_violations(api: FakeAPIServer, kubeconfig: Path) -> None:
    populate(api)
    done = audit_command("--policies", str(AUDIT_POLICIES), "--kubeconfig", str(kubeconfig))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["POLICY", "RESULT", "KIND", "OBJECT", "MESSAGE"]
    assert [line.split()[:4] for line in lines[1:-1]] == [
        ["namespace-owner", "fail", "Namespace", "lab"],
        ["no-latest", "fail", "Pod", "shop/bad"],
        ["pod-needs-requests", "fail", "Pod", "shop/bad"],
        ["require-team-label", "fail", "Deployment", "shop/batch"],
        ["require-team-label", "fail", "Pod", "shop/bad"],
        ["two-replicas", "warn", "Deployment", "shop/batch"]]
    assert lines[1].endswith("namespaces need an owner label")
    assert lines[-1].startswith("audited 6 objects (Deployment 2, Namespace 2, Pod 2) with 5 policies: 5 fail, "
                                "1 warn, 0 error, 6 pass; ")
    assert "note: Python policy only-alice is not audited" in done.stderr
    assert api.api_objects(*REPORTS) == []  # reports only with --write-reports


def test_audit_command_json_and_reports_once_and_exit_0_when_compliant(api: FakeAPIServer, kubeconfig: Path) -> None:
    api.put("namespaces", namespace("shop", owner="a"))
    api.put("pods", pod("good"))
    api.api_put("apps/v1", "deployments", deployment("web"))
    done = audit_command("--policies", str(AUDIT_POLICIES), "--kubeconfig", str(kubeconfig), "--output", "json",
                         "--write-reports")
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert output["complete"] is True
    assert output["objects"] == {"Deployment": 1, "Namespace": 1, "Pod": 1}
    assert output["resources"] == ["namespaces", "pods", "deployments.apps"]
    assert output["summary"] == {"pass": 6, "fail": 0, "warn": 0, "error": 0}
    assert output["results"] == []
    assert len(output["notes"]) == 2
    assert output["apiRequests"] >= 4
    assert "reports: 2 created" in done.stderr
    assert [report["summary"]["pass"] for report in api.api_objects(*REPORTS)] == [5]
    api.put("pods", pod("bad", image="nginx:latest"))
    again = audit_command("--policies", str(AUDIT_POLICIES), "--kubeconfig", str(kubeconfig), "--output", "json")
    assert again.returncode == 1
    assert [(row["policy"], row["object"]["name"], row["rule"]) for row in json.loads(again.stdout)["results"]] == [
        ("no-latest", "bad", "validations[0]")]


def test_audit_command_says_when_the_api_refuses(api: FakeAPIServer, kubeconfig: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    api.refuse_with = 403
    assert main(["audit", "--policies", str(AUDIT_POLICIES), "--kubeconfig", str(kubeconfig)]) == 2
    assert "webhook audit: the API server refused: 403" in capsys.readouterr().err
    broken = Path(__file__).parent / "data" / "does-not-exist"
    assert main(["audit", "--policies", str(broken), "--kubeconfig", str(kubeconfig)]) == 2
    assert "policy directory does not exist" in capsys.readouterr().err


def test_audit_help_states_the_exit_status_and_the_request_it_presents() -> None:
    done = subprocess.run([sys.executable, "-m", "webhook", "audit", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    text = " ".join(done.stdout.split())
    assert "exit status: 0 no violation; 1 some violation" in text
    assert "operation CREATE, no old object, no user" in text
    assert "--write-reports" in text
