"""Events on both sides of the outbox. `EventRecorder` (every serving process): decides which subscribers want an
event and appends their rows to the process's spool before the admission answer goes out; it never waits for SQLite
or a subscriber. `EventDeliverer` (one per server: a process of its own under `webhook serve`, or a task in the
serving process): moves spooled rows into the SQLite outbox, claims due rows with a lease, sends them, and records
the outcome. On shutdown it drains in-flight sends for a bounded time and hands the rest back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from webhook.events.spool import ADMISSION, COUNTER, EVENT, SpoolWriter, claim_unowned, pending_bytes, read_records
from webhook.events.subscribers import ResolvedSubscriber, SubscriberSet
from webhook.events.telemetry import latency_bucket
from webhook.metrics import Metrics

log = logging.getLogger("webhook.events")
BACKLOG_FILE = "backlog"


@dataclass(frozen=True, slots=True)
class EventSettings:
    state_dir: Path
    subscribers_file: Path | None
    source: str
    max_backlog: int = 100_000
    # Bytes of events the outbox keeps (undelivered and dead letters): with the spool's cap, what the state
    # directory holds at most (both fit the chart's 1 GiB persistent volume).
    max_outbox_bytes: int = 512 * 1024 * 1024
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
    """What an admission event says, gathered by the pipeline (the events layer knows no policy types).
    Spooled as it is (orjson writes dataclasses natively); the deliverer builds the event from it."""

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
    time: float
    object_omitted: str = ""  # why an object a subscriber asked for is not in the event
    object_bytes: int = 0  # the size of an object left out for being larger than every subscriber's limit


class EventRecorder:
    """The request side: one spool write per decision. Never raises, never waits for a subscriber or the
    database, and leaves building, filtering and counting events to the deliverer."""

    def __init__(self, settings: EventSettings, *, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.subscribers = SubscriberSet(settings.subscribers_file)
        self.spool = SpoolWriter(settings.spool_dir)
        self._backlog = self._backlog_bytes = 0
        self._spooled_since_check = self._spooled_bytes_since_check = 0
        self._spool_bytes = 0
        self._last_drop_log = 0.0
        self._last_check = 0.0
        self._unsaved_drops: dict[str, int] = {}
        self._object_limit = 0  # the largest maxObjectBytes of the subscribers with includeObject (0: none)
        self._object_subscribers = 0
        self._refresh_subscribers()
        self.maintain()

    def _refresh_subscribers(self) -> None:
        self.subscribers.refresh()
        limits = [s.spec.maxObjectBytes for s in self.subscribers.current if s.spec.includeObject]
        self._object_limit, self._object_subscribers = max(limits, default=0), len(limits)

    def maintain(self) -> None:
        """Called every few tens of milliseconds: hand spooled rows over; once a second, refresh state."""
        self.spool.rotate()
        if self.spool.lost:
            lost, self.spool.lost = self.spool.lost, 0
            self.metrics.events_dropped.labels("error").inc(lost)
            self._unsaved_drops["error"] = self._unsaved_drops.get("error", 0) + lost
            log.error("%d spooled events were lost: the spool directory %s was removed (made again)", lost,
                      self.settings.spool_dir)
        now = time.monotonic()
        if now - self._last_check < 1.0:
            return
        self._last_check = now
        self._refresh_subscribers()
        try:  # "ROWS BYTES" undelivered, written by the deliverer every second
            rows, _, size = (self.settings.state_dir / BACKLOG_FILE).read_text().partition(" ")
            self._backlog, self._backlog_bytes = int(rows or 0), int(size or 0)
        except (OSError, ValueError):
            self._backlog = self._backlog_bytes = 0
        self._spooled_since_check = self._spooled_bytes_since_check = 0
        self._spool_bytes = pending_bytes(self.settings.spool_dir)
        for reason, count in list(self._unsaved_drops.items()):
            with contextlib.suppress(OSError):
                self.spool.append(COUNTER, f"dropped_{reason}".encode(), str(count).encode())
                del self._unsaved_drops[reason]

    def close(self) -> None:
        self.spool.close()

    def _spool(self, kind: bytes, *fields: bytes, size: int | None = None) -> None:
        # The caps count outbox rows and bytes; an event is counted as one row per subscriber (the deliverer,
        # which applies the filters, may keep fewer) of `size` bytes in all.
        rows = len(self.subscribers.current)
        size = sum(len(field) for field in fields) * rows if size is None else size
        if self._backlog + self._spooled_since_check + rows > self.settings.max_backlog:
            self._dropped("full", f"the outbox holds about {self._backlog} undelivered events, "
                          f"its cap is {self.settings.max_backlog}")
            return
        if self._backlog_bytes + self._spooled_bytes_since_check + size > self.settings.max_outbox_bytes:
            self._dropped("full", f"the outbox holds about {self._backlog_bytes + self._spooled_bytes_since_check} "
                          f"bytes of undelivered events, its cap is {self.settings.max_outbox_bytes}")
            return
        if self._spool_bytes > self.settings.max_spool_bytes:
            self._dropped("full", f"{self._spool_bytes} bytes wait in the spool (is the deliverer running?)")
            return
        try:
            self.spool.append(kind, *fields)
        except OSError as error:  # disk full, read-only state dir: admission goes on
            self._dropped("error", f"cannot write to the spool: {error}")
            return
        self._spooled_since_check += rows
        self._spooled_bytes_since_check += size

    def _dropped(self, reason: str, why: str) -> None:
        self.metrics.events_dropped.labels(reason).inc()
        try:  # for `webhook events status`; kept in memory and written later when the spool cannot take it
            self.spool.append(COUNTER, f"dropped_{reason}".encode(), b"1")
        except OSError:
            self._unsaved_drops[reason] = self._unsaved_drops.get(reason, 0) + 1
        if time.monotonic() - self._last_drop_log > 10:
            self._last_drop_log = time.monotonic()
            log.error("dropped an event: %s (further drops in the next 10 s are only counted)", why)

    @property
    def wants_admissions(self) -> bool:
        """Whether a decision's event goes anywhere (no subscriber: the caller need not build its facts)."""
        return bool(self.subscribers.current)

    def record_admission(self, facts: AdmissionFacts, object_: Any = None) -> None:
        """Spool the facts of one decision, with the object when a subscriber opted in, it is no Secret, and
        some such subscriber's maxObjectBytes allows it (never for dry runs; the caller checks). Never raises."""
        if not self.subscribers.current:
            return
        try:
            keep = object_ is not None and self._object_limit > 0 and not model.is_secret(facts.kind)
            encoded = b""
            if keep:
                try:  # encoded at the depth the event will carry it, then cut out of the wrapper
                    encoded = orjson.dumps({"data": {"object": object_}})[len(b'{"data":{"object":'):-2]
                except orjson.JSONEncodeError as error:  # nested past orjson's limit: the event goes without it
                    facts = dataclasses.replace(facts, object_omitted=f"the object cannot be included: {error}")
                if len(encoded) > self._object_limit:  # too large for everyone: objectOmitted gives its size
                    facts, encoded = dataclasses.replace(facts, object_bytes=len(encoded)), b""
            spooled = orjson.dumps(facts)
            self._spool(ADMISSION, spooled, encoded,
                        size=len(spooled) * len(self.subscribers.current) + len(encoded) * self._object_subscribers)
        except Exception as error:  # an event must never cost an admission answer
            self._dropped("error", f"cannot spool the event of request {facts.uid}: {error}")

    def _record_event(self, attributes: dict[str, str], data: dict[str, Any]) -> None:
        if any(subscriber.wants(attributes) for subscriber in self.subscribers.current):  # rare: filter here
            self._spool(EVENT, orjson.dumps({"attributes": attributes, "data": data}))

    def record_policy_set(self, *, directory: str, ok: bool, policies: int, digest: str,
                          problems: list[str]) -> None:
        kind = "loaded" if ok else "rejected"
        data: dict[str, Any] = {"directory": directory, "policies": policies, "digest": digest}
        if not ok:
            data["problems"] = problems[:100]
        attributes = model.attributes(event_id=model.new_event_id(), event_type=model.POLICY_TYPE_PREFIX + kind,
                                      source=self.settings.source, subject=f"policies/{directory}")
        self._record_event(attributes, data)

    def record_subscriber_disabled(self, name: str, detail: str) -> None:
        attributes = model.attributes(event_id=model.new_event_id(),
                                      event_type=model.SUBSCRIBER_TYPE_PREFIX + "disabled",
                                      source=self.settings.source, subject=f"subscribers/{name}")
        self._record_event(attributes, {"subscriber": name, "reason": detail})

    def record_audit(self, *, event_type: str, event_id: str, subject: str, data: dict[str, Any]) -> None:
        """A background audit's change of state (`violation`, `resolved`: webhook.background_audit.ledger)."""
        self._record_event(model.attributes(event_id=event_id, event_type=model.AUDIT_TYPE_PREFIX + event_type,
                                            source=self.settings.source, subject=subject), data)


