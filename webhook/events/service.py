"""Events on both sides of the outbox.

`EventRecorder` (every serving process): decides which subscribers want an event and appends their rows to
the process's spool before the admission answer goes out; it never waits for SQLite or a subscriber.
`EventDeliverer` (one per server: a process of its own under `webhook serve`, or a task in the serving
process): moves spooled rows into the SQLite outbox, claims due rows with a lease, sends them, and records
the outcome. On shutdown it drains in-flight sends for a bounded time and hands the rest back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from webhook.events import model
from webhook.events.delivery import attempt, backoff_delay, new_session
from webhook.events.outbox import Claimed, DeliveryRecord, Outbox
from webhook.events.spool import COUNTER, EVENT, SpoolWriter, claim_unowned, pending_bytes, read_records
from webhook.events.subscribers import ResolvedSubscriber, SubscriberSet
from webhook.metrics import Metrics

log = logging.getLogger("webhook.events")
_SECRET_KINDS = {("", "Secret")}
BACKLOG_FILE = "backlog"


@dataclass(frozen=True, slots=True)
class EventSettings:
    state_dir: Path
    subscribers_file: Path | None
    source: str
    max_backlog: int = 100_000
    max_spool_bytes: int = 256 * 1024 * 1024
    lease_seconds: float = 30.0
    drain_seconds: float = 5.0
    delivered_retention_seconds: float = 3600.0
    dead_retention_seconds: float = 7 * 86400.0

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.db"


@dataclass(frozen=True, slots=True)
class AdmissionFacts:
    """What an admission event says, gathered by the pipeline (the events layer knows no policy types)."""

    uid: str
    phase: str
    operation: str
    kind: Mapping[str, str]
    resource: Mapping[str, str]
    sub_resource: str
    namespace: str
    name: str
    username: str
    groups: tuple[str, ...]
    allowed: bool
    status: Mapping[str, Any] | None
    warnings: tuple[str, ...]
    audit_annotations: Mapping[str, str]
    policies: tuple[Mapping[str, Any], ...]
    patch: tuple[Mapping[str, Any], ...]
    duration_ms: float
    object: Any


class EventRecorder:
    """The request side: filter, build, spool. Never raises, never waits for a subscriber or the database."""

    def __init__(self, settings: EventSettings, *, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.subscribers = SubscriberSet(settings.subscribers_file)
        self.spool = SpoolWriter(settings.spool_dir)
        self._backlog = 0
        self._spooled_since_check = 0
        self._spool_bytes = 0
        self._last_drop_log = 0.0
        self._last_check = 0.0
        self.maintain()

    def maintain(self) -> None:
        """Called every few tens of milliseconds: hand spooled rows over; once a second, refresh state."""
        self.spool.rotate()
        now = time.monotonic()
        if now - self._last_check < 1.0:
            return
        self._last_check = now
        self.subscribers.refresh()
        try:
            self._backlog = int((self.settings.state_dir / BACKLOG_FILE).read_text() or 0)
        except (OSError, ValueError):
            self._backlog = 0
        self._spooled_since_check = 0
        self._spool_bytes = pending_bytes(self.settings.spool_dir)

    def close(self) -> None:
        self.spool.close()

    def _enqueue(self, attributes: dict[str, str], data: dict[str, Any], *, object_: Any = None,
                 include_object_allowed: bool = True) -> None:
        wanting = [s for s in self.subscribers.current if s.wants(attributes)]
        if not wanting:
            return
        plain = orjson.dumps({"attributes": attributes, "data": data})
        rows = []
        for subscriber in wanting:
            if subscriber.spec.includeObject and include_object_allowed and object_ is not None:
                rows.append((attributes["id"], subscriber.name, orjson.dumps(
                    {"attributes": attributes, "data": {**data, "object": object_}})))
            else:
                rows.append((attributes["id"], subscriber.name, plain))
        if self._backlog + self._spooled_since_check + len(rows) > self.settings.max_backlog:
            self._dropped("full", len(rows), f"the outbox holds about {self._backlog} undelivered events, "
                          f"its cap is {self.settings.max_backlog}")
            return
        if self._spool_bytes > self.settings.max_spool_bytes:
            self._dropped("full", len(rows), f"{self._spool_bytes} bytes wait in the spool (is the deliverer "
                          "running?)")
            return
        try:
            self.spool.append_events(rows)
        except OSError as error:  # disk full, read-only state dir: admission goes on
            self._dropped("error", len(rows), f"cannot write to the spool: {error}")
            return
        self._spooled_since_check += len(rows)
        for subscriber in wanting:
            self.metrics.events_enqueued.labels(subscriber.name).inc()

    def _dropped(self, reason: str, count: int, why: str) -> None:
        self.metrics.events_dropped.labels(reason).inc(count)
        with contextlib.suppress(OSError):
            self.spool.append_counter(f"dropped_{reason}", count)
        if time.monotonic() - self._last_drop_log > 10:
            self._last_drop_log = time.monotonic()
            log.error("dropped %d event deliveries: %s", count, why)

    def record_admission(self, facts: AdmissionFacts) -> None:
        """Spool the event of one decision (never for dry runs; the caller checks). Never raises."""
        if not self.subscribers.current:
            return
        try:
            self._record_admission(facts)
        except Exception as error:  # an event must never cost an admission answer
            self._dropped("error", 1, f"cannot build the event of request {facts.uid}: {error}")

    def _record_admission(self, facts: AdmissionFacts) -> None:
        secret = (facts.kind.get("group", ""), facts.kind.get("kind", "")) in _SECRET_KINDS
        patch = [dict(op) for op in facts.patch]
        data: dict[str, Any] = {
            "uid": facts.uid, "phase": facts.phase, "operation": facts.operation,
            "kind": dict(facts.kind), "resource": dict(facts.resource), "subResource": facts.sub_resource,
            "namespace": facts.namespace, "name": facts.name,
            "userInfo": {"username": facts.username, "groups": list(facts.groups)},
            "allowed": facts.allowed, "status": dict(facts.status) if facts.status else None,
            "warnings": list(facts.warnings), "auditAnnotations": dict(facts.audit_annotations),
            "policies": [dict(p) for p in facts.policies],
            "patch": model.redact_patch(patch) if secret else patch,
            "durationMs": round(facts.duration_ms, 3),
        }
        attributes = model.attributes(
            event_id=model.admission_event_id(facts.uid, facts.phase),
            event_type=model.admission_event_type(allowed=facts.allowed, patched=bool(facts.patch),
                                                  warned=bool(facts.warnings)),
            source=self.settings.source,
            subject=model.admission_subject(resource=facts.resource.get("resource", ""),
                                            sub_resource=facts.sub_resource, namespace=facts.namespace,
                                            name=facts.name),
            extensions={"phase": facts.phase},
        )
        self._enqueue(attributes, data, object_=facts.object, include_object_allowed=not secret)

    def record_policy_set(self, *, directory: str, ok: bool, policies: int, digest: str,
                          problems: list[str]) -> None:
        kind = "loaded" if ok else "rejected"
        data: dict[str, Any] = {"directory": directory, "policies": policies, "digest": digest}
        if not ok:
            data["problems"] = problems[:100]
        attributes = model.attributes(event_id=model.new_event_id(), event_type=model.POLICY_TYPE_PREFIX + kind,
                                      source=self.settings.source, subject=f"policies/{directory}")
        self._enqueue(attributes, data)

    def record_subscriber_disabled(self, name: str, detail: str) -> None:
        attributes = model.attributes(event_id=model.new_event_id(),
                                      event_type=model.SUBSCRIBER_TYPE_PREFIX + "disabled",
                                      source=self.settings.source, subject=f"subscribers/{name}")
        self._enqueue(attributes, {"subscriber": name, "reason": detail})


class EventDeliverer:
    """The delivery side: spool -> outbox -> subscribers."""

    def __init__(self, settings: EventSettings, *, metrics: Metrics, recorder: EventRecorder | None = None,
                 parent_pid: int | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.recorder = recorder  # for the events the deliverer itself raises (a subscriber disabled)
        self.parent_pid = parent_pid  # a deliverer process ends when the server that started it is gone
        self.outbox = Outbox(settings.outbox_path)
        self.subscribers = SubscriberSet(settings.subscribers_file)
        self._stopping = False
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._per_subscriber: dict[str, int] = {}
        self._clients: dict[str, aiohttp.ClientSession] = {}
        self._last_second = 0.0
        self._last_compaction = 0.0
        self._wakeup: asyncio.Event | None = None
        self._outcomes: list[DeliveryRecord] = []
        self._failures: dict[str, int] = {}  # consecutive retryable failures per subscriber
        self._paused_until: dict[str, float] = {}

    # --- spool -> outbox ---------------------------------------------------------------------------------

    def ingest(self) -> int:
        """Move every unowned spool file into the outbox (one transaction each), then remove it."""
        moved = 0
        for path, descriptor in claim_unowned(self.settings.spool_dir):
            try:
                rows: list[tuple[str, str, bytes]] = []
                counters: dict[str, int] = {}
                for kind, fields in read_records(path):
                    if kind == EVENT and len(fields) == 3:
                        rows.append((fields[0].decode(), fields[1].decode(), fields[2]))
                    elif kind == COUNTER and len(fields) == 2:
                        name = fields[0].decode()
                        counters[name] = counters.get(name, 0) + int(fields[1])
                self.outbox.enqueue(rows)
                for name, amount in counters.items():
                    self.outbox.add_counter(name, amount)
                path.unlink()
                moved += len(rows)
            except FileNotFoundError:
                continue
            finally:
                os.close(descriptor)
        return moved

    # --- outbox -> subscribers ---------------------------------------------------------------------------

    def _client(self, subscriber: ResolvedSubscriber) -> aiohttp.ClientSession:
        client = self._clients.get(subscriber.name)
        if client is None:
            client = new_session(subscriber)
            self._clients[subscriber.name] = client
        return client

    async def _deliver(self, subscriber: ResolvedSubscriber, row: Claimed) -> None:
        name = subscriber.name
        try:
            outcome = await attempt(self._client(subscriber), subscriber, row.event)
            if outcome.kind == "delivered":
                self._outcomes.append(DeliveryRecord(row.seq, "delivered"))
                self._failures.pop(name, None)
                self.metrics.events_delivered.labels(name).inc()
                self.metrics.delivery_latency.labels(name).observe(max(time.time() - row.created, 0.0))
            elif outcome.kind == "gone":
                self._outcomes.append(DeliveryRecord(row.seq, "dead", error=outcome.detail))
                self.outbox.disable(name, reason=outcome.detail)
                self.metrics.events_dead_lettered.labels(name).inc()
                self.metrics.subscribers_disabled.labels(name).inc()
                log.error("subscriber %s answered 410 Gone and is disabled; `webhook events replay --subscriber "
                          "%s` enables it again", name, name)
                if self.recorder is not None:
                    self.recorder.record_subscriber_disabled(name, outcome.detail)
            elif outcome.kind == "dead" or row.attempts + 1 >= subscriber.spec.retry.maxAttempts:
                detail = outcome.detail if outcome.kind == "dead" else (
                    f"gave up after {row.attempts + 1} attempts: {outcome.detail}")
                self._outcomes.append(DeliveryRecord(row.seq, "dead", error=detail))
                self.metrics.events_dead_lettered.labels(name).inc()
                log.warning("event %s to %s dead-lettered: %s", row.event_id, name, detail)
            else:
                delay = backoff_delay(subscriber.spec.retry, attempts=row.attempts + 1,
                                      retry_after=outcome.retry_after)
                self._outcomes.append(DeliveryRecord(row.seq, "pending", next_attempt=time.time() + delay,
                                              error=outcome.detail))
                self.metrics.events_retried.labels(name).inc()
                # The subscriber is unwell: hold its other events back too, instead of trying each new one.
                failures = self._failures.get(name, 0) + 1
                self._failures[name] = failures
                pause = backoff_delay(subscriber.spec.retry, attempts=failures, retry_after=outcome.retry_after)
                self._paused_until[name] = time.monotonic() + pause
        except Exception:  # the lease returns the row later
            log.exception("delivering event %s to %s failed", row.event_id, name)
        finally:
            self._inflight.pop(row.seq, None)
            self._per_subscriber[name] = self._per_subscriber.get(name, 1) - 1
            if self._wakeup is not None:
                self._wakeup.set()

    def _every_second(self) -> None:
        if self.subscribers.refresh():
            for name in [n for n in self._clients if n not in {s.name for s in self.subscribers.current}]:
                asyncio.get_running_loop().create_task(self._clients.pop(name).close())
        backlog = self.outbox.backlog()
        self.metrics.outbox_backlog.set(backlog)
        temporary = self.settings.state_dir / f".{BACKLOG_FILE}.{os.getpid()}"
        temporary.write_text(str(backlog))
        temporary.replace(self.settings.state_dir / BACKLOG_FILE)
        now = time.monotonic()
        if now - self._last_compaction > 60.0:
            self._last_compaction = now
            wall = time.time()
            self.outbox.compact(delivered_older_than=wall - self.settings.delivered_retention_seconds,
                                dead_older_than=wall - self.settings.dead_retention_seconds)
        else:
            self.outbox.checkpoint()

    def _flush(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        try:
            self.outbox.record(outcomes)
        except Exception:
            self._outcomes = outcomes + self._outcomes  # try again next turn; leases cover a crash meanwhile
            raise

    def _tick(self) -> int:
        """Record outcomes, ingest, then claim what is due for each active subscriber and start sending it."""
        self._flush()
        self.ingest()
        now = time.monotonic()
        if now - self._last_second >= 1.0:
            self._last_second = now
            self._every_second()
        disabled = self.outbox.disabled()
        started = 0
        for subscriber in self.subscribers.current:
            if subscriber.name in disabled or self._paused_until.get(subscriber.name, 0.0) > now:
                continue
            free = subscriber.spec.concurrency - self._per_subscriber.get(subscriber.name, 0)
            for row in self.outbox.claim(subscribers=[subscriber.name], limit=free,
                                         lease_seconds=self.settings.lease_seconds):
                self._per_subscriber[subscriber.name] = self._per_subscriber.get(subscriber.name, 0) + 1
                self._inflight[row.seq] = asyncio.create_task(self._deliver(subscriber, row))
                started += 1
        return started

    async def run(self) -> None:
        """The delivery loop, until stop() (or until the parent process is gone)."""
        self._wakeup = asyncio.Event()
        while not self._stopping:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("the server that started this deliverer is gone; stopping")
                break
            try:
                started = self._tick()
            except Exception:
                log.exception("event delivery loop error; retrying")
                started = 0
            if started == 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=0.05)
            else:
                await asyncio.sleep(0)
        await self._drain()

    def stop(self) -> None:
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def _drain(self) -> None:
        """Let in-flight sends finish for drain_seconds; give the rest back to the outbox."""
        pending = list(self._inflight.items())
        if pending:
            _, unfinished = await asyncio.wait([task for _, task in pending], timeout=self.settings.drain_seconds)
            leftover = [seq for seq, task in pending if task in unfinished]
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            finished = {outcome.seq for outcome in self._outcomes}
            self.outbox.release([seq for seq in leftover if seq not in finished])
            if leftover:
                log.warning("shutdown: %d deliveries left in the outbox for the next start", len(leftover))
        self._flush()
        with contextlib.suppress(Exception):
            self.ingest()  # what the server spooled last goes to the outbox now rather than at the next start
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        self.outbox.close()
