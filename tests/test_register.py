"""`webhook register`: configurations from the policies' rules, checked against the API models, applied
through the real `kubernetes` client to a small fake API server."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import TEST_POLICIES
from webhook.cli import main
from webhook.registration import schema_problems

POLICIES = Path(__file__).parent.parent / "policies"


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    assert main(["certs", "generate", "--dir", str(tmp_path / "certs"), "--service", "webhook",
                 "--namespace", "infra"]) == 0
    return tmp_path / "certs" / "ca.crt"


@pytest.fixture
def api_server() -> Iterator[FakeAPIServer]:
    server = FakeAPIServer()
    yield server
    server.close()


def _dry_run(capsys: pytest.CaptureFixture[str], *arguments: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["register", "--dry-run", *arguments]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def test_dry_run_by_service(capsys: pytest.CaptureFixture[str], ca_file: Path) -> None:
    validating, mutating = _dry_run(capsys, "--policies", str(TEST_POLICIES), "--ca-file", str(ca_file),
                                    "--service-name", "webhook", "--service-namespace", "infra",
                                    "--exempt-namespace", "monitoring")
    assert validating["kind"] == "ValidatingWebhookConfiguration"
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    for manifest in (validating, mutating):
        assert manifest["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert schema_problems(manifest) == []
        policies = {webhook["failurePolicy"]: webhook for webhook in manifest["webhooks"]}
        assert sorted(policies) == ["Fail", "Ignore"]  # the test policies have both
        for webhook in manifest["webhooks"]:
            assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+){2,}", webhook["name"])
            assert webhook["sideEffects"] == "NoneOnDryRun"
            assert webhook["admissionReviewVersions"] == ["v1", "v1beta1"]
            assert webhook["timeoutSeconds"] == 5
            assert webhook["namespaceSelector"]["matchExpressions"][-1] == {  # after a policy's own selector
                "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["kube-system", "infra", "monitoring"]}
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_file.read_bytes()
            service = webhook["clientConfig"]["service"]
            phase = "validate" if manifest is validating else "mutate"
            path = f"/{phase}/{webhook['failurePolicy'].lower()}"
            assert service == {"namespace": "infra", "name": "webhook", "path": path, "port": 443}
    assert all(webhook["reinvocationPolicy"] == "IfNeeded" for webhook in mutating["webhooks"])
    assert all("reinvocationPolicy" not in webhook for webhook in validating["webhooks"])


def test_rules_are_the_union_of_the_policies_rules(capsys: pytest.CaptureFixture[str], ca_file: Path) -> None:
    validating, mutating = _dry_run(capsys, "--policies", str(POLICIES), "--ca-file", str(ca_file),
                                    "--url", "https://webhook.example:8443")
    resources = {resource for webhook in validating["webhooks"] for rule in webhook["rules"]
                 for resource in rule["resources"]}
    assert {"pods", "deployments"} <= resources
    assert validating["webhooks"][0]["clientConfig"]["url"] == "https://webhook.example:8443/validate/fail"
    assert mutating["webhooks"][0]["clientConfig"]["url"] == "https://webhook.example:8443/mutate/fail"
    # by URL there is no Service namespace to exempt; kube-system always is
    assert validating["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system"]


def test_schema_check_catches_what_the_api_would_refuse() -> None:
    manifest = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "x"}, "webhooks": [{
                    "name": "a.b.c", "clientConfig": {"url": "https://h/validate"}, "sideEffects": "None",
                    "admissionReviewVersions": ["v1"], "timeoutSecond": 5}]}
    assert schema_problems(manifest) == ["ValidatingWebhookConfiguration.webhooks[0].timeoutSecond: "
                                         "not a field of the API"]
    del manifest["webhooks"][0]["name"]  # type: ignore[attr-defined]
    assert schema_problems(manifest)


def test_http_url_is_refused(capsys: pytest.CaptureFixture[str], ca_file: Path) -> None:
    assert main(["register", "--dry-run", "--ca-file", str(ca_file), "--url", "http://insecure:80"]) == 2
    assert "https://" in capsys.readouterr().err


def test_apply_creates_then_updates(api_server: FakeAPIServer, tmp_path: Path, ca_file: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = str(api_server.kubeconfig(tmp_path))
    arguments = ["register", "--kubeconfig", kubeconfig, "--policies", str(TEST_POLICIES), "--ca-file", str(ca_file),
                 "--service-namespace", "infra"]
    assert main(arguments) == 0
    assert capsys.readouterr().out.splitlines() == ["ValidatingWebhookConfiguration webhook.dev created",
                                                    "MutatingWebhookConfiguration webhook.dev created"]
    stored = api_server.objects[("validatingwebhookconfigurations", "webhook.dev")]
    names = [w["name"] for w in stored["webhooks"]]
    assert names[0] == "fail.validate.webhook.dev"  # the unscoped one first; scoped ones after (test_register_scope)
    assert "ignore.validate.webhook.dev" in names or any(name.startswith("ignore-") for name in names)
    assert stored["webhooks"][0]["clientConfig"]["service"]["path"] == "/validate/fail"

    assert main([*arguments, "--timeout-seconds", "3"]) == 0  # again: replaced with the stored resourceVersion
    assert capsys.readouterr().out.splitlines() == ["ValidatingWebhookConfiguration webhook.dev updated",
                                                    "MutatingWebhookConfiguration webhook.dev updated"]
    stored = api_server.objects[("mutatingwebhookconfigurations", "webhook.dev")]
    assert {w["timeoutSeconds"] for w in stored["webhooks"]} == {3}
    puts = [body for method, _, body in api_server.requests if method == "PUT"]
    assert len(puts) == 2
    assert all(body is not None and body["metadata"]["resourceVersion"] for body in puts)


def test_apply_reports_a_refusal(api_server: FakeAPIServer, tmp_path: Path, ca_file: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    api_server.refuse_with = 403
    assert main(["register", "--kubeconfig", str(api_server.kubeconfig(tmp_path)), "--policies", str(TEST_POLICIES),
                 "--ca-file", str(ca_file)]) == 1
    assert "the API server refused: 403" in capsys.readouterr().err
