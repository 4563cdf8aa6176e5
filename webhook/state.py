"""What policies may know of the cluster besides the request: Namespaces and running Pods.

A `ClusterState` is either the live one (`webhook.cluster`, watched caches through the `kubernetes` client)
or a `StaticState` from files (the policy directory's Namespace objects, a `webhook test` file's state, or
nothing at all when the server runs without a cluster). Lookups on a live state that has not synced yet, or
has lost the API server, raise `ClusterUnavailable`: in a policy that is a fault, so the policy's
failurePolicy decides, as for any other fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class ClusterUnavailable(Exception):
    """The cluster state cannot answer (not synced yet, or the API server is unreachable)."""


class ClusterState(Protocol):
    @property
    def synced(self) -> bool:
        """True once every cache answers from a complete list (always True for a static state)."""
        ...

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        """The Namespace object (metadata with labels and annotations at least), or None when there is none."""
        ...

    def pods(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        """The namespace's Pods that count against quotas: not Succeeded or Failed (metadata, spec.containers,
        spec.initContainers, spec.overhead, status.phase at least)."""
        ...


class StaticState:
    """A cluster state read from files: Namespaces and Pods given as plain objects."""

    def __init__(self, namespaces: Iterable[Mapping[str, Any]] = (), pods: Iterable[Mapping[str, Any]] = ()) -> None:
        self._namespaces = {str(ns.get("metadata", {}).get("name", "")): ns for ns in namespaces}
        self._pods: dict[str, list[Mapping[str, Any]]] = {}
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                continue
            self._pods.setdefault(str(pod.get("metadata", {}).get("namespace") or "default"), []).append(pod)

    @property
    def synced(self) -> bool:
        return True

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self._namespaces.get(name)

    def pods(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        return tuple(self._pods.get(namespace, ()))


EMPTY = StaticState()
