"""The shipped policies/ directory, served for real on both engines."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from tests.helpers import RunningServer, deployment, deployment_review, pod, review, running_server
from webhook.config import Settings
from webhook.policies.cel import ENGINE_NAMES

SHIPPED = Path(__file__).parent.parent / "policies"
RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def shipped(request: pytest.FixtureRequest, cert_dir: Path) -> Iterator[RunningServer]:
    with running_server(Settings(policies=SHIPPED, cel_engine=request.param, watch_policies=False),
                        cert_dir) as server:
        yield server


def complete_pod(*images: str, **spec: Any) -> dict[str, Any]:
    obj = pod(images=images or ("nginx:1.27",), **spec)
    for container in obj["spec"]["containers"]:
        container["resources"] = json.loads(json.dumps(RESOURCES))
    return obj


def apply(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in response:
        return obj
    return jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))


@pytest.mark.parametrize("image", ["nginx", "nginx:latest", "registry.local:5000/team/app",
                                   "ghcr.io/org/app:latest"], ids=["no-tag", "latest", "port-no-tag", "ghcr-latest"])
def test_unpinned_images_are_denied(shipped: RunningServer, image: str) -> None:
    response = shipped.validate(review(complete_pod(image)))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        f"disallow-latest-tag: images must name a version (a tag other than latest, or a digest): {image}")


@pytest.mark.parametrize("image", ["nginx:1.27", "registry.local:5000/team/app:2.1",
                                   "nginx@sha256:" + "a" * 64], ids=["tag", "port-tag", "digest"])
def test_pinned_images_are_allowed(shipped: RunningServer, image: str) -> None:
    assert shipped.validate(review(complete_pod(image)))["allowed"] is True


def test_deployment_template_and_init_containers_are_checked(shipped: RunningServer) -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    response = shipped.validate(deployment_review(obj))
    assert response["status"]["message"].endswith(": busybox")


def test_cronjob_template_is_checked(shipped: RunningServer) -> None:
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "default"},
               "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                   "containers": [{"name": "c", "image": "alpine:latest"}]}}}}}}
    body = review(cronjob, kind=("batch", "v1", "CronJob"), resource=("batch", "v1", "cronjobs"))
    assert shipped.validate(body)["allowed"] is False


def test_node_name_is_denied_except_for_nodes(shipped: RunningServer) -> None:
    obj = complete_pod(nodeName="node-1")
    denied = shipped.validate(review(obj))
    assert denied["status"]["message"].startswith("no-node-name: spec.nodeName is set to node-1")
    assert shipped.validate(review(obj, user="system:node:node-1", groups=("system:nodes",)))["allowed"] is True


def test_pod_without_resources_is_defaulted_then_allowed(shipped: RunningServer) -> None:
    obj = pod(images=("nginx:1.27", "sidecar:2"))
    obj["spec"]["containers"][1]["resources"] = {"requests": {"cpu": "2"}}
    assert shipped.validate(review(obj))["allowed"] is False
    mutated = apply(obj, shipped.mutate(review(obj)))
    first, second = mutated["spec"]["containers"]
    assert first["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    assert second["resources"] == {"requests": {"cpu": "2", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    assert shipped.validate(review(mutated))["allowed"] is True


def test_complete_pod_is_not_patched(shipped: RunningServer) -> None:
    response = shipped.mutate(review(complete_pod()))
    assert "patch" not in response


def test_deployment_gets_min_ready_seconds(shipped: RunningServer) -> None:
    obj = deployment()
    assert apply(obj, shipped.mutate(deployment_review(obj)))["spec"]["minReadySeconds"] == 10
    obj["spec"]["minReadySeconds"] = 30
    assert "patch" not in shipped.mutate(deployment_review(obj))
