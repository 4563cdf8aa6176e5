"""The durable outbox: one SQLite row per (event, subscriber), claimed with leases, so nothing is lost.

WAL mode, one connection per process guarded by a lock. Several processes (uvicorn workers, the CLI) may
open the same file: claims are single UPDATE ... RETURNING statements, so a row is in flight in one place
at a time, and a lease that runs out (a killed process) makes the row claimable again.

The bytes of the stored events are summed by triggers in the same transactions as the rows (undelivered
apart from the rest), so every process reads the total from one row instead of scanning the table; a
delivered row keeps no event (nothing reads it again), so what is stored is undelivered rows and dead letters.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    event BLOB NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    lease_until REAL,
    last_error TEXT,
    finished REAL,
    UNIQUE (event_id, subscriber)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt);
CREATE INDEX IF NOT EXISTS deliveries_claim ON deliveries (subscriber, state, next_attempt);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS disabled_subscribers (name TEXT PRIMARY KEY, at REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stored_bytes (undelivered INTEGER PRIMARY KEY, total INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS deliveries_bytes_added AFTER INSERT ON deliveries BEGIN
    UPDATE stored_bytes SET total = total + length(NEW.event)
    WHERE undelivered = (NEW.state IN ('pending', 'inflight'));
END;
CREATE TRIGGER IF NOT EXISTS deliveries_bytes_removed AFTER DELETE ON deliveries BEGIN
    UPDATE stored_bytes SET total = total - length(OLD.event)
    WHERE undelivered = (OLD.state IN ('pending', 'inflight'));
END;
CREATE TRIGGER IF NOT EXISTS deliveries_bytes_moved AFTER UPDATE OF state, event ON deliveries
WHEN (OLD.state IN ('pending', 'inflight')) != (NEW.state IN ('pending', 'inflight'))
    OR length(OLD.event) != length(NEW.event) BEGIN
    UPDATE stored_bytes SET total = total - length(OLD.event)
    WHERE undelivered = (OLD.state IN ('pending', 'inflight'));
    UPDATE stored_bytes SET total = total + length(NEW.event)
    WHERE undelivered = (NEW.state IN ('pending', 'inflight'));
END;
"""
_SUM_BYTES = ("SELECT coalesce(sum(CASE WHEN state IN ('pending', 'inflight') THEN length(event) END), 0), "
              "coalesce(sum(CASE WHEN state NOT IN ('pending', 'inflight') THEN length(event) END), 0) "
              "FROM deliveries")
_ADD_COUNTER = ("INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value")


