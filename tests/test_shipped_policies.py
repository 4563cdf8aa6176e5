"""The shipped policies/ library: its own `webhook test` cases on every engine, its shape, and a few
end-to-end requests through a real server to check that the families work together."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from tests.helpers import RunningServer, deployment, deployment_review, pod, review, running_server
from webhook.cli import main
from webhook.config import Settings
from webhook.policies.cel import ENGINE_NAMES, make_engine
from webhook.policies.loader import load_policy_set

SHIPPED = Path(__file__).parent.parent / "policies"
FAMILIES = ("placement", "quotas", "rollout")


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_every_shipped_test_case_passes(engine: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", str(SHIPPED), "--cel-engine", engine])
    out = capsys.readouterr().out
    assert code == 0, "\n".join(line for line in out.splitlines() if not line.startswith("PASS"))
    summary = re.match(r"(\d+) cases in (\d+) files: (\d+) passed, 0 failed", out.splitlines()[-1])
    assert summary is not None
    assert int(summary.group(1)) >= 300  # the library's own cases, not a handful


def test_each_family_has_six_documented_and_tested_policies() -> None:
    policy_set = load_policy_set(SHIPPED, engine=make_engine("cel-expr-python"))
    tested: set[str] = set()
    for path in SHIPPED.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "PolicyTest":
                tested.update(document["spec"].get("policies") or [])
    for family in FAMILIES:
        names = {p.name for p in policy_set.policies if f"/{family}/" in p.origin}
        assert len(names) >= 6, (family, sorted(names))
        assert sorted(names - tested) == [], f"{family}: policies without test cases"
    for path in [*SHIPPED.rglob("*.yaml"), *SHIPPED.rglob("*.py")]:
        if not path.name.endswith(".test.yaml") and "_resources" not in path.parts:
            first = path.read_text().lstrip().splitlines()[0]
            assert first.startswith(("#", '"""')), f"{path} does not start with what it enforces and why"


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def shipped(request: pytest.FixtureRequest, cert_dir: Path) -> Iterator[RunningServer]:
    with running_server(Settings(policies=SHIPPED, cel_engine=request.param, watch_policies=False),
                        cert_dir) as server:
        yield server


def apply(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in response:
        return obj
    patched: dict[str, Any] = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    return patched


def admitted(server: RunningServer, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mutate, then validate the mutated object, as the API server calls the two webhooks."""
    mutated = server.mutate(body)
    assert mutated["allowed"] is True, mutated
    body = json.loads(json.dumps(body))
    body["request"]["object"] = apply(body["request"]["object"], mutated)
    return body["request"]["object"], server.validate(body)


def test_a_plain_pod_is_defaulted_and_then_allowed(shipped: RunningServer) -> None:
    obj, verdict = admitted(shipped, review(pod(images=("registry.example.com/shop/web:1.4.2",))))
    assert verdict["allowed"] is True, verdict
    resources = obj["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"]  # the quota family's defaults satisfy its own requirements
    assert resources["limits"]["memory"]


def test_a_deployment_with_a_latest_image_is_denied_whole(shipped: RunningServer) -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:latest"
    _, verdict = admitted(shipped, deployment_review(obj))
    assert verdict["allowed"] is False
    assert "disallow-latest-tag" in verdict["status"]["message"]
    assert "nginx:latest" in verdict["status"]["message"]


def test_a_node_name_set_by_a_user_is_denied(shipped: RunningServer) -> None:
    _, verdict = admitted(shipped, review(pod(nodeName="node-1")))
    assert verdict["allowed"] is False
    assert verdict["status"]["message"].startswith("no-node-name:")
