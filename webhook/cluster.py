"""The live cluster state (a `webhook.state.ClusterState`): watched caches of Namespaces and Pods, and of
the ConfigMaps that params refer to, through the `kubernetes` client.

Each kind has a reflector (`webhook.reflector`): a thread that lists then watches it, lists again on resync
and on 410 Gone, and reconnects with backoff after errors. Only trimmed read-only copies are kept (see
`_trim_pod`); Succeeded and Failed Pods are dropped; past `max_pods` a namespace that lost a Pod is
incomplete, and its lookups raise ClusterUnavailable until a relist finds room. Lookups also raise it before
the first list of every kind, and when the kind's watch has been failing for over `stale_after_seconds`: in a
policy that is a fault, so its failurePolicy decides. Once synced the state stays synced (so does readiness):
losing the API server must not take the webhook out of its Service. Each server process (`--workers`) runs
watches of its own: N workers put N times the watch load on the API server and hold N copies of the caches.

ConfigMaps are not watched whole (anyone who may create one could fill the cache): each distinct paramRef of
the loaded bindings with paramKind v1/ConfigMap gets a list and watch of its own, as narrow as the API allows
(`ParamQuery`: the paramRef's namespace, else all namespaces; fieldSelector `metadata.name=` for a name,
labelSelector for a selector), and the watches follow policy reloads. What a paramRef without a namespace,
or with an empty selector, picks cannot be narrowed further: every namespace's objects of that name or those
labels are watched. Their data is bounded in bytes (`max_param_bytes`, counted as the JSON length of what is
kept plus `PARAM_OBJECT_OVERHEAD` each): an object past the bound is left out and its namespace becomes
incomplete for that paramRef: lookups there raise ClusterUnavailable (a fault under the failurePolicy) until a
relist finds room; `problem` and the log say so. The server follows each policy set as it loads it
(`follow`; `with_params` follows a set it has not seen on its first use); a paramRef added once the state has
synced does not take readiness away (its lookups fail until its first list).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from webhook.cel.kubernetes.access import ReviewFailed
from webhook.policies.compiled import PolicySet
from webhook.policies.matching import labels_of, selector_matches
from webhook.policies.model import ParamKind, ParamRef
from webhook.policies.params import ParamObject, ParamQuery, ParamStore, Resolution
from webhook.reflector import MIB, ByteBudget, Reflector
from webhook.state import ClusterUnavailable

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from webhook.config import Settings

log = logging.getLogger("webhook.cluster")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # a copy of the object: not kept
FINISHED_PHASES = ("Succeeded", "Failed")
CONFIG_MAP = ("v1", "ConfigMap")
# A ConfigMap list page holds at most this many objects: a page is read whole before it is trimmed, and an
# object may be up to 1.5 MiB (etcd's default request limit), so a page of 25 stays under ~40 MiB.
PARAM_PAGE_SIZE = 25


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


class LiveClusterState:
    """A `ClusterState` kept up to date by watches (see the module documentation), and the Prometheus
    collector of its metrics."""

    def __init__(self, api_client: Any, *, config_maps: bool = False, resync_seconds: float = 300.0,
                 stale_after_seconds: float = 60.0, max_pods: int = 200_000, max_config_maps: int = 100_000,
                 max_param_bytes: int = 64 * MIB, watch_timeout_seconds: float = 240.0,
                 backoff_seconds: tuple[float, float] = (0.5, 30.0), request_timeout: float = 30.0,
                 page_size: int = 500) -> None:
        from kubernetes import client

        self.api_client, self.resync_seconds, self.stale_after_seconds = api_client, resync_seconds, stale_after_seconds
        self.watch_timeout_seconds, self.backoff_seconds = watch_timeout_seconds, backoff_seconds
        self.request_timeout, self.page_size = request_timeout, page_size
        self.stop_event = threading.Event()
        self._core = core = client.CoreV1Api(api_client)
        self._namespaces = Reflector(self, "namespaces", "Namespace", core.list_namespace, _trim_namespace)
        self._pods = Reflector(self, "pods", "Pod", core.list_pod_for_all_namespaces, _trim_pod, max_pods)
        self._reflectors = [self._namespaces, self._pods]
        # ConfigMaps for params: one reflector per paramRef query of the policy set last followed (see follow)
        self.params_enabled, self.max_config_maps = config_maps, max_config_maps
        self.param_budget = ByteBudget(max_param_bytes)
        self._params: dict[ParamQuery, Reflector] = {}
        self._params_lock = threading.Lock()
        self._retired: list[Reflector] = []  # params reflectors of earlier policy sets, until their threads end
        self._retired_counts = {"dropped": 0, "errors": 0, **dict.fromkeys(("initial", "resync", "expired"), 0)}
        self._started = self._synced_once = False
        self._overlay: tuple[PolicySet, PolicySet] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveClusterState:
        return cls(api_client_for(kubeconfig=settings.kubeconfig, context=settings.kube_context,
                                  in_cluster=settings.in_cluster),
                   config_maps=settings.cluster_params, resync_seconds=settings.cluster_resync_seconds,
                   stale_after_seconds=settings.cluster_stale_after_seconds, max_pods=settings.cluster_max_pods,
                   max_param_bytes=settings.cluster_params_max_mb * MIB)

    def start(self) -> None:
        with self._params_lock:
            self._started = True
            for reflector in self._current():
                reflector.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the watches: open requests are cut, the threads are joined (each within `timeout`)."""
        with self._params_lock:
            self.stop_event.set()
            reflectors = [*self._current(), *self._retired]
        for reflector in reflectors:
            reflector.stop()
        for reflector in (reflector for reflector in reflectors if reflector.thread.is_alive()):
            reflector.thread.join(timeout)
        with contextlib.suppress(Exception):
            self.api_client.close()

    def _current(self) -> list[Reflector]:
        return [*self._reflectors, *self._params.values()]

    def follow(self, policy_set: PolicySet) -> None:
        """Watch the ConfigMaps that `policy_set`'s bindings can pick as params, and no others: a reflector per
        distinct `ParamQuery`; those of the previous set that this one no longer needs are stopped."""
        if not self.params_enabled:
            return
        queries = {ParamQuery.of(policy.param_ref) for policy in policy_set.policies
                   if policy.param_ref is not None and policy.param_kind is not None
                   and (policy.param_kind.apiVersion, policy.param_kind.kind) == CONFIG_MAP
                   and policy.misconfiguration is None}
        with self._params_lock:
            if self.stop_event.is_set() or queries == self._params.keys():
                return
            kept = {query: reflector for query, reflector in self._params.items() if query in queries}
            for query, reflector in self._params.items():
                if query not in kept:
                    reflector.stop()
                    self._retired.append(reflector)
            for query in sorted(queries - kept.keys(), key=str):
                kept[query] = reflector = self._param_reflector(query)
                if self._started:
                    reflector.thread.start()
            self._params = kept  # one assignment: lookups read either the old or the new mapping
            self._prune_retired()
        log.info("cluster state: watching the ConfigMaps of %d paramRef(s)%s", len(kept),
                 "".join(f"; {query}" for query in sorted(kept, key=str)))

    def _param_reflector(self, query: ParamQuery) -> Reflector:
        arguments: dict[str, Any] = {}
        if query.name is not None:
            arguments["field_selector"] = f"metadata.name={query.name}"
        if query.label_selector is not None:
            arguments["label_selector"] = query.label_selector
        if query.namespace is not None:
            arguments["namespace"] = query.namespace
        list_call = (self._core.list_namespaced_config_map if query.namespace is not None
                     else self._core.list_config_map_for_all_namespaces)
        return Reflector(self, "configmaps", "ConfigMap", list_call, _trim_config_map, self.max_config_maps,
                          arguments=arguments, budget=self.param_budget, page_size=min(self.page_size, PARAM_PAGE_SIZE),
                          label=f"the ConfigMaps for paramRef ({query})")

    def _prune_retired(self) -> None:
        for reflector in [reflector for reflector in self._retired if not reflector.thread.is_alive()]:
            self._retired.remove(reflector)
            self._retired_counts["dropped"] += reflector.dropped
            self._retired_counts["errors"] += reflector.errors
            for reason, count in reflector.lists.items():
                self._retired_counts[reason] += count

    @property
    def synced(self) -> bool:
        """Every cache has listed once; stays true after (a paramRef added by a reload does not take readiness
        away: its lookups fail until its first list)."""
        if not self._synced_once:
            self._synced_once = all(reflector.synced for reflector in self._current())
        return self._synced_once

    @property
    def healthy(self) -> bool:
        return all(reflector.failing_since is None for reflector in self._current())

    @property
    def last_error(self) -> str | None:
        return max(self._current(), key=lambda reflector: reflector.last_error_at).last_error

    @property
    def param_bytes(self) -> int:
        """Bytes of ConfigMap data held for params (`reflector.PARAM_OBJECT_OVERHEAD` each on top), against
        `max_param_bytes`."""
        return self.param_budget.used

    @property
    def problem(self) -> str | None:
        """What readiness says about the cluster: None when synced, healthy and complete."""
        error = f"; last error: {self.last_error}" if self.last_error else ""
        current = self._current()
        waiting = [reflector.label for reflector in current if not reflector.synced]
        if waiting and not self.synced:
            return f"not synced: waiting for the first list of {', '.join(waiting)}{error}"
        parts = [f"waiting for the first list of {', '.join(waiting)}"] if waiting else []
        if failing := ", ".join(f"{reflector.resource} for {time.monotonic() - reflector.failing_since:.0f}s"
                                for reflector in current if reflector.failing_since is not None):
            parts.append(f"unhealthy: failing ({failing}; lookups fail after {self.stale_after_seconds:g}s){error}")
        for reflector in self._params.values():
            with reflector.lock:
                namespaces = sorted(reflector.store.truncated)
            if not namespaces:
                continue
            parts.append(f"{reflector.label} are incomplete in namespace(s) {', '.join(namespaces[:5])}"
                         f"{' and more' if len(namespaces) > 5 else ''}: {reflector.left_out}; bindings that "
                         "need them there fault")
        return "; ".join(parts) or None

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        self._namespaces.check()
        found = self._namespaces.store.items.get("", {}).get(name)  # atomic reads: no lock needed
        return None if found is None else {"apiVersion": "v1", "kind": "Namespace", "metadata": {  # a copy
            "name": found["name"], "labels": dict(found["labels"]), "annotations": dict(found["annotations"])}}

    def pods(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        self._pods.check()
        return self._pods.in_namespace(namespace)

    def config_maps(self, namespace: str, ref: ParamRef) -> list[dict[str, Any]]:
        """The namespace's ConfigMaps that `ref` picks (plain data, not to be changed): by name, or matching
        its selector. Raises ClusterUnavailable when they are not known (not watched or synced yet, stale, or
        incomplete past the bound)."""
        if not self.params_enabled:
            return []
        query = ParamQuery.of(ref)
        reflector = self._params.get(query)
        if reflector is None:
            raise ClusterUnavailable(f"the ConfigMaps for paramRef ({query}) are not watched: the policy set that "
                                     "refers to them is not followed yet")
        reflector.check()
        items = reflector.in_namespace(namespace)  # raises when the namespace lost ConfigMaps to the bound
        if ref.name is not None:
            return [item for item in items if item["metadata"].get("name") == ref.name]
        return [item for item in items if ref.selector is None or selector_matches(ref.selector, labels_of(item) or {})]

    def with_params(self, policy_set: PolicySet) -> PolicySet:
        """`policy_set` with the live ConfigMaps as params objects too (the same set without ConfigMaps); a new
        set is followed (`follow`) on its first use."""
        if not self.params_enabled:
            return policy_set
        overlay = self._overlay
        if overlay is None or overlay[0] is not policy_set:
            self.follow(policy_set)
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
        params = list(self._params.values())
        rows = [(r.kind, r.store.count, len(r.store.truncated), r.dropped, r.errors) for r in self._reflectors]
        if self.params_enabled:  # the paramRefs' caches together
            rows.append(("ConfigMap", sum(r.store.count for r in params), sum(len(r.store.truncated) for r in params),
                         sum(r.dropped for r in params) + self._retired_counts["dropped"],
                         sum(r.errors for r in params) + self._retired_counts["errors"]))
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
        if self.params_enabled:
            for reason in ("initial", "resync", "expired"):
                lists.add_metric(["ConfigMap", reason],
                                 sum(r.lists[reason] for r in params) + self._retired_counts[reason])
        yield lists
        if self.params_enabled:
            yield GaugeMetricFamily("webhook_cluster_params_bytes", "Bytes of ConfigMap data cached for params "
                                    "(JSON length plus a per-object overhead).", value=self.param_bytes)
            yield GaugeMetricFamily("webhook_cluster_params_max_bytes", "The bound on "
                                    "webhook_cluster_params_bytes (--cluster-params-max-mb).",
                                    value=self.param_budget.limit)
            yield GaugeMetricFamily("webhook_cluster_params_watches", "ConfigMap lists and watches: one per "
                                    "distinct paramRef of the loaded bindings.", value=len(params))


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
                for item in self.state.config_maps(namespace, ref)]
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


