"""The live cluster state (a `webhook.state.ClusterState`): watched caches of Namespaces and Pods, and of
ConfigMaps for params, through the `kubernetes` client.

Each kind has a reflector thread: list (in pages), then watch from the list's resourceVersion with bookmarks;
list again every `resync_seconds` and when the watch says 410 Gone; after an error, reconnect with exponential
backoff and full jitter, watching on from the last resourceVersion seen. Only trimmed read-only copies are
kept (see `_trim_pod`); Succeeded and Failed Pods are dropped; past `max_pods` a namespace that lost a Pod is
incomplete, and its lookups raise ClusterUnavailable until a relist finds room. Lookups also raise it before
the first list of every kind, and when the kind's watch has been failing for over `stale_after_seconds`: in a
policy that is a fault, so its failurePolicy decides. Once synced the state stays synced (so does readiness):
losing the API server must not take the webhook out of its Service. Each server process (`--workers`) runs
watches of its own: N workers put N times the watch load on the API server and hold N copies of the caches.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from webhook.policies.compiled import PolicySet
from webhook.policies.matching import labels_of, selector_matches
from webhook.policies.model import LabelSelector, ParamKind, ParamRef
from webhook.policies.params import ParamObject, ParamStore, Resolution
from webhook.state import ClusterUnavailable

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from webhook.config import Settings

log = logging.getLogger("webhook.cluster")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # a copy of the object: not kept
FINISHED_PHASES = ("Succeeded", "Failed")
CONFIG_MAP = ("v1", "ConfigMap")


class FrozenDict(dict[str, Any]):
    """A dict that refuses changes: cached objects are shared by every request, and equal parts of them by
    several Pods. `copy.deepcopy(...)` (or `dict(...)`) makes a plain, mutable copy."""

    __slots__ = ("__weakref__",)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("objects of the cluster state are read-only; copy one first (copy.deepcopy)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {key: copy.deepcopy(value, memo) for key, value in self.items()}


_SHARED: weakref.WeakValueDictionary[int, FrozenDict] = weakref.WeakValueDictionary()  # by content hash


def _content(value: Any) -> Any:
    """A hashable key for plain data (dicts, lists, strings, numbers)."""
    if isinstance(value, dict):
        return "{", tuple((key, _content(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return "[", tuple(_content(item) for item in value)
    return value if isinstance(value, str) else (type(value).__name__, value)


def _freeze(value: Any) -> Any:
    """Read-only: dicts become FrozenDicts, lists tuples; strings are interned (they repeat across Pods)."""
    if isinstance(value, dict):
        return FrozenDict({sys.intern(str(key)): _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return sys.intern(value) if isinstance(value, str) else value


def _shared(value: dict[str, Any]) -> FrozenDict:
    """`value` frozen, one copy for all that are equal: a workload's replicas have the same spec and labels."""
    key = _content(value)
    found = _SHARED.get(hash(key))
    if found is not None and _content(found) == key:
        return found
    frozen: FrozenDict = _freeze(value)
    if found is None:  # after a (rare) hash collision the first value keeps the place
        _SHARED[hash(key)] = frozen
    return frozen


def _trim_pod(raw: Mapping[str, Any]) -> FrozenDict | None:
    """metadata (name, namespace, uid, labels), spec (containers and initContainers with name, resources and an
    init container's restartPolicy, overhead, Pod-level resources), status.phase; None for a Pod that no longer
    counts against quotas (Succeeded, Failed)."""
    phase = (raw.get("status") or {}).get("phase") or ""
    if phase in FINISHED_PHASES:
        return None
    meta, spec = raw.get("metadata") or {}, raw.get("spec") or {}
    kept: dict[str, Any] = {}
    for key in ("containers", "initContainers"):
        if key == "containers" or spec.get(key):
            kept[key] = [{field: container[field] for field in ("name", "resources", "restartPolicy")
                          if field in container} for container in spec.get(key) or ()]
    kept.update({key: spec[key] for key in ("overhead", "resources") if spec.get(key)})
    metadata: dict[str, Any] = {"name": str(meta.get("name", "")), "uid": str(meta.get("uid", "")),
                                "namespace": sys.intern(str(meta.get("namespace") or ""))}
    if meta.get("labels"):
        metadata["labels"] = _shared(meta["labels"])
    return FrozenDict({"apiVersion": "v1", "kind": "Pod", "metadata": FrozenDict(metadata), "spec": _shared(kept),
                       "status": _shared({"phase": phase})})


