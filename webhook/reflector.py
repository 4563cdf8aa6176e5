"""Reflectors: a cache of one kind of object (or of the ConfigMaps that one paramRef picks), kept up to date
by a daemon thread that lists then watches it through the `kubernetes` client.

A reflector lists (in pages), then watches from the list's resourceVersion with bookmarks; lists again every
`resync_seconds` and when the watch says 410 Gone; after an error, reconnects with exponential backoff and full
jitter, watching on from the last resourceVersion seen. It keeps what its `trim` returns. Past its cap (`limit`
objects, or a `ByteBudget` shared by the params caches, each object counted as its JSON length plus
`PARAM_OBJECT_OVERHEAD`) an object is left out and its namespace becomes incomplete: lookups there raise
ClusterUnavailable until a relist finds room. Lookups (`check`) also raise it before the first list, and when
the watch has been failing for over `stale_after_seconds`. A relist with a budget reuses the objects it already
holds at the same resourceVersion, so that it does not count (or hold) two copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from webhook.state import ClusterUnavailable

log = logging.getLogger("webhook.cluster")  # the cluster state's logger: its messages say "cluster state"
MIB = 1024 * 1024
# Counted per cached ConfigMap on top of its JSON length, for the dicts and strings that hold it, so that many
# small objects are bounded too (tracemalloc: 5,000 small ConfigMaps held 1.2 KiB each and were counted 1.28).
PARAM_OBJECT_OVERHEAD = 1024


class WatchSettings(Protocol):
    """What a reflector reads from its owner (`webhook.cluster.LiveClusterState`), each time it needs it."""

    page_size: int
    resync_seconds: float
    stale_after_seconds: float
    watch_timeout_seconds: float
    backoff_seconds: tuple[float, float]
    request_timeout: float


@dataclasses.dataclass
class _Store:
    """Trimmed objects of one kind by namespace ("" for cluster-scoped kinds) and name; with a byte budget, the
    size of each, and which ones a relist took over from the store it replaces (counted there, not here)."""

    items: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    count: int = 0
    truncated: set[str] = dataclasses.field(default_factory=set)  # namespaces that lost objects to the cap
    sizes: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    size: int = 0  # of every object held
    taken: int = 0  # of the budget: `size` less what `reused` objects count in the store being replaced
    reused: set[tuple[str, str]] = dataclasses.field(default_factory=set)


class ByteBudget:
    """The bytes that the ConfigMap caches of all paramRefs may hold together."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.lock = limit, 0, threading.Lock()

    def take(self, size: int) -> bool:
        with self.lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self.lock:
            self.used -= size

    def move(self, *, released: int, taken: int) -> None:
        """A relist's store replaces the old one: never more than before (reused objects were counted there)."""
        with self.lock:
            self.used += taken - released


def _param_size(value: Mapping[str, Any]) -> int:
    return len(orjson.dumps(value)) + PARAM_OBJECT_OVERHEAD


class _Expired(Exception):
    """The watch's resourceVersion is gone (410): relist."""


def backoff(attempt: int, base: float, cap: float) -> float:
    delay = min(cap, base * 2 ** min(attempt, 30))
    return random.uniform(delay / 2, delay)  # noqa: S311 (jitter, not a secret)