class EventDeliverer:
    """The delivery side: spool -> outbox -> subscribers."""

    def __init__(self, settings: EventSettings, *, parent_pid: int | None = None) -> None:
        self.settings = settings
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
        self._counts: dict[str, int] = {}  # counter increments committed with the next outcomes
        self._failures: dict[str, int] = {}  # consecutive retryable failures per subscriber
        self._paused_until: dict[str, float] = {}
        self._last_drop_log = 0.0

    # --- spool -> outbox ---------------------------------------------------------------------------------

    def ingest(self) -> int:
        """Build the events of every unowned spool file, keep the rows some subscriber wants, and move them
        into the outbox (one transaction per file, with the counters), then remove the file.

        The recorders keep within the byte cap by estimate (their view of the outbox is up to a second old);
        here it holds: an event whose rows do not fit beside the undelivered ones is dropped and counted, and
        the oldest dead letters make room for those that fit."""
        moved = 0
        cap = self.settings.max_outbox_bytes
        for path, descriptor in claim_unowned(self.settings.spool_dir):
            try:
                undelivered, dead = self.outbox.stored_bytes()
                rows: list[tuple[str, str, bytes]] = []
                counters: dict[str, int] = {}
                for kind, fields in read_records(path):
                    try:
                        if kind == COUNTER and len(fields) == 2:
                            name = fields[0].decode()
                            counters[name] = counters.get(name, 0) + int(fields[1])
                        routed = self._rows_of(kind, fields)
                    except (ValueError, KeyError, TypeError) as error:  # one bad record must not block the rest
                        log.error("skipping an unreadable record in %s: %s", path.name, error)
                        continue
                    size = sum(len(event) for _, _, event in routed)
                    if routed and undelivered + size > cap:
                        counters["dropped_full"] = counters.get("dropped_full", 0) + 1
                        self._log_drop(f"the outbox holds {undelivered} bytes of undelivered events, its cap is {cap}")
                        continue
                    undelivered += size
                    rows.extend(routed)
                    for _, name, _ in routed:
                        counters[f"enqueued/{name}"] = counters.get(f"enqueued/{name}", 0) + 1
                if dead and undelivered + dead > cap:
                    self.outbox.evict_dead_letters(needed=undelivered + dead - cap)
                self.outbox.enqueue(rows, counters=counters)
                path.unlink()
                moved += len(rows)
            except FileNotFoundError:
                continue
            finally:
                os.close(descriptor)
        return moved

    def _rows_of(self, kind: bytes, fields: list[bytes]) -> list[tuple[str, str, bytes]]:
        """The outbox rows of one spooled record (none for a counter)."""
        if kind == ADMISSION:
            facts = orjson.loads(fields[0])
            attributes, data = model.admission_event(facts, source=self.settings.source)
            object_json = fields[1] if len(fields) > 1 else b""
            return self._route(attributes, data, orjson.loads(object_json) if object_json else None,
                               object_bytes=len(object_json) or int(facts.get("object_bytes", 0)),
                               omitted=str(facts.get("object_omitted", "")))
        if kind == EVENT:
            event = orjson.loads(fields[0])
            return self._route(event["attributes"], event["data"], None)
        return []

    def _route(self, attributes: dict[str, str], data: dict[str, Any], object_: Any, *, object_bytes: int = 0,
               omitted: str = "") -> list[tuple[str, str, bytes]]:
        """Outbox rows of one event: one per subscriber whose filters want it. A subscriber with includeObject
        gets the object (`object_bytes` serialised) when the recorder kept it and it fits the subscriber's
        maxObjectBytes; otherwise `objectOmitted` says why."""
        rows = []
        plain = b""
        for subscriber in self.subscribers.current:
            if not subscriber.wants(attributes):
                continue
            extra: dict[str, Any] = {}
            if subscriber.spec.includeObject:
                limit = subscriber.spec.maxObjectBytes
                if object_bytes > limit:
                    extra["objectOmitted"] = (f"the object is {object_bytes} bytes, larger than the {limit}-byte "
                                              "limit (maxObjectBytes)")
                elif object_ is not None:
                    extra["object"] = object_
                elif omitted or object_bytes:  # or the limit was raised since the recorder left it out
                    extra["objectOmitted"] = omitted or f"the object is {object_bytes} bytes, larger than the limit"
            if extra:
                event = orjson.dumps({"attributes": attributes, "data": {**data, **extra}})
            else:
                plain = plain or orjson.dumps({"attributes": attributes, "data": data})
                event = plain
            rows.append((attributes["id"], subscriber.name, event))
        return rows

    def _log_drop(self, why: str) -> None:
        if time.monotonic() - self._last_drop_log > 10:
            self._last_drop_log = time.monotonic()
            log.error("dropped an event: %s (further drops in the next 10 s are only counted)", why)

    def _count(self, name: str, amount: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + amount

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
                latency = max(time.time() - row.created, 0.0)
                self._count(f"delivered/{name}")
                self._count(f"latency/{name}/{latency_bucket(latency)}")
                self._count(f"latency_ms/{name}", round(latency * 1000))
            elif outcome.kind == "gone":
                self._outcomes.append(DeliveryRecord(row.seq, "dead", error=outcome.detail))
                self._count(f"dead/{name}")
                self._count(f"disabled/{name}")
                self.outbox.disable(name, reason=outcome.detail)
                log.error("subscriber %s answered 410 Gone and is disabled; `webhook events replay --subscriber "
                          "%s` enables it again", name, name)
                self._subscriber_disabled(name, outcome.detail)
            elif outcome.kind == "dead" or row.attempts + 1 >= subscriber.spec.retry.maxAttempts:
                detail = outcome.detail if outcome.kind == "dead" else (
                    f"gave up after {row.attempts + 1} attempts: {outcome.detail}")
                self._outcomes.append(DeliveryRecord(row.seq, "dead", error=detail))
                self._count(f"dead/{name}")
                log.warning("event %s to %s dead-lettered: %s", row.event_id, name, detail)
            else:
                delay = backoff_delay(subscriber.spec.retry, attempts=row.attempts + 1,
                                      retry_after=outcome.retry_after)
                self._outcomes.append(DeliveryRecord(row.seq, "pending", next_attempt=time.time() + delay,
                                                     error=outcome.detail))
                self._count(f"retried/{name}")
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

    def _subscriber_disabled(self, name: str, detail: str) -> None:
        """The `dev.webhook.subscriber.disabled` event, straight into the outbox for the other subscribers."""
        attributes = model.attributes(event_id=model.new_event_id(),
                                      event_type=model.SUBSCRIBER_TYPE_PREFIX + "disabled",
                                      source=self.settings.source, subject=f"subscribers/{name}")
        rows = [row for row in self._route(attributes, {"subscriber": name, "reason": detail}, None)
                if row[1] != name]
        self.outbox.enqueue(rows, counters={f"enqueued/{row[1]}": 1 for row in rows})

    def _every_second(self) -> None:
        if self.subscribers.refresh():
            for name in [n for n in self._clients if n not in {s.name for s in self.subscribers.current}]:
                asyncio.get_running_loop().create_task(self._clients.pop(name).close())
        backlog, (undelivered, _) = self.outbox.backlog(), self.outbox.stored_bytes()
        temporary = self.settings.state_dir / f".{BACKLOG_FILE}.{os.getpid()}"
        temporary.write_text(f"{backlog} {undelivered}")
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
        counts, self._counts = self._counts, {}
        try:
            self.outbox.record(outcomes, counters=counts)
        except Exception:
            self._outcomes = outcomes + self._outcomes  # try again next turn; leases cover a crash meanwhile
            for name, amount in counts.items():
                self._count(name, amount)
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*unfinished, return_exceptions=True), timeout=2.0)
            finished = {outcome.seq for outcome in self._outcomes}
            self.outbox.release([seq for seq in leftover if seq not in finished])
            if leftover:
                log.warning("shutdown: %d deliveries left in the outbox for the next start", len(leftover))
        self._flush()
        with contextlib.suppress(Exception):
            self.ingest()  # what the server spooled last goes to the outbox now rather than at the next start
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=2.0)
        self._clients.clear()
        self.outbox.close()