def _trim_namespace(raw: Mapping[str, Any]) -> Any:
    meta = raw.get("metadata") or {}
    annotations = {key: value for key, value in (meta.get("annotations") or {}).items() if key != LAST_APPLIED}
    return _freeze({"name": str(meta.get("name", "")), "labels": meta.get("labels") or {}, "annotations": annotations})


def _trim_config_map(raw: Mapping[str, Any]) -> dict[str, Any]:
    meta = raw.get("metadata") or {}
    metadata = {key: meta[key] for key in ("name", "namespace", "labels", "uid", "resourceVersion") if key in meta}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(raw.get("data") or {})}


@dataclasses.dataclass
class _Store:
    """Trimmed objects of one kind by namespace ("" for cluster-scoped kinds) and name."""

    items: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    count: int = 0
    truncated: set[str] = dataclasses.field(default_factory=set)  # namespaces that lost objects to the cap


class _Expired(Exception):
    """The watch's resourceVersion is gone (410): relist."""


def _backoff(attempt: int, base: float, cap: float) -> float:
    delay = min(cap, base * 2 ** min(attempt, 30))
    return random.uniform(delay / 2, delay)  # noqa: S311 (jitter, not a secret)


class _Reflector:
    """One kind: its cache, and the daemon thread that lists then watches it into the cache."""

    def __init__(self, owner: LiveClusterState, resource: str, kind: str, list_call: Callable[..., Any],
                 trim: Callable[[Mapping[str, Any]], Any], limit: int | None = None) -> None:
        self.owner, self.resource, self.kind, self.list_call, self.trim, self.limit = (
            owner, resource, kind, list_call, trim, limit)
        self.lock, self.store, self.dropped = threading.Lock(), _Store(), 0  # dropped: left out (the cap)
        self.synced, self.errors, self.last_error_at, self.listed_at = False, 0, 0.0, 0.0
        self.failing_since: float | None = None  # monotonic time of the first error since the last success
        self.last_error: str | None = None
        self.lists: dict[str, int] = {"initial": 0, "resync": 0, "expired": 0}
        self.resource_version: str | None = None
        self.response: Any = None
        self.thread = threading.Thread(target=self._run, name=f"webhook-cluster-{resource}", daemon=True)

    def _put(self, store: _Store, raw: Mapping[str, Any], *, deleted: bool = False) -> None:
        meta = raw.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name", ""))
        value = None if deleted else self.trim(raw)
        with self.lock:
            objects = store.items.get(namespace)
            present = objects is not None and name in objects
            if value is None:
                if objects is not None and present:
                    del objects[name]
                    store.count -= 1
                    if not objects:
                        del store.items[namespace]
            elif not present and self.limit is not None and store.count >= self.limit:
                if not store.truncated:
                    log.warning("cluster state: the cap of %d %ss is reached; lookups in namespaces that lost one "
                                "raise ClusterUnavailable until a relist finds room", self.limit, self.kind)
                store.truncated.add(namespace)
                self.dropped += 1
            else:
                store.count += 0 if present else 1
                store.items.setdefault(namespace, {})[name] = value

    def in_namespace(self, namespace: str) -> tuple[Any, ...]:
        with self.lock:
            if namespace in self.store.truncated:
                raise ClusterUnavailable(f"the {self.kind}s of namespace {namespace!r} are incomplete: the cap of "
                                         f"{self.limit} {self.kind}s is reached")
            return tuple(self.store.items.get(namespace, {}).values())

    def check(self) -> None:
        """Raise ClusterUnavailable when not synced yet, or failing for longer than stale_after_seconds."""
        if not self.synced:
            error = f" (last error: {self.last_error})" if self.last_error else ""
            raise ClusterUnavailable(f"the cluster's {self.resource} are not synced yet{error}")
        since = self.failing_since
        if since is not None and time.monotonic() - since > self.owner.stale_after_seconds:
            raise ClusterUnavailable(f"the {self.resource} watch has been failing for "
                                     f"{time.monotonic() - since:.0f}s: {self.last_error}")

    def _run(self) -> None:
        owner, stop = self.owner, self.owner.stop_event
        attempt = 0
        reason: str | None = "initial"
        while not stop.is_set():
            try:
                if reason is not None:
                    self._list(reason)
                    attempt, reason = 0, None
                if self._watch():
                    attempt = 0
                elif not stop.is_set():  # ended at once without a word: do not hammer the API server
                    stop.wait(_backoff(attempt, *owner.backoff_seconds))
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
                stop.wait(_backoff(attempt, *owner.backoff_seconds))
                attempt += 1

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
        response = self.list_call(_preload_content=False, **arguments)
        self.response = response
        if self.owner.stop_event.is_set():  # stop() may have looked for a response before this one existed
            response.close()
        return response

    def _list(self, reason: str) -> None:
        fresh = _Store()
        token: str | None = None
        version: str | None = None
        while True:
            response = self._call(limit=self.owner.page_size, _continue=token,
                                  _request_timeout=self.owner.request_timeout)
            try:
                body = orjson.loads(response.data)
            finally:
                response.release_conn()
                self.response = None
            for item in body.get("items") or ():
                self._put(fresh, item)
            metadata = body.get("metadata") or {}
            version = version or metadata.get("resourceVersion")
            token = metadata.get("continue") or None
            if token is None:
                break
            if self.owner.stop_event.is_set():
                return
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
                if owner.stop_event.is_set():
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