def review_access(api_client: Any, spec: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Create a SubjectAccessReview (authorization.k8s.io/v1) with `spec` and return its status; raise
    ReviewFailed, saying why, when the API server is unreachable, does not answer within `timeout` seconds, or
    refuses the review (such as 403 without RBAC `create` on `subjectaccessreviews`)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError
    from urllib3.exceptions import TimeoutError as RequestTimeout

    body: Any = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    try:
        response: Any = client.AuthorizationV1Api(api_client).create_subject_access_review(
            body, _request_timeout=timeout, _preload_content=False)
        answer = json.loads(response.data)
    except ApiException as error:
        try:
            message = json.loads(error.body or b"{}").get("message") or ""
        except (ValueError, AttributeError):
            message = ""
        raise ReviewFailed(f"{error.status} {error.reason}" + (f": {message}" if message else "")) from None
    except (HTTPError, OSError, ValueError) as error:
        cause: BaseException = error.reason if isinstance(error, MaxRetryError) and error.reason else error
        if isinstance(cause, NewConnectionError):  # a ConnectTimeoutError too; its text starts with a repr
            cause = cause.__cause__ or cause
        elif isinstance(cause, RequestTimeout | TimeoutError):
            raise ReviewFailed(f"no answer from the API server within {timeout:g}s") from None
        if isinstance(cause, ValueError):
            raise ReviewFailed(f"the API server's answer is not JSON: {cause}") from None
        raise ReviewFailed(f"cannot reach the API server: {cause}") from None
    status = answer.get("status") if isinstance(answer, dict) else None
    return status if isinstance(status, dict) else {}