class Reflector:
    """One kind (or one paramRef's ConfigMaps): its cache, and the daemon thread that lists then watches it."""

    def __init__(self, owner: WatchSettings, resource: str, kind: str, list_call: Callable[..., Any],
                 trim: Callable[[Mapping[str, Any]], Any], limit: int | None = None, *,
                 arguments: Mapping[str, Any] | None = None, budget: ByteBudget | None = None,
                 page_size: int | None = None, label: str | None = None) -> None:
        self.owner, self.resource, self.kind, self.list_call, self.trim, self.limit = (
            owner, resource, kind, list_call, trim, limit)
        self.arguments, self.budget = dict(arguments or {}), budget  # arguments: what narrows list and watch
        self.page_size = page_size or owner.page_size
        self.label = label or f"the cluster's {resource}"  # how messages name the cache
        self.lock, self.store, self.dropped = threading.Lock(), _Store(), 0  # dropped: left out (the cap)
        self.left_out: str | None = None  # why the last object was left out
        self.synced, self.errors, self.last_error_at, self.listed_at = False, 0, 0.0, 0.0
        self.failing_since: float | None = None  # monotonic time of the first error since the last success
        self.last_error: str | None = None
        self.lists: dict[str, int] = {"initial": 0, "resync": 0, "expired": 0}
        self.resource_version: str | None = None
        self.response: Any = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"webhook-cluster-{resource}", daemon=True)

    def _put(self, store: _Store, raw: Mapping[str, Any], *, deleted: bool = False,
             previous: _Store | None = None) -> None:
        """Add, replace or remove one object; with a budget, `previous` (the store a relist replaces) lends
        the objects it holds at the same resourceVersion, so that a relist does not hold two copies."""
        meta = raw.get("metadata") or {}
        key = namespace, name = str(meta.get("namespace") or ""), str(meta.get("name", ""))
        value = None if deleted else self.trim(raw)
        size, reused = 0, False
        if value is not None and self.budget is not None:
            old = previous.items.get(namespace, {}).get(name) if previous is not None else None
            version = value["metadata"].get("resourceVersion")
            if previous is not None and old is not None and version and key in previous.sizes \
                    and old["metadata"].get("resourceVersion") == version:
                value, size, reused = old, previous.sizes[key], True
            else:
                size = _param_size(value)
        with self.lock:
            objects = store.items.get(namespace)
            if objects is not None and name in objects:
                del objects[name]
                store.count -= 1
                if not objects:
                    del store.items[namespace]
                self._forget(store, key)
            if value is None:
                return
            if self.limit is not None and store.count >= self.limit:
                self._leave_out(store, namespace, f"the cap of {self.limit} {self.kind}s is reached")
            elif self.budget is not None and not reused and not self.budget.take(size):
                self._leave_out(store, namespace, f"the bound of {self.budget.limit / MIB:g} MiB of cached params "
                                f"data (--cluster-params-max-mb) is reached", f"{self.kind} {namespace}/{name} "
                                f"({size} bytes) is left out")
            else:
                store.items.setdefault(namespace, {})[name] = value
                store.count += 1
                if self.budget is not None:
                    store.sizes[key] = size
                    store.size += size
                    if reused:
                        store.reused.add(key)
                    else:
                        store.taken += size

    def _forget(self, store: _Store, key: tuple[str, str]) -> None:
        """Count a removed object's bytes out (back to the budget unless the store being replaced holds it)."""
        size = store.sizes.pop(key, None)
        if size is None or self.budget is None:
            return
        store.size -= size
        if key in store.reused:
            store.reused.discard(key)
        else:
            store.taken -= size
            self.budget.give(size)

    def _leave_out(self, store: _Store, namespace: str, why: str, what: str = "") -> None:
        if not store.truncated:
            log.warning("cluster state: %s: %s%s; lookups in the namespaces that lost one raise ClusterUnavailable "
                        "(a policy fault under its failurePolicy) until a relist finds room", self.label, why,
                        f" ({what}; further ones are counted in metrics)" if what else "")
        store.truncated.add(namespace)
        self.dropped += 1
        self.left_out = why

    def _release(self, store: _Store) -> None:
        """Give a store's bytes back to the budget (a relist that did not finish, or a watch that ended)."""
        if self.budget is not None:
            self.budget.give(store.taken)
            store.taken = 0

    def in_namespace(self, namespace: str) -> tuple[Any, ...]:
        with self.lock:
            if namespace in self.store.truncated:
                raise ClusterUnavailable(f"{self.label} of namespace {namespace!r} are incomplete: {self.left_out}")
            return tuple(self.store.items.get(namespace, {}).values())

    def check(self) -> None:
        """Raise ClusterUnavailable when not synced yet, or failing for longer than stale_after_seconds."""
        if not self.synced:
            error = f" (last error: {self.last_error})" if self.last_error else ""
            raise ClusterUnavailable(f"{self.label} are not synced yet{error}")
        since = self.failing_since
        if since is not None and time.monotonic() - since > self.owner.stale_after_seconds:
            raise ClusterUnavailable(f"the {self.resource} watch has been failing for "
                                     f"{time.monotonic() - since:.0f}s: {self.last_error}")

    def stop(self) -> None:
        """End the thread: its open request is cut; it gives its bytes back as it ends."""
        self.stop_event.set()
        with contextlib.suppress(Exception):  # none, or already released: nothing to unblock
            self.response.shutdown()

    def _run(self) -> None:
        owner, stop = self.owner, self.stop_event
        attempt = 0
        reason: str | None = "initial"
        try:
            while not stop.is_set():
                try:
                    if reason is not None:
                        self._list(reason)
                        attempt, reason = 0, None
                    if self._watch():
                        attempt = 0
                    elif not stop.is_set():  # ended at once without a word: do not hammer the API server
                        stop.wait(backoff(attempt, *owner.backoff_seconds))
                        attempt += 1
                    if time.monotonic() >= self.listed_at + owner.resync_seconds:
                        reason = "resync"
                except _Expired:
                    log.info("cluster state: the %s watch expired (410 Gone); listing again", self.resource)
                    reason = "expired"
                except Exception as error:
                    if stop.is_set():
                        break
                    if getattr(error, "status", None) == 410:  # the watch itself answered 410 Gone
                        reason = "expired"
                        continue
                    self._failed(error)
                    stop.wait(backoff(attempt, *owner.backoff_seconds))
                    attempt += 1
        finally:
            if self.budget is not None:  # a params cache that ends (a reload dropped its paramRef, or stop)
                with self.lock:
                    store, self.store = self.store, _Store()
                self._release(store)

    def _failed(self, error: Exception | None) -> None:
        """Record an error (None: a success, which ends a failing spell)."""
        if error is None:
            if self.failing_since is not None:
                log.info("cluster state: %s work again after %.1fs", self.resource,
                         time.monotonic() - self.failing_since)
            self.failing_since = None
            return
        while isinstance(getattr(error, "reason", None), Exception):  # urllib3: MaxRetryError(reason=the cause)
            error = getattr(error, "reason")  # noqa: B009
        status = getattr(error, "status", None)
        message = f"{status} {getattr(error, 'reason', '')}".strip() if status else f"{type(error).__name__}: {error}"
        self.last_error = f"{self.resource}: {message}"[:500]
        self.last_error_at = time.time()
        self.errors += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("cluster state: %s; retrying with backoff (further errors are counted in metrics)",
                        self.last_error)

    def _call(self, **arguments: Any) -> Any:
        response = self.list_call(_preload_content=False, **self.arguments, **arguments)
        self.response = response
        if self.stop_event.is_set():  # stop() may have looked for a response before this one existed
            response.close()
        return response

    def _list(self, reason: str) -> None:
        fresh = _Store()
        previous = self.store if self.budget is not None else None
        token: str | None = None
        version: str | None = None
        try:
            while True:
                response = self._call(limit=self.page_size, _continue=token,
                                      _request_timeout=self.owner.request_timeout)
                try:
                    body = orjson.loads(response.data)
                finally:
                    response.release_conn()
                    self.response = None
                for item in body.get("items") or ():
                    self._put(fresh, item, previous=previous)
                metadata = body.get("metadata") or {}
                version = version or metadata.get("resourceVersion")
                token = metadata.get("continue") or None
                if token is None:
                    break
                if self.stop_event.is_set():
                    self._release(fresh)
                    return
        except BaseException:
            self._release(fresh)
            raise
        if self.budget is not None and previous is not None:  # the new store counts what it took over, too
            self.budget.move(released=previous.taken, taken=fresh.size - fresh.taken)
            previous.taken, fresh.taken = 0, fresh.size
            fresh.reused.clear()
        with self.lock:
            self.store = fresh
        self.resource_version = version
        self.listed_at = time.monotonic()
        self.lists[reason] += 1
        self.synced = True
        self._failed(None)

    def _watch(self) -> bool:
        """Watch until the server ends the watch (its timeout, before the next resync is due); True when the
        watch got going (events, or at least a while), False when it ended at once. Raises _Expired on 410."""
        owner = self.owner
        started = time.monotonic()
        timeout = max(1, int(min(owner.watch_timeout_seconds, self.listed_at + owner.resync_seconds - started)))
        response = self._call(watch=True, resource_version=self.resource_version, allow_watch_bookmarks=True,
                              timeout_seconds=timeout, _request_timeout=(owner.request_timeout, timeout + 30))
        events = 0
        try:
            self._failed(None)
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._event(orjson.loads(line))
                        events += 1
                if self.stop_event.is_set():
                    break
        finally:
            self.response = None
            response.close()  # never back into the pool with a stream half read
            response.release_conn()
        return events > 0 or time.monotonic() - started >= 1.0

    def _event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise RuntimeError(f"watch error {obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._put(self.store, obj, deleted=kind == "DELETED")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:  # BOOKMARK events carry only this
            self.resource_version = version

