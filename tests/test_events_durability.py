"""Nothing lost: events survive SIGKILL mid-stream and SIGTERM, and are delivered after the next start."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from tests.helpers import TEST_POLICIES, ServerProcess, pod, review, wait_for
from tests.receivers import Receiver

Start = Callable[..., ServerProcess]


def _subscribers(path: Path, sink: str) -> Path:
    path.write_text(yaml.safe_dump({"subscribers": [{
        "name": "audit", "sink": sink, "filters": [{"prefix": {"type": "dev.webhook.admission."}}],
        "retry": {"maxAttempts": 100, "initialDelaySeconds": 0.1, "maxDelaySeconds": 0.3}}]}))
    return path


def _send_until(server: ServerProcess, answered: list[str], stop: threading.Event) -> None:
    """Send reviews until told to stop or the server dies; remember the uids that got an answer."""
    with server.client() as client:
        index = 0
        while not stop.is_set():
            body = review(pod(name=f"p{index}", namespace="deny-ns"))
            index += 1
            try:
                reply = client.post("/validate", json=body)
            except httpx.TransportError:
                return
            if reply.status_code == 200:
                answered.append(body["request"]["uid"])


def test_sigkill_mid_stream_then_restart_delivers_every_answered_decision(server_processes: Start,
                                                                           tmp_path: Path) -> None:
    receiver = Receiver(lambda n: (503, {}, 0.0))  # down at first: events pile up in the outbox
    try:
        arguments = ("--policies", str(TEST_POLICIES), "--subscribers",
                     str(_subscribers(tmp_path / "subscribers.yaml", receiver.url)),
                     "--delivery-lease-seconds", "1", "--log-level", "warning")
        first = server_processes(*arguments)
        first.wait_ready()
        answered: list[str] = []
        stop = threading.Event()
        sender = threading.Thread(target=_send_until, args=(first, answered, stop))
        sender.start()
        wait_for(lambda: len(answered) >= 40, what="40 answered reviews")
        first.stop(signal.SIGKILL)  # while requests and deliveries are in flight
        stop.set()
        sender.join(timeout=30)
        assert len(answered) >= 40

        receiver.behaviour = lambda n: (200, {}, 0.0)
        second = server_processes(*arguments)
        second.wait_ready()
        expected = set(answered)

        def delivered_uids() -> set[str]:
            return {event.get_data()["uid"] for event in receiver.events("dev.webhook.admission.", acknowledged=True)}

        wait_for(lambda: expected <= delivered_uids(), timeout=60, what="every answered decision delivered")
        counts = Counter(event.get_data()["uid"]
                         for event in receiver.events("dev.webhook.admission.", acknowledged=True))
        duplicates = sum(count - 1 for count in counts.values() if count > 1)
        print(f"answered {len(expected)}, delivered {len(counts)} distinct events, {duplicates} duplicates")
        assert expected - delivered_uids() == set()
        # The deliverer is a process of its own; the server's /metrics shows its totals (kept in the outbox).
        with second.client() as client:
            metrics = client.get("/metrics").text
        delivered_metric = [line for line in metrics.splitlines()
                            if line.startswith('webhook_events_delivered_total{subscriber="audit"}')]
        assert delivered_metric
        assert float(delivered_metric[0].split()[-1]) >= len(expected)
        assert 'webhook_event_delivery_seconds_count{subscriber="audit"}' in metrics

        # A graceful stop leaves nothing in flight: what was not delivered is pending for the next start.
        receiver.behaviour = lambda n: (503, {}, 0.0)
        with second.client() as client:
            body = review(pod(name="after-term", namespace="deny-ns"))
            assert client.post("/validate", json=body).status_code == 200
        assert second.stop(signal.SIGTERM) == 0  # serve stops its deliverer, which drains, then exits 0
        receiver.behaviour = lambda n: (200, {}, 0.0)
        third = server_processes(*arguments)
        third.wait_ready()
        wait_for(lambda: body["request"]["uid"] in delivered_uids(), what="event sent after SIGTERM restart")
    finally:
        receiver.close()
