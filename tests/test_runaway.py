"""Runaway policies become faults under their failurePolicy within the deadline; the server keeps serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import DATA, ServerProcess, pod, review
from webhook.policies.cel import ENGINE_NAMES

RUNAWAY = DATA / "runaway"


def _items_review(count: int) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big", "namespace": "default"},
           "items": list(range(count))}
    return review(obj, kind=("", "v1", "ConfigMap"), resource=("", "v1", "configmaps"))


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_runaway_policies_are_faults_and_others_are_served(server_processes: Callable[..., ServerProcess],
                                                           engine: str) -> None:
    server = server_processes("--policies", str(RUNAWAY), "--cel-engine", engine,
                              "--evaluation-deadline-seconds", "0.5", "--memory-limit-mb", "1024",
                              "--log-level", "warning")
    server.wait_ready()
    with server.client() as client:
        def validate(body: dict[str, Any]) -> dict[str, Any]:
            reply = client.post("/validate", json=body)
            assert reply.status_code == 200, reply.text
            response: dict[str, Any] = reply.json()["response"]
            return response

        for mode in ("loop", "sleep"):
            response = validate(review(pod(labels={"runaway": mode})))
            assert response["allowed"] is False, mode
            assert "runaway-python: policy fault: did not finish within the evaluation deadline of 0.5s" in \
                response["status"]["message"]
        response = validate(review(pod(labels={"runaway": "allocate"})))
        assert response["allowed"] is False
        assert "MemoryError" in response["status"]["message"]
        response = validate(review(pod(labels={"runaway": "hoard"})))
        assert response["allowed"] is False
        assert "MemoryError" in response["status"]["message"] or "deadline" in response["status"]["message"]
        response = validate(review(pod(labels={"runaway": "huge"})))
        assert response["allowed"] is False  # a 10 GB message is refused by the memory limit, not sent
        response = validate(review(pod(labels={"runaway": "ignored-loop"})))
        assert response["allowed"] is True  # failurePolicy Ignore
        assert any("runaway-ignored: policy fault ignored" in w for w in response["warnings"])

        response = validate(_items_review(400))  # 64 million iterations
        assert response["allowed"] is False
        message = response["status"]["message"]
        if engine == "cel-expr-python":  # the engine's own budget stops it at once
            assert "runaway-cel: policy fault:" in message
            assert "Iteration budget exceeded" in message
        else:
            assert "runaway-cel: policy fault: did not finish within the evaluation deadline of 0.5s" in message

        # A well-behaved request sent while a runaway one is being evaluated is still answered.
        answered: list[tuple[bool, float]] = []

        def bystander() -> None:
            with server.client() as other:
                started = time.monotonic()
                reply = other.post("/validate", json=review(pod(name="bystander")))
                answered.append((reply.json()["response"]["allowed"], time.monotonic() - started))

        with server.client() as runaway_client:
            thread = threading.Thread(target=bystander)
            runaway_request = threading.Thread(
                target=lambda: runaway_client.post("/validate", json=review(pod(labels={"runaway": "loop"}))))
            runaway_request.start()
            time.sleep(0.1)
            thread.start()
            runaway_request.join(timeout=30)
            thread.join(timeout=30)
        assert [allowed for allowed, _ in answered] == [True]
        print(f"{engine}: a bystander request waited {answered[0][1] * 1000:.0f} ms behind a runaway policy")
        assert validate(review(pod()))["allowed"] is True
