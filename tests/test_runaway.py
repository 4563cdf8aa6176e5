"""Runaway policies become faults under their failurePolicy within the deadline; the server keeps serving."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
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
        elif engine == "builtin":  # Kubernetes' per-expression cost limit stops it at once
            assert "runaway-cel: policy fault:" in message
            assert "operation cancelled: actual cost limit exceeded" in message
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


def _config_map(name: str, **fields: Any) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, **fields}
    return review(obj, kind=("", "v1", "ConfigMap"), resource=("", "v1", "configmaps"))


def test_builtin_engine_ends_every_runaway_expression_and_keeps_serving(
        server_processes: Callable[..., ServerProcess]) -> None:
    """Nesting 4 deep ends at the cost limit, map/filter over 10,000 items is linear, a library function over a
    5 MB argument ends at the deadline (which `||` cannot absorb); meanwhile /healthz and a simple review are
    answered, and SIGTERM is honoured in the middle of a runaway evaluation."""
    server = server_processes("--policies", str(DATA / "runaway_builtin"), "--cel-engine", "builtin",
                              "--evaluation-deadline-seconds", "1", "--max-body-bytes", str(8 * 1024 * 1024),
                              "--log-level", "warning")
    server.wait_ready()
    with server.client() as client:
        def validate(body: dict[str, Any]) -> dict[str, Any]:
            reply = client.post("/validate", json=body, timeout=30)
            assert reply.status_code == 200, reply.text
            response: dict[str, Any] = reply.json()["response"]
            return response

        deep = validate(_config_map("deep", items=list(range(1000))))
        assert deep["allowed"] is False
        assert "runaway-deep: policy fault:" in deep["status"]["message"]
        assert "operation cancelled: actual cost limit exceeded" in deep["status"]["message"]

        assert validate(_config_map("wide", items=list(range(10_000))))["allowed"] is True

        library = validate(_config_map("library", items=list(range(10_000)), data={"big": "a" * 5_000_000}))
        assert library["allowed"] is False
        assert "runaway-library: policy fault: did not finish within the evaluation deadline of 1s" in \
            library["status"]["message"]

        # While a runaway review is evaluated, /healthz and a simple review on other connections are answered.
        answers: dict[str, Any] = {}

        def other(name: str, call: Callable[[httpx.Client], Any]) -> None:
            with server.client() as own:
                started = time.monotonic()
                answers[name] = (call(own), time.monotonic() - started)

        runaway = threading.Thread(target=other, args=("runaway", lambda c: c.post(
            "/validate", json=_config_map("library", items=list(range(10_000)), data={"big": "a" * 5_000_000}),
            timeout=30).json()["response"]["allowed"]))
        runaway.start()
        time.sleep(0.3)
        health = threading.Thread(target=other, args=("health", lambda c: c.get("/healthz", timeout=30).status_code))
        simple = threading.Thread(target=other, args=("simple", lambda c: c.post(
            "/validate", json=review(pod(name="bystander")), timeout=30).json()["response"]["allowed"]))
        health.start()
        simple.start()
        for thread in (runaway, health, simple):
            thread.join(timeout=60)
        assert answers["runaway"][0] is False
        assert answers["health"][0] == 200
        assert answers["simple"][0] is True
        print(f"builtin: /healthz waited {answers['health'][1] * 1000:.0f} ms, a simple review "
              f"{answers['simple'][1] * 1000:.0f} ms, behind a runaway review")

    # SIGTERM in the middle of a runaway evaluation: the server drains and exits.
    def send_deep() -> None:
        with server.client() as own, contextlib.suppress(httpx.HTTPError):  # answered, or cut by the shutdown
            own.post("/validate", json=_config_map("deep", items=list(range(1000))), timeout=30)

    sender = threading.Thread(target=send_deep)
    sender.start()
    time.sleep(0.1)
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    sender.join(timeout=30)
