"""Nothing lost under faults: sustained load while the subscriber fails (503 phases, connection refused phases)
and recovers, and `webhook serve` is SIGKILLed several times (sometimes with its deliverer) and restarted on
the same state directory. At the end every review that got an answer (allowed, denied or mutated, on /validate
and /mutate) must have had its event delivered at least once; duplicates are counted and reported.

tests/test_events_durability.py kills the server once mid-stream; this test repeats kills under load with the
subscriber misbehaving, kills the deliverer too, and counts.

CI mode (default): 3 kills, about 100 reviews per run of the server. Long mode: WEBHOOK_SOAK_SECONDS=600 keeps
going for that long, killing at random moments with random subscriber phases (see docs/failure-modes.md).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import TEST_POLICIES, ServerProcess, pod, review, start_server_process, wait_for
from tests.receivers import Answer, Receiver
from webhook.cli import main

SOAK_SECONDS = float(os.environ.get("WEBHOOK_SOAK_SECONDS", "0"))
PER_RUN = 100  # reviews answered per run of the server in CI mode


class FlakySubscriber:
    """A real HTTP subscriber that can answer 200, answer 503, or be down (connections refused)."""

    def __init__(self) -> None:
        self.mode = "healthy"
        self.receiver = Receiver(self._answer)
        self.port = self.receiver.server.server_address[1]
        self.outages: Counter[str] = Counter()

    def _answer(self, _: int) -> Answer:
        if self.mode == "healthy":
            return 200, {}, 0.0
        if self.mode == "slow":  # deliveries are in flight when the server is killed
            return 200, {}, 0.2
        return 503, {"connection": "close"}, 0.0  # also ends kept-alive connections before going down

    def answers(self, status: int) -> int:
        return sum(1 for record in list(self.receiver.received) if record.status == status)

    def healthy(self) -> None:
        if self.mode == "down":
            self._listen()
        self.mode = "healthy"

    def slow(self) -> None:
        if self.mode == "down":
            self._listen()
        self.mode = "slow"
        self.outages["slow"] += 1

    def failing(self) -> None:
        if self.mode == "down":
            self._listen()
        self.mode = "503"
        self.outages["503"] += 1

    def down(self) -> None:
        if self.mode == "down":
            return
        self.mode = "closing"
        self.receiver.server.shutdown()
        self.receiver.server.server_close()  # new connections are refused from now on
        self.mode = "down"
        self.outages["refused"] += 1

    def _listen(self) -> None:
        old = self.receiver.server
        server = type(old)(("127.0.0.1", self.port), old.RequestHandlerClass)
        assert isinstance(server, ThreadingHTTPServer)
        server.daemon_threads = True
        self.receiver.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def acknowledged(self) -> list[Any]:
        return self.receiver.events("dev.webhook.admission.", acknowledged=True)

    def close(self) -> None:
        if self.mode != "down":
            self.receiver.close()


@dataclass
class Load:
    """Reviews sent one after another on a keep-alive connection until told to stop or the server dies."""

    server: ServerProcess
    answered: list[tuple[str, str]] = field(default_factory=list)  # (uid, phase)
    verdicts: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self, offset: int) -> None:
        self.thread = threading.Thread(target=self._run, args=(offset,), daemon=True)
        self.thread.start()

    def _run(self, offset: int) -> None:
        namespaces = ("default", "deny-ns", "mutate-ns", "warn-ns")
        with self.server.client() as client:
            index = offset
            while not self.stop.is_set():
                phase = "mutate" if index % 3 == 2 else "validate"
                body = review(pod(name=f"soak-{index}", namespace=namespaces[index % len(namespaces)],
                                  images=("nginx:latest",) if index % 5 == 0 else ("nginx:1.27",)))
                index += 1
                try:
                    reply = client.post(f"/{phase}", json=body)
                except httpx.TransportError:
                    return  # killed
                assert reply.status_code == 200, reply.text
                response = reply.json()["response"]
                assert response["uid"] == body["request"]["uid"]
                self.answered.append((body["request"]["uid"], phase))
                self.verdicts["denied" if not response["allowed"] else
                              "mutated" if response.get("patch") else "allowed"] += 1

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _kill(server: ServerProcess, *, with_deliverer: bool) -> None:
    """SIGKILL the serving process (its deliverer then gets SIGTERM from the kernel, PR_SET_PDEATHSIG, and
    drains), or the deliverer first and then the server: nothing gets to clean up."""
    if with_deliverer:
        for child in _children(server.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    server.stop(signal.SIGKILL)


@pytest.fixture
def subscriber() -> Iterator[FlakySubscriber]:
    made = FlakySubscriber()
    yield made
    made.close()


def test_every_answered_review_is_delivered_through_kills_and_outages(tmp_path: Path,
                                                                      subscriber: FlakySubscriber) -> None:
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text(yaml.safe_dump({"subscribers": [{
        "name": "audit", "sink": f"http://127.0.0.1:{subscriber.port}/events",
        "filters": [{"prefix": {"type": "dev.webhook.admission."}}], "concurrency": 8, "timeoutSeconds": 2,
        "retry": {"maxAttempts": 100, "initialDelaySeconds": 0.05, "maxDelaySeconds": 0.5}}]}))
    arguments = ("--policies", str(TEST_POLICIES), "--subscribers", str(subscribers), "--no-watch",
                 "--delivery-lease-seconds", "1", "--drain-seconds", "1", "--log-level", "warning")
    rng = random.Random(20261123)
    answered: list[tuple[str, str]] = []
    verdicts: Counter[str] = Counter()
    kills: list[str] = []
    at_kills: list[str] = []  # answered and delivered so far, at each kill
    started_at = time.monotonic()
    servers: list[ServerProcess] = []

    def retried(server: ServerProcess) -> float:
        with server.client() as client:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith('webhook_events_retried_total{subscriber="audit"}'):
                    return float(line.split()[-1])
        return 0.0

    def seen(server: ServerProcess, set_phase: Callable[[], None]) -> Callable[[], float]:
        """What shows that the deliverer has met the subscriber in this phase (a count that grows)."""
        if set_phase == subscriber.failing:
            return lambda: subscriber.answers(503)
        if set_phase == subscriber.down:
            return lambda: retried(server)  # refused connections leave no trace at the subscriber
        return lambda: subscriber.answers(200)

    def run(phases: list[tuple[Callable[[], None], int]], kill: str | None) -> ServerProcess:
        """Start a server and send load through the subscriber phases: each lasts until `count` more reviews are
        answered and the deliverer has met the subscriber in that state a few times; then kill."""
        server = start_server_process(tmp_path, *arguments)
        servers.append(server)
        server.wait_ready()
        load = Load(server)
        load.start(offset=len(answered) + 1_000_000 * len(servers))
        try:
            for set_phase, count in phases:
                set_phase()
                target = len(load.answered) + count
                progress = seen(server, set_phase)
                met = progress() + 3
                wait_for(lambda: len(load.answered) >= target and progress() >= met,  # noqa: B023
                         timeout=60, what=f"{count} answered reviews and deliveries in phase {set_phase.__name__}")
            if kill is not None:
                _kill(server, with_deliverer=kill == "server and deliverer")
                kills.append(kill)
        finally:
            load.join()
            answered.extend(load.answered)
            verdicts.update(load.verdicts)
            acknowledged = {(e.get_data()["uid"], e.get_data()["phase"]) for e in subscriber.acknowledged()}
            at_kills.append(f"{kill or 'end'} after {len(answered)} answered: {len(acknowledged)} delivered")
        return server

    try:
        if SOAK_SECONDS <= 0:
            third = PER_RUN // 3
            run([(subscriber.healthy, third), (subscriber.failing, 2 * third)], "server")
            run([(subscriber.down, PER_RUN)], "server")
            run([(subscriber.failing, third), (subscriber.slow, 2 * third)], "server and deliverer")
        else:
            phases = [subscriber.healthy, subscriber.failing, subscriber.down, subscriber.slow]
            while time.monotonic() - started_at < SOAK_SECONDS:
                plan = [(rng.choice(phases), rng.randint(20, 2000)) for _ in range(rng.randint(1, 4))]
                run(plan, rng.choice(["server", "server and deliverer"]))
        subscriber.healthy()
        last = start_server_process(tmp_path, *arguments)
        servers.append(last)
        last.wait_ready()
        expected = set(answered)

        def delivered() -> set[tuple[str, str]]:
            return {(event.get_data()["uid"], event.get_data()["phase"]) for event in subscriber.acknowledged()}

        # Wait while deliveries progress: a long run leaves a backlog of tens of thousands of events.
        progress = -1
        while progress < len(delivered() & expected):
            progress = len(delivered() & expected)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: expected <= delivered(), timeout=30, interval=0.2,
                         what="every answered review's event")
            if expected <= delivered():
                break
        counts = Counter((event.get_data()["uid"], event.get_data()["phase"]) for event in subscriber.acknowledged())
        missing = expected - set(counts)
        duplicates = sum(count - 1 for count in counts.values() if count > 1)
        attempts = Counter(record.status for record in subscriber.receiver.received)
        print(f"soak: {len(expected)} reviews answered ({dict(verdicts)}), {len(kills)} SIGKILLs ({Counter(kills)}), "
              f"{len(servers)} server starts, subscriber outages {dict(subscriber.outages)}; "
              f"{len(set(counts) & expected)} delivered, {len(missing)} missing, {duplicates} duplicates, "
              f"delivery attempts by status {dict(attempts)}, {time.monotonic() - started_at:.0f} s; "
              f"at each kill: {'; '.join(at_kills)}")
        if missing:  # say where they are: pending, dead letters, or nowhere
            status = io.StringIO()
            with contextlib.redirect_stdout(status):
                main(["events", "--state-dir", str(tmp_path / "state"), "status"])
            spooled = sorted(path.name for path in (tmp_path / "state" / "spool").iterdir())
            print(f"outbox:\n{status.getvalue()}spool files: {len(spooled)} {spooled[:5]}")
        assert missing == set(), f"{len(missing)} answered reviews never delivered, e.g. {sorted(missing)[:5]}"
        assert len(kills) >= 3 or SOAK_SECONDS > 0
        assert subscriber.outages["503"] >= 1
        assert subscriber.outages["refused"] >= 1
    finally:
        for server in servers:
            server.stop()
