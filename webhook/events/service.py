"""The events service of one process: enqueue on the request path, deliver in the background.

The request path only writes outbox rows (one per event and interested subscriber) and never waits for a
subscriber. A background task claims due rows with a lease, sends them, and records the outcome. On
shutdown it drains in-flight sends for a bounded time and hands the rest back to the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from webhook.events import model
from webhook.events.delivery import attempt, backoff_delay
from webhook.events.outbox import Claimed, Outbox
from webhook.events.subscribers import ConfigFileError, ResolvedSubscriber, load_subscribers
from webhook.metrics import Metrics

log = logging.getLogger("webhook.events")
_SECRET_KINDS = {("", "Secret")}


@dataclass(frozen=True, slots=True)
class EventSettings:
    state_dir: Path
    subscribers_file: Path | None
    source: str
    max_backlog: int = 100_000
    lease_seconds: float = 30.0
    drain_seconds: float = 5.0
    delivered_retention_seconds: float = 3600.0
    dead_retention_seconds: float = 7 * 86400.0


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


class EventService:
    def __init__(self, settings: EventSettings, *, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.outbox = Outbox(settings.state_dir / "outbox.db")
        self.subscribers: tuple[ResolvedSubscriber, ...] = ()
        self.subscribers_problems: list[str] = []
        self._subscribers_stamp: tuple[float, int] | None = None
        self._backlog = self.outbox.backlog()
        self._backlog_checked = time.monotonic()
        self._last_drop_log = 0.0
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._per_subscriber: dict[str, int] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._last_compaction = 0.0
        self.reload_subscribers()

    # --- subscribers -------------------------------------------------------------------------------------

    def reload_subscribers(self) -> None:
        """Read the subscribers file when it changed; a broken file keeps the last good subscribers."""
        path = self.settings.subscribers_file
        if path is None:
            return
        try:
            stat = path.stat()
            stamp = (stat.st_mtime, stat.st_size)
        except OSError:
            stamp = (0.0, -1)
        if stamp == self._subscribers_stamp:
            return
        self._subscribers_stamp = stamp
        try:
            loaded = load_subscribers(path)
        except ConfigFileError as error:
            self.subscribers_problems = [str(problem) for problem in error.problems]
            log.error("subscribers file %s rejected, keeping %d subscribers:\n%s", path, len(self.subscribers),
                      "\n".join(self.subscribers_problems))
            return
        self.subscribers = loaded
        self.subscribers_problems = []
        for name in list(self._clients):
            if name not in {s.name for s in loaded}:
                client = self._clients.pop(name)
                if self._loop is not None:
                    self._loop.create_task(client.aclose())
        log.info("loaded %d subscribers from %s", len(loaded), path)

    # --- request path ------------------------------------------------------------------------------------

    def _enqueue(self, attributes: dict[str, str], data: dict[str, Any], *, object_: Any = None,
                 include_object_allowed: bool = True) -> None:
        wanting = [s for s in self.subscribers if s.wants(attributes)]
        if not wanting:
            return
        rows = []
        plain = orjson.dumps({"attributes": attributes, "data": data})
        for subscriber in wanting:
            if subscriber.spec.includeObject and include_object_allowed and object_ is not None:
                rows.append((attributes["id"], subscriber.name, orjson.dumps(
                    {"attributes": attributes, "data": {**data, "object": object_}})))
            else:
                rows.append((attributes["id"], subscriber.name, plain))
        if self._backlog + len(rows) > self.settings.max_backlog:
            self._dropped("full", len(rows), f"the outbox holds {self._backlog} undelivered events, "
                          f"its cap is {self.settings.max_backlog}")
            return
        try:
            inserted = self.outbox.enqueue(rows)
        except Exception as error:  # disk full, read-only state dir, locked file: admission goes on
            self._dropped("error", len(rows), f"cannot write to the outbox: {error}")
            return
        self._backlog += inserted
        for subscriber in wanting:
            self.metrics.events_enqueued.labels(subscriber.name).inc()
        self._wake()

    def _dropped(self, reason: str, count: int, why: str) -> None:
        self.metrics.events_dropped.labels(reason).inc(count)
        with contextlib.suppress(Exception):
            self.outbox.add_counter(f"dropped_{reason}", count)
        if time.monotonic() - self._last_drop_log > 10:
            self._last_drop_log = time.monotonic()
            log.error("dropped %d event deliveries: %s", count, why)

    def _wake(self) -> None:
        if self._loop is None or self._wakeup is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wakeup.set()
        else:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def record_admission(self, facts: AdmissionFacts) -> None:
        """Enqueue the event of one decision (never for dry runs; the caller checks). Never raises."""
        if not self.subscribers:
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

    # --- delivery ----------------------------------------------------------------------------------------

    def _client(self, subscriber: ResolvedSubscriber) -> httpx.AsyncClient:
        client = self._clients.get(subscriber.name)
        if client is None:
            client = httpx.AsyncClient(timeout=subscriber.spec.timeoutSeconds, follow_redirects=False,
                                       limits=httpx.Limits(max_connections=subscriber.spec.concurrency))
            self._clients[subscriber.name] = client
        return client

    async def _deliver(self, subscriber: ResolvedSubscriber, row: Claimed) -> None:
        try:
            outcome = await attempt(self._client(subscriber), subscriber, row.event)
            name = subscriber.name
            if outcome.kind == "delivered":
                self.outbox.delivered(row.seq)
                self.metrics.events_delivered.labels(name).inc()
                self.metrics.delivery_latency.labels(name).observe(max(time.time() - row.created, 0.0))
            elif outcome.kind == "gone":
                self.outbox.dead(row.seq, error=outcome.detail)
                self.outbox.disable(name, reason=outcome.detail)
                self.metrics.events_dead_lettered.labels(name).inc()
                self.metrics.subscribers_disabled.labels(name).inc()
                log.error("subscriber %s answered 410 Gone and is disabled; replay its dead letters to "
                          "enable it again", name)
                self._subscriber_disabled(name, outcome.detail)
            elif outcome.kind == "dead" or row.attempts + 1 >= subscriber.spec.retry.maxAttempts:
                detail = outcome.detail if outcome.kind == "dead" else (
                    f"gave up after {row.attempts + 1} attempts: {outcome.detail}")
                self.outbox.dead(row.seq, error=detail)
                self.metrics.events_dead_lettered.labels(name).inc()
                log.warning("event %s to %s dead-lettered: %s", row.event_id, name, detail)
            else:
                delay = backoff_delay(subscriber.spec.retry, attempts=row.attempts + 1,
                                      retry_after=outcome.retry_after)
                self.outbox.retry(row.seq, at=time.time() + delay, error=outcome.detail)
                self.metrics.events_retried.labels(name).inc()
        except Exception:  # an outbox error must not kill the loop; the lease returns the row later
            log.exception("delivering event %s to %s failed", row.event_id, subscriber.name)
        finally:
            self._inflight.pop(row.seq, None)
            self._per_subscriber[subscriber.name] = self._per_subscriber.get(subscriber.name, 1) - 1
            self._wake()

    def _subscriber_disabled(self, name: str, detail: str) -> None:
        attributes = model.attributes(event_id=model.new_event_id(),
                                      event_type=model.SUBSCRIBER_TYPE_PREFIX + "disabled",
                                      source=self.settings.source, subject=f"subscribers/{name}")
        self._enqueue(attributes, {"subscriber": name, "reason": detail})

    def _tick(self) -> int:
        """Claim what is due for each active subscriber with free slots; start sending it."""
        now = time.monotonic()
        if now - self._backlog_checked > 1.0:
            self._backlog = self.outbox.backlog()
            self._backlog_checked = now
            self.metrics.outbox_backlog.set(self._backlog)
            self.reload_subscribers()
        if now - self._last_compaction > 60.0:
            self._last_compaction = now
            wall = time.time()
            self.outbox.compact(delivered_older_than=wall - self.settings.delivered_retention_seconds,
                                dead_older_than=wall - self.settings.dead_retention_seconds)
        disabled = self.outbox.disabled()
        started = 0
        for subscriber in self.subscribers:
            if subscriber.name in disabled:
                continue
            free = subscriber.spec.concurrency - self._per_subscriber.get(subscriber.name, 0)
            for row in self.outbox.claim(subscribers=[subscriber.name], limit=free,
                                         lease_seconds=self.settings.lease_seconds):
                self._per_subscriber[subscriber.name] = self._per_subscriber.get(subscriber.name, 0) + 1
                self._inflight[row.seq] = asyncio.create_task(self._deliver(subscriber, row))
                started += 1
        return started

    async def run(self) -> None:
        """The delivery loop, until stop()."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        while not self._stopping:
            try:
                started = self._tick()
            except Exception:
                log.exception("event delivery loop error; retrying")
                started = 0
            if started == 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=0.25)
            else:
                await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop claiming; let in-flight sends finish for drain_seconds; give the rest back to the outbox."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        pending = list(self._inflight.items())
        if pending:
            _, unfinished = await asyncio.wait([task for _, task in pending], timeout=self.settings.drain_seconds)
            leftover = [seq for seq, task in pending if task in unfinished]
            for task in unfinished:
                task.cancel()
            self.outbox.release(leftover)
            if leftover:
                log.warning("shutdown: %d deliveries left in the outbox for the next start", len(leftover))
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self.outbox.close()
