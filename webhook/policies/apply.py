"""Merging a MutatingAdmissionPolicy's ApplyConfiguration into an object, as server-side apply merges.

Maps merge field by field; scalars and atomic lists are replaced; the keyed lists ("listType: map" in the
Kubernetes API) of Pods and workloads merge item by item by their keys, so that an apply configuration
naming one container changes that container and leaves the others alone; "listType: set" lists gain the
missing items. Without the cluster's OpenAPI schema the list types come from the table below, which covers
the core workload fields (documented in README as a difference from the API server, which reads the schema).
A null in the apply configuration is treated as absent, as server-side apply treats an unset field.
"""

from __future__ import annotations

import copy
from typing import Any

# Field name -> key fields of "listType: map" lists (Pod, pod template, Service, metadata).
KEYED_LISTS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",), "ephemeralContainers": ("name",),
    "env": ("name",), "volumeMounts": ("mountPath",), "volumeDevices": ("devicePath",), "volumes": ("name",),
    "imagePullSecrets": ("name",), "hostAliases": ("ip",), "resourceClaims": ("name",),
    "schedulingGates": ("name",), "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "ownerReferences": ("uid",), "conditions": ("type",), "readinessGates": ("conditionType",),
}
SET_LISTS = frozenset({"finalizers"})
_DEFAULTS = {"protocol": "TCP"}  # key fields the API server defaults, so `{containerPort: 80}` matches TCP 80


def _port_keys(path: tuple[str, ...]) -> tuple[str, ...]:
    return ("containerPort", "protocol") if any(p in ("containers", "initContainers", "ephemeralContainers")
                                                  for p in path) else ("port", "protocol")


def _key(item: Any, keys: tuple[str, ...]) -> tuple[Any, ...] | None:
    if not isinstance(item, dict):
        return None
    return tuple(item.get(k, _DEFAULTS.get(k)) for k in keys)


def merge(current: Any, applied: Any, path: tuple[str, ...] = ()) -> Any:
    """`current` with `applied` merged in (neither is changed)."""
    if isinstance(current, dict) and isinstance(applied, dict):
        merged = dict(current)
        for name, value in applied.items():
            if value is None:
                continue
            merged[name] = merge(current.get(name), value, (*path, name))
        return merged
    if isinstance(applied, list) and path:
        field = path[-1]
        keys = _port_keys(path) if field == "ports" else KEYED_LISTS.get(field)
        if keys is not None and isinstance(current, list):
            return _merge_keyed(current, applied, keys, path)
        if field in SET_LISTS and isinstance(current, list):
            return current + [item for item in applied if item not in current]
    return copy.deepcopy(applied)


def _merge_keyed(current: list[Any], applied: list[Any], keys: tuple[str, ...], path: tuple[str, ...]) -> list[Any]:
    merged = list(current)
    positions = {_key(item, keys): index for index, item in enumerate(current)}
    for item in applied:
        key = _key(item, keys)
        if key is not None and key in positions:
            merged[positions[key]] = merge(merged[positions[key]], item, path)
        else:
            positions[key] = len(merged)
            merged.append(copy.deepcopy(item))
    return merged
