"""The event outbox is bounded in bytes (issue 15, finding 4): objects in events are capped per subscriber
(`maxObjectBytes`, `objectOmitted` says why), and the outbox's stored events by `max_outbox_bytes`.

Real servers over TLS, real subscribers on loopback, real SQLite files and spools; most of the byte cap's tests
run the recorder and the deliverer of webhook/events/service.py themselves (as a serving process and
`webhook deliver` do), with caps below the smallest that `webhook serve --outbox-max-mb` takes (1 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.helpers import TEST_POLICIES, RunningServer, ServerProcess, pod, review, running_server, wait_for
from tests.receivers import Receiver, healthy, refused_url
from webhook.cli import main
from webhook.config import Settings
from webhook.events.outbox import DeliveryRecord, Outbox
from webhook.events.service import AdmissionFacts, EventDeliverer, EventRecorder, EventSettings
from webhook.events.telemetry import OutboxCollector
from webhook.metrics import Metrics

ADMISSION = [{"prefix": {"type": "dev.webhook.admission."}}]
KEEP_RETRYING = {"maxAttempts": 100, "initialDelaySeconds": 0.05, "maxDelaySeconds": 0.2}
NEVER_SOON = {"maxAttempts": 50, "initialDelaySeconds": 60}
MiB = 1024 * 1024



def _subscribers_file(tmp_path: Path, subscribers: list[dict[str, Any]]) -> Path:
    path = tmp_path / "subscribers.yaml"  # written out through JSON: a shared value would become a YAML alias
    path.write_text(yaml.safe_dump({"subscribers": orjson.loads(orjson.dumps(subscribers))}))
    return path


@pytest.fixture
def events_server(tmp_path: Path, cert_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    """A real server over TLS with the given subscribers (stopped at the end of the test)."""
    stack: list[Any] = []

    def start(subscribers: list[dict[str, Any]]) -> RunningServer:
        context = running_server(Settings(policies=TEST_POLICIES, watch_policies=False,
                                          subscribers=_subscribers_file(tmp_path, subscribers),
                                          state_dir=tmp_path / "state"), cert_dir)
        server = context.__enter__()
        stack.append(context)
        return server

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def padded_pod(name: str, size: int) -> dict[str, Any]:
    """A Pod with an annotation of `size` bytes."""
    return pod(name=name, annotations={"padding": "x" * size})


def pending(tmp_path: Path) -> int:
    box = Outbox(tmp_path / "state" / "outbox.db")
    try:
        return sum(row.pending for row in box.status())
    finally:
        box.close()


def state_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


# --- the object in an event --------------------------------------------------------------------------------


def test_objects_past_the_default_limit_are_not_kept_for_a_subscriber_that_is_down(
        events_server: Callable[..., RunningServer], receivers: Callable[..., Receiver], tmp_path: Path) -> None:
    """Was the finding: with an `includeObject` subscriber down, every large review put its object in the
    outbox (20 reviews of 5.2 MB grew the state directory to 197 MB in about a second)."""
    receiver = receivers(lambda n: (503, {}, 0.0))
    server = events_server([{"name": "full", "sink": receiver.url, "filters": ADMISSION, "includeObject": True,
                             "retry": KEEP_RETRYING}])
    large = [padded_pod(f"large-{index}", int(1.5 * MiB)) for index in range(4)]
    for obj in [*large, pod(name="small")]:
        assert server.validate(review(obj))["allowed"] is True
    wait_for(lambda: pending(tmp_path) == 5, what="five events waiting in the outbox")
    assert state_bytes(tmp_path / "state") < MiB  # 6 MiB of objects before

    receiver.behaviour = healthy
    wait_for(lambda: len(receiver.events(acknowledged=True)) == 5, what="five events delivered")
    by_name = {event.get_data()["name"]: event.get_data() for event in receiver.events(acknowledged=True)}
    assert by_name["small"]["object"]["metadata"]["name"] == "small"
    assert "objectOmitted" not in by_name["small"]
    for obj in large:
        data = by_name[obj["metadata"]["name"]]
        assert "object" not in data
        size = len(orjson.dumps(obj))
        assert data["objectOmitted"] == f"the object is {size} bytes, larger than the 1048576-byte limit " \
                                        "(maxObjectBytes)"


def test_each_subscriber_gets_the_object_within_its_own_max_object_bytes(
        events_server: Callable[..., RunningServer], receivers: Callable[..., Receiver]) -> None:
    small, default, plain = receivers(), receivers(), receivers()
    server = events_server([
        {"name": "small", "sink": small.url, "filters": ADMISSION, "includeObject": True, "maxObjectBytes": 4096},
        {"name": "default", "sink": default.url, "filters": ADMISSION, "includeObject": True},
        {"name": "plain", "sink": plain.url, "filters": ADMISSION},
    ])
    obj = padded_pod("ten-kilobytes", 10_000)
    server.validate(review(obj))
    for receiver in (small, default, plain):
        wait_for(receiver.events, what="the event")
    (small_data,), (default_data,), (plain_data,) = ([e.get_data() for e in r.events()]
                                                     for r in (small, default, plain))
    assert "object" not in small_data
    assert small_data["objectOmitted"] == (f"the object is {len(orjson.dumps(obj))} bytes, larger than the "
                                           "4096-byte limit (maxObjectBytes)")
    assert default_data["object"] == obj
    assert "objectOmitted" not in default_data
    assert "object" not in plain_data  # it never asked for the object
    assert "objectOmitted" not in plain_data


# --- the outbox's bytes ------------------------------------------------------------------------------------


def facts(name: str) -> AdmissionFacts:
    """What the pipeline gathers about one allowed CREATE of a Pod."""
    return AdmissionFacts(
        uid=str(uuid.uuid4()), phase="validate", operation="CREATE",
        kind={"group": "", "version": "v1", "kind": "Pod"}, resource={"group": "", "version": "v1", "resource": "pods"},
        sub_resource="", namespace="default", name=name, username="alice", groups=("system:authenticated",),
        allowed=True, status=None, warnings=(), audit_annotations={}, policies=(), patch=(), duration_ms=1.0,
        time=time.time())


@contextlib.contextmanager
def delivering(settings: EventSettings) -> Iterator[None]:
    """The deliverer's loop in a thread of its own, as `webhook deliver` runs it; stopped (drained) at the end."""
    deliverer = EventDeliverer(settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(deliverer.run(),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(deliverer.stop)
        thread.join(timeout=30)
        loop.close()


def event_settings(tmp_path: Path, subscribers: list[dict[str, Any]], *, max_outbox_bytes: int) -> EventSettings:
    return EventSettings(state_dir=tmp_path / "state", subscribers_file=_subscribers_file(tmp_path, subscribers),
                         source="urn:webhook.dev:cluster:test:server:a", max_outbox_bytes=max_outbox_bytes)


def counters(settings: EventSettings) -> dict[str, int]:
    box = Outbox(settings.outbox_path)
    try:
        return box.counters()
    finally:
        box.close()


def stored(settings: EventSettings) -> tuple[int, int]:
    box = Outbox(settings.outbox_path)
    try:
        return box.stored_bytes()
    finally:
        box.close()


def dropped_metric(metrics: Metrics) -> float:
    found = re.search(r'^webhook_events_dropped_total\{reason="full"\} (\S+)$', metrics.render().decode(), re.M)
    return float(found.group(1)) if found else 0.0


def test_past_the_byte_cap_new_events_are_dropped_and_counted_as_for_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = 64 * 1024
    settings = event_settings(tmp_path, [{"name": "down", "sink": refused_url(), "filters": ADMISSION,
                                          "includeObject": True, "retry": NEVER_SOON}], max_outbox_bytes=cap)
    with delivering(settings):
        metrics = Metrics()
        recorder = EventRecorder(settings, metrics=metrics)
        try:
            for index in range(12):  # about 10 KB each: about six fit
                recorder.record_admission(facts(f"p{index}"), padded_pod(f"p{index}", 10_000))
            by_the_recorder = dropped_metric(metrics)
            assert by_the_recorder >= 1

            def accounted() -> bool:
                recorder.maintain()  # hands the spool over, as the serving process does every 50 ms
                totals = counters(settings)
                return totals.get("enqueued/down", 0) + totals.get("dropped_full", 0) == 12
            wait_for(accounted, what="every event enqueued or counted as dropped")
        finally:
            recorder.close()
    totals = counters(settings)
    undelivered, _ = stored(settings)
    assert 0 < undelivered <= cap
    assert totals["dropped_full"] >= by_the_recorder
    assert main(["events", "--state-dir", str(settings.state_dir), "status"]) == 0
    out = capsys.readouterr().out
    assert f"dropped: {totals['dropped_full']} (outbox full)" in out
    assert f"backlog: {totals['enqueued/down']} undelivered" in out


def test_serve_outbox_max_mb_caps_the_outbox(server_processes: Callable[..., ServerProcess], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`webhook serve --outbox-max-mb 1` reaches the serving process and its `webhook deliver`: with the
    subscriber down, one event with a 600 KiB object fits and the next three do not (512 MiB would keep them)."""
    subscribers = _subscribers_file(tmp_path, [{"name": "down", "sink": refused_url(), "filters": ADMISSION,
                                                "includeObject": True, "retry": NEVER_SOON}])
    server = server_processes("--policies", str(TEST_POLICIES), "--subscribers", str(subscribers),
                              "--outbox-max-mb", "1")
    server.wait_ready()
    with server.client() as client:
        for index in range(4):
            reply = client.post("/validate", json=review(padded_pod(f"p{index}", 600 * 1024)))
            assert reply.json()["response"]["allowed"] is True
    state = tmp_path / "state"

    def totals() -> dict[str, int]:
        box = Outbox(state / "outbox.db")
        try:
            return box.counters()
        finally:
            box.close()
    wait_for(lambda: totals().get("enqueued/down", 0) + totals().get("dropped_full", 0) == 4,
             what="every event enqueued or counted as dropped")
    assert totals()["enqueued/down"] == 1
    assert main(["events", "--state-dir", str(state), "status"]) == 0
    assert "dropped: 3 (outbox full)" in capsys.readouterr().out


def test_several_serving_processes_together_stay_within_the_byte_cap(tmp_path: Path) -> None:
    """Each recorder keeps within the cap by its own estimate; the deliverer holds the cap for all of them."""
    cap = 64 * 1024
    settings = event_settings(tmp_path, [{"name": "down", "sink": refused_url(), "filters": ADMISSION,
                                          "includeObject": True, "retry": NEVER_SOON}], max_outbox_bytes=cap)
    with delivering(settings):
        recorders = [EventRecorder(settings, metrics=Metrics()) for _ in range(2)]
        try:
            for number, recorder in enumerate(recorders):
                for index in range(5):  # about 50 KB from each: within the cap for each, not for both
                    recorder.record_admission(facts(f"r{number}-{index}"), padded_pod(f"r{number}-{index}", 10_000))
            assert [dropped_metric(recorder.metrics) for recorder in recorders] == [0.0, 0.0]

            def accounted() -> bool:
                for recorder in recorders:
                    recorder.maintain()
                totals = counters(settings)
                return totals.get("enqueued/down", 0) + totals.get("dropped_full", 0) == 10
            wait_for(accounted, what="every event enqueued or counted as dropped")
        finally:
            for recorder in recorders:
                recorder.close()
    undelivered, _ = stored(settings)
    assert 0 < undelivered <= cap
    assert counters(settings)["dropped_full"] >= 4


def test_dead_letters_give_way_to_new_events_under_the_byte_cap(tmp_path: Path,
                                                               receivers: Callable[..., Receiver]) -> None:
    cap = 64 * 1024
    receiver = receivers(lambda n: (400, {}, 0.0))  # every event is a dead letter at once
    settings = event_settings(tmp_path, [{"name": "picky", "sink": receiver.url, "filters": ADMISSION,
                                          "includeObject": True}], max_outbox_bytes=cap)
    box = Outbox(settings.outbox_path)  # an outbox nearly full of dead letters, the oldest first
    try:
        box.enqueue([(f"old-{index}", "picky", b"x" * 10_000) for index in range(6)])
        box.record([DeliveryRecord(row.seq, "dead", error="HTTP 400")
                    for row in box.claim(subscribers=["picky"], limit=10, lease_seconds=30)])
        assert box.stored_bytes() == (0, 60_000)
    finally:
        box.close()
    with delivering(settings):
        metrics = Metrics()
        metrics.add_collector(OutboxCollector(settings.outbox_path))
        recorder = EventRecorder(settings, metrics=metrics)
        try:
            new = facts("new")
            recorder.record_admission(new, padded_pod("new", 10_000))

            def delivered() -> Any:
                recorder.maintain()
                return receiver.events()
            (event,) = wait_for(delivered, what="the new event")
            assert event.get_data()["uid"] == new.uid
            assert event.get_data()["object"]["metadata"]["name"] == "new"
            text = metrics.render().decode()
        finally:
            recorder.close()
    totals = counters(settings)
    assert totals.get("dropped_full", 0) == 0
    assert totals["evicted/picky"] == 1
    assert 'webhook_dead_letters_evicted_total{subscriber="picky"} 1.0' in text
    box = Outbox(settings.outbox_path)
    try:
        assert sum(box.stored_bytes()) <= cap
        assert "old-0" not in {letter["event_id"] for letter in box.dead_letters()}  # the oldest went first
        assert "old-1" in {letter["event_id"] for letter in box.dead_letters()}
    finally:
        box.close()


def test_the_outbox_keeps_its_byte_totals_in_step_with_its_rows_and_restores_them_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"

    def scanned() -> tuple[int, int]:
        """(undelivered, the rest) counted from the rows themselves."""
        connection = sqlite3.connect(path)
        try:
            rows = connection.execute("SELECT state, length(event) FROM deliveries").fetchall()
        finally:
            connection.close()
        return (sum(size for state, size in rows if state in ("pending", "inflight")),
                sum(size for state, size in rows if state not in ("pending", "inflight")))

    box, other = Outbox(path), Outbox(path)  # two processes on one file
    try:
        box.enqueue([(f"e{index}", "s", b"x" * (1000 * (index + 1))) for index in range(5)])
        other.enqueue([("e0", "s", b"repeated: ignored"), ("f", "t", b"y" * 777)])
        assert box.stored_bytes() == other.stored_bytes() == scanned() == (15_777, 0)
        claimed = box.claim(subscribers=["s"], limit=5, lease_seconds=30)
        assert box.stored_bytes() == scanned() == (15_777, 0)
        first, second, third, fourth, fifth = claimed
        box.record([DeliveryRecord(first.seq, "delivered"), DeliveryRecord(second.seq, "dead", error="no"),
                    DeliveryRecord(third.seq, "pending", next_attempt=0.0, error="later")])
        assert box.stored_bytes() == scanned() == (15_777 - 1000 - 2000, 2000)  # a delivered row keeps no event
        box.release([fourth.seq, fifth.seq])
        assert box.replay(subscriber="s") == 1
        assert other.stored_bytes() == scanned() == (15_777 - 1000, 0)
        box.record([DeliveryRecord(row.seq, "dead", error="no")
                    for row in box.claim(subscribers=["s", "t"], limit=10, lease_seconds=30)])
        assert box.stored_bytes() == scanned() == (0, 15_777 - 1000)
        assert box.evict_dead_letters(needed=2500) == 5000  # the oldest first: 2000 and 3000
        assert box.stored_bytes() == scanned() == (0, 15_777 - 1000 - 5000)
        assert box.compact(delivered_older_than=time.time() + 1, dead_older_than=time.time() + 1) == 4
        assert box.stored_bytes() == scanned() == (0, 0)
        box.enqueue([("g", "s", b"z" * 4321)])
    finally:
        box.close()
        other.close()
    connection = sqlite3.connect(path)  # totals lost (as in an outbox made before they were kept)
    connection.execute("DELETE FROM stored_bytes")
    connection.commit()
    connection.close()
    box = Outbox(path)
    try:
        assert box.stored_bytes() == scanned() == (4321, 0)
    finally:
        box.close()