@dataclass(frozen=True, slots=True)
class Claimed:
    seq: int
    event_id: str
    subscriber: str
    event: bytes
    attempts: int
    created: float


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What became of one claimed row: delivered, pending again (retry at next_attempt), or dead."""

    seq: int
    state: str
    next_attempt: float = 0.0
    error: str = ""


@dataclass(frozen=True, slots=True)
class SubscriberStatus:
    name: str
    pending: int
    delivered: int
    dead: int
    oldest_pending_age: float | None


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        if not path.exists():  # owner-only, as the spool files; SQLite gives its -wal and -shm the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):  # files made before 0600 was the rule keep their mode
                if existing.stat().st_mode & 0o077:
                    existing.chmod(0o600)
        self._connection = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            self._connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._connection.execute("PRAGMA wal_autocheckpoint=0")
            self._connection.executescript(_SCHEMA)
        self._transaction(self._restore_stored_bytes, None)

    @staticmethod
    def _restore_stored_bytes(cursor: sqlite3.Cursor) -> int:
        """The byte totals from the rows, once at open (an outbox made before they were kept has none)."""
        undelivered, kept = cursor.execute(_SUM_BYTES).fetchone()
        cursor.executemany("INSERT OR REPLACE INTO stored_bytes (undelivered, total) VALUES (?, ?)",
                           [(1, undelivered), (0, kept)])
        return 0

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def _execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    # --- request path ------------------------------------------------------------------------------------

    def enqueue(self, rows: Iterable[tuple[str, str, bytes]], *, counters: Mapping[str, int] | None = None,
                now: float | None = None) -> int:
        """Insert (event_id, subscriber, event) rows and add to counters, in one transaction; a repeated
        (event, subscriber) pair is ignored."""
        moment = time.time() if now is None else now
        values = [(event_id, subscriber, event, moment, moment) for event_id, subscriber, event in rows]

        def insert(cursor: sqlite3.Cursor) -> int:
            cursor.executemany(
                "INSERT OR IGNORE INTO deliveries (event_id, subscriber, event, created, next_attempt) "
                "VALUES (?, ?, ?, ?, ?)", values)
            return int(cursor.rowcount)

        return self._transaction(insert, counters) if values or counters else 0

    def _transaction(self, work: Callable[[sqlite3.Cursor], int], counters: Mapping[str, int] | None) -> int:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                result = work(cursor)
                if counters:
                    cursor.executemany(_ADD_COUNTER, [(name, amount) for name, amount in counters.items() if amount])
                cursor.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
        return result

    # --- delivery ----------------------------------------------------------------------------------------

    def claim(self, *, subscribers: Sequence[str], limit: int, lease_seconds: float,
              now: float | None = None) -> list[Claimed]:
        """Due rows of these subscribers (pending, or in flight with an expired lease), leased to the caller:
        the longest due first (no order is promised). Each part walks the (subscriber, state, next_attempt)
        index and stops at `limit`: the cost does not grow with the backlog (ordering all due rows by seq did,
        and took most of the deliverer's time at saturation)."""
        if not subscribers or limit <= 0:
            return []
        moment = time.time() if now is None else now
        marks = ",".join("?" for _ in subscribers)
        rows = self._execute(
            f"UPDATE deliveries SET state = 'inflight', lease_until = ? WHERE seq IN ("  # noqa: S608 - marks only
            f"  SELECT seq FROM (SELECT seq FROM deliveries WHERE subscriber IN ({marks}) AND state = 'pending'"
            f"    AND next_attempt <= ? ORDER BY next_attempt LIMIT ?)"
            f"  UNION ALL"
            f"  SELECT seq FROM (SELECT seq FROM deliveries WHERE subscriber IN ({marks}) AND state = 'inflight'"
            f"    AND lease_until < ? LIMIT ?)"
            f"  LIMIT ?) "
            f"RETURNING seq, event_id, subscriber, event, attempts, created",
            (moment + lease_seconds, *subscribers, moment, limit, *subscribers, moment, limit, limit))
        return sorted((Claimed(*row) for row in rows), key=lambda c: c.seq)

    def record(self, outcomes: Sequence[DeliveryRecord], *, counters: Mapping[str, int] | None = None,
               now: float | None = None) -> None:
        """Several delivery outcomes, and the counters they move, in one transaction (one commit per loop turn,
        not per event)."""
        if not outcomes and not counters:
            return
        moment = time.time() if now is None else now
        delivered = [(moment, o.seq) for o in outcomes if o.state == "delivered"]
        retried = [(o.next_attempt, o.error[:1000], o.seq) for o in outcomes if o.state == "pending"]
        dead = [(moment, o.error[:1000], o.seq) for o in outcomes if o.state == "dead"]

        def update(cursor: sqlite3.Cursor) -> int:
            cursor.executemany("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, event = x'', "
                               "finished = ?, lease_until = NULL, last_error = NULL WHERE seq = ?", delivered)
            cursor.executemany("UPDATE deliveries SET state = 'pending', attempts = attempts + 1, "
                               "next_attempt = ?, lease_until = NULL, last_error = ? WHERE seq = ?", retried)
            cursor.executemany("UPDATE deliveries SET state = 'dead', attempts = attempts + 1, finished = ?, "
                               "lease_until = NULL, last_error = ? WHERE seq = ?", dead)
            return len(outcomes)

        self._transaction(update, counters)

    def release(self, seqs: Sequence[int]) -> None:
        """Give claimed rows back without counting an attempt (shutdown before they were sent)."""
        for seq in seqs:
            self._execute("UPDATE deliveries SET state = 'pending', lease_until = NULL "
                          "WHERE seq = ? AND state = 'inflight'", (seq,))

    # --- subscribers -------------------------------------------------------------------------------------

    def disable(self, name: str, *, reason: str) -> None:
        self._execute("INSERT OR REPLACE INTO disabled_subscribers (name, at, reason) VALUES (?, ?, ?)",
                      (name, time.time(), reason[:500]))

    def enable(self, name: str) -> None:
        self._execute("DELETE FROM disabled_subscribers WHERE name = ?", (name,))

    def disabled(self) -> dict[str, str]:
        return {name: reason for name, reason in self._execute("SELECT name, reason FROM disabled_subscribers")}

    # --- operations --------------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Totals since the outbox was created: `enqueued/NAME`, `delivered/NAME`, `retried/NAME`,
        `dead/NAME`, `disabled/NAME`, `evicted/NAME`, `latency/NAME/BUCKET`, `latency_ms/NAME`, `dropped_full`,
        `dropped_error`."""
        return {name: int(value) for name, value in self._execute("SELECT name, value FROM counters")}

    def stored_bytes(self) -> tuple[int, int]:
        """Bytes of the events kept: (undelivered, the rest: dead letters)."""
        totals = dict(self._execute("SELECT undelivered, total FROM stored_bytes"))
        return int(totals.get(1, 0)), int(totals.get(0, 0))

    def evict_dead_letters(self, *, needed: int) -> int:
        """Delete the oldest dead letters until `needed` bytes are freed or none are left, counted as
        `evicted/NAME` in the same transaction: under the byte cap new events win over old dead letters."""
        def evict(cursor: sqlite3.Cursor) -> int:
            freed = 0
            evicted: dict[str, int] = {}
            while freed < needed:
                oldest = cursor.execute("SELECT seq, subscriber, length(event) FROM deliveries WHERE state = 'dead' "
                                        "ORDER BY seq LIMIT 32").fetchall()
                if not oldest:
                    break
                for seq, subscriber, size in oldest:
                    cursor.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))
                    freed += int(size)
                    evicted[f"evicted/{subscriber}"] = evicted.get(f"evicted/{subscriber}", 0) + 1
                    if freed >= needed:
                        break
            cursor.executemany(_ADD_COUNTER, list(evicted.items()))
            return freed

        return self._transaction(evict, None) if needed > 0 else 0

    def backlog(self) -> int:
        """Rows not yet delivered nor dead: what the row cap counts."""
        return int(self._execute("SELECT count(*) FROM deliveries WHERE state IN ('pending', 'inflight')")[0][0])

    def status(self, *, now: float | None = None) -> list[SubscriberStatus]:
        moment = time.time() if now is None else now
        rows = self._execute(
            "SELECT subscriber, "
            "  sum(state IN ('pending', 'inflight')), sum(state = 'delivered'), sum(state = 'dead'), "
            "  min(CASE WHEN state IN ('pending', 'inflight') THEN created END) "
            "FROM deliveries GROUP BY subscriber ORDER BY subscriber")
        return [SubscriberStatus(name, int(pending), int(delivered), int(dead),
                                 None if oldest is None else moment - oldest)
                for name, pending, delivered, dead, oldest in rows]

    def dead_letters(self, *, subscriber: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = ("SELECT seq, event_id, subscriber, attempts, last_error, finished FROM deliveries "
                 "WHERE state = 'dead'")
        parameters: list[Any] = []
        if subscriber is not None:
            query += " AND subscriber = ?"
            parameters.append(subscriber)
        query += " ORDER BY seq LIMIT ?"
        parameters.append(limit)
        keys = ("seq", "event_id", "subscriber", "attempts", "last_error", "finished")
        return [dict(zip(keys, row, strict=True)) for row in self._execute(query, parameters)]

    def replay(self, *, event_id: str | None = None, subscriber: str | None = None) -> int:
        """Dead letters back to pending with a fresh attempt budget; also re-enables the subscriber."""
        query = "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt = ?, finished = NULL " \
                "WHERE state = 'dead'"
        parameters: list[Any] = [time.time()]
        if event_id is not None:
            query += " AND event_id = ?"
            parameters.append(event_id)
        if subscriber is not None:
            query += " AND subscriber = ?"
            parameters.append(subscriber)
            self.enable(subscriber)
        with self._lock:
            return int(self._connection.execute(query, parameters).rowcount)

    def checkpoint(self) -> None:
        """Copy the WAL into the database file; writers never do it themselves (see wal_autocheckpoint)."""
        with self._lock:
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def compact(self, *, delivered_older_than: float, dead_older_than: float) -> int:
        """Drop old delivered rows and old dead letters, then give free pages back to the file system."""
        with self._lock:
            removed = self._connection.execute(
                "DELETE FROM deliveries WHERE (state = 'delivered' AND finished < ?) "
                "OR (state = 'dead' AND finished < ?)", (delivered_older_than, dead_older_than)).rowcount
            self._connection.execute("PRAGMA incremental_vacuum")
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return int(removed)