class LiveClusterState:
    """A `ClusterState` kept up to date by watches (see the module documentation), and the Prometheus
    collector of its metrics."""

    def __init__(self, api_client: Any, *, config_maps: bool = False, resync_seconds: float = 300.0,
                 stale_after_seconds: float = 60.0, max_pods: int = 200_000, max_config_maps: int = 100_000,
                 watch_timeout_seconds: float = 240.0, backoff_seconds: tuple[float, float] = (0.5, 30.0),
                 request_timeout: float = 30.0, page_size: int = 500) -> None:
        from kubernetes import client

        self.api_client, self.resync_seconds, self.stale_after_seconds = api_client, resync_seconds, stale_after_seconds
        self.watch_timeout_seconds, self.backoff_seconds = watch_timeout_seconds, backoff_seconds
        self.request_timeout, self.page_size = request_timeout, page_size
        self.stop_event = threading.Event()
        core = client.CoreV1Api(api_client)
        self._namespaces = _Reflector(self, "namespaces", "Namespace", core.list_namespace, _trim_namespace)
        self._pods = _Reflector(self, "pods", "Pod", core.list_pod_for_all_namespaces, _trim_pod, max_pods)
        self._config_maps = _Reflector(self, "configmaps", "ConfigMap", core.list_config_map_for_all_namespaces,
                                       _trim_config_map, max_config_maps) if config_maps else None
        self._reflectors = [self._namespaces, self._pods, *([self._config_maps] if self._config_maps else [])]
        self._overlay: tuple[PolicySet, PolicySet] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveClusterState:
        return cls(api_client_for(kubeconfig=settings.kubeconfig, context=settings.kube_context,
                                  in_cluster=settings.in_cluster),
                   config_maps=settings.cluster_params, resync_seconds=settings.cluster_resync_seconds,
                   stale_after_seconds=settings.cluster_stale_after_seconds, max_pods=settings.cluster_max_pods)

    def start(self) -> None:
        for reflector in self._reflectors:
            reflector.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the watches: open requests are cut, the threads are joined (each within `timeout`)."""
        self.stop_event.set()
        for reflector in self._reflectors:
            with contextlib.suppress(Exception):  # none, or already released: nothing to unblock
                reflector.response.shutdown()
        for reflector in (reflector for reflector in self._reflectors if reflector.thread.is_alive()):
            reflector.thread.join(timeout)
        with contextlib.suppress(Exception):
            self.api_client.close()

    @property
    def synced(self) -> bool:
        return all(reflector.synced for reflector in self._reflectors)

    @property
    def healthy(self) -> bool:
        return all(reflector.failing_since is None for reflector in self._reflectors)

    @property
    def last_error(self) -> str | None:
        return max(self._reflectors, key=lambda reflector: reflector.last_error_at).last_error

    @property
    def problem(self) -> str | None:
        """What readiness says about the cluster: None when synced and healthy."""
        error = f"; last error: {self.last_error}" if self.last_error else ""
        if waiting := [reflector.resource for reflector in self._reflectors if not reflector.synced]:
            return f"not synced: waiting for the first list of {', '.join(waiting)}{error}"
        failing = ", ".join(f"{reflector.resource} for {time.monotonic() - reflector.failing_since:.0f}s"
                            for reflector in self._reflectors if reflector.failing_since is not None)
        return f"unhealthy: failing ({failing}; lookups fail after {self.stale_after_seconds:g}s){error}" \
            if failing else None

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        self._namespaces.check()
        found = self._namespaces.store.items.get("", {}).get(name)  # atomic reads: no lock needed
        return None if found is None else {"apiVersion": "v1", "kind": "Namespace", "metadata": {  # a copy
            "name": found["name"], "labels": dict(found["labels"]), "annotations": dict(found["annotations"])}}

    def pods(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        self._pods.check()
        return self._pods.in_namespace(namespace)

    def config_maps(self, namespace: str, *, name: str | None = None,
                    selector: LabelSelector | None = None) -> list[dict[str, Any]]:
        """The namespace's ConfigMaps (plain data, not to be changed): by name, or matching the selector."""
        config_maps = self._config_maps
        if config_maps is None:
            return []
        config_maps.check()
        if name is None:
            return [item for item in config_maps.in_namespace(namespace)
                    if selector is None or selector_matches(selector, labels_of(item) or {})]
        found = config_maps.store.items.get(namespace, {}).get(name)
        if found is None:
            config_maps.in_namespace(namespace)  # raises when the namespace lost ConfigMaps to the cap
        return [found] if found is not None else []

    def with_params(self, policy_set: PolicySet) -> PolicySet:
        """`policy_set` with the live ConfigMaps as params objects too (the same set without ConfigMaps)."""
        if self._config_maps is None:
            return policy_set
        overlay = self._overlay
        if overlay is None or overlay[0] is not policy_set:
            params = ClusterParams(policy_set.params, self, policy_set.engine.prepare)
            overlay = (policy_set, dataclasses.replace(policy_set, params=params))
            self._overlay = overlay
        return overlay[1]

    def collect(self) -> Iterator[Metric]:
        """Prometheus metrics, read at scrape time (the state is the server registry's collector)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("webhook_cluster_synced", "1 once every cluster cache has completed its first list.",
                                value=int(self.synced))
        yield GaugeMetricFamily("webhook_cluster_healthy", "1 while no cluster watch is failing.",
                                value=int(self.healthy))
        rows = [(r.kind, r.store.count, len(r.store.truncated), r.dropped, r.errors) for r in self._reflectors]
        for column, (family, name, text) in enumerate([
                (GaugeMetricFamily, "webhook_cluster_objects", "Objects in the cluster caches"),
                (GaugeMetricFamily, "webhook_cluster_capped_namespaces", "Namespaces with objects left out (cap)"),
                (CounterMetricFamily, "webhook_cluster_objects_dropped", "Objects left out because of the cap"),
                (CounterMetricFamily, "webhook_cluster_watch_errors", "Failed lists and watches")], start=1):
            metric = family(name, f"{text}, by kind.", labels=["kind"])
            for row in rows:
                metric.add_metric([row[0]], row[column])
            yield metric
        lists = CounterMetricFamily("webhook_cluster_lists", "Complete lists, by kind and reason (initial, resync, "
                                    "expired).", labels=["kind", "reason"])
        for reflector in self._reflectors:
            for reason, count in reflector.lists.items():
                lists.add_metric([reflector.kind, reason], count)
        yield lists


class ClusterParams(ParamStore):
    """A policy set's params plus the live ConfigMaps; a live ConfigMap hides a file's of the same namespace and
    name (the API server would only know the live one). Unavailable cluster state is the binding's fault."""

    def __init__(self, base: ParamStore, state: LiveClusterState, prepare: Callable[[Any], Any]) -> None:
        super().__init__(objects=base.objects, namespaced=base.namespaced)
        self.state, self.prepare = state, prepare

    def find(self, key: tuple[str, str], namespace: str, ref: ParamRef) -> tuple[ParamObject, ...]:
        found = super().find(key, namespace, ref)
        if key != CONFIG_MAP:
            return found
        live = [ParamObject(str(item["metadata"].get("name", "")), namespace, labels_of(item) or {}, item,
                            self.prepare(item))
                for item in self.state.config_maps(namespace, name=ref.name, selector=ref.selector)]
        names = {item.name for item in live}
        merged = [item for item in found if item.name not in names] + live
        return tuple(merged if ref.name is not None else sorted(merged, key=lambda item: item.name))

    def resolve(self, kind: ParamKind | None, ref: ParamRef | None, *, request_namespace: str) -> Resolution:
        try:
            return super().resolve(kind, ref, request_namespace=request_namespace)
        except ClusterUnavailable as error:
            return Resolution(fault=f"params from the cluster: {error}")


def api_client_for(*, kubeconfig: Any = None, context: str | None = None, in_cluster: bool = False) -> Any:
    """An `ApiClient` with a `Configuration` of its own (never the process-wide default): in-cluster (the
    ServiceAccount token, refreshed when it rotates), or a kubeconfig file and context."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig is not None else None, context=context,
            client_configuration=configuration, persist_config=False)
    configuration.retries = 0  # the reflectors retry, with backoff
    return client.ApiClient(configuration)
