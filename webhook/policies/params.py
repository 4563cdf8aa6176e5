"""Params objects for Kubernetes-native policies, and how a binding's paramRef picks them (as the API server).

Objects come from YAML files in the policy directory (any kind a policy names as its `paramKind`,
ConfigMaps included); a cluster connection adds live objects by overriding `ParamStore.find`, watching only
what `ParamQuery.of` says a paramRef can pick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.policies.matching import is_empty, labels_of, selector_matches
from webhook.policies.model import LabelSelector, ParamKind, ParamRef

# Kinds known to be namespaced without asking a cluster; any other kind is namespaced when one of its objects
# in the policy directory names a namespace.
NAMESPACED_KINDS = {("v1", "ConfigMap"), ("v1", "Secret")}
NOT_FOUND_MESSAGE = "no params found for policy binding with `Deny` parameterNotFoundAction"


@dataclass(frozen=True, slots=True)
class ParamObject:
    name: str
    namespace: str
    labels: Mapping[str, str]
    value: Any  # the object as plain data
    prepared: Any  # the same, prepared for the policy set's CEL engine


@dataclass(frozen=True, slots=True)
class ParamQuery:
    """The narrowest list and watch of the API server that hold every object a paramRef can pick.

    A paramRef names one namespace, or none (the request's: then every namespace must be watched); and a name
    (fieldSelector `metadata.name=`) or a label selector (labelSelector). An empty selector picks every object
    of the namespace (of the cluster, without a namespace): that cannot be narrowed.
    """

    namespace: str | None  # None: all namespaces
    name: str | None
    label_selector: str | None  # None with no name: every object

    @classmethod
    def of(cls, ref: ParamRef) -> ParamQuery:
        selector = None if ref.selector is None or is_empty(ref.selector) else label_selector_text(ref.selector)
        return cls(namespace=ref.namespace or None, name=ref.name, label_selector=None if ref.name else selector)

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        if self.name is not None:
            return f"{where}, name {self.name}"
        return f"{where}, labels {self.label_selector}" if self.label_selector else f"{where}, every object"


def label_selector_text(selector: LabelSelector) -> str:
    """A selector in the API server's `labelSelector` syntax (`a=b,c in (d,e),!f`)."""
    parts = [f"{key}={value}" for key, value in sorted(selector.matchLabels.items())]
    for requirement in selector.matchExpressions:
        values = ",".join(sorted(requirement.values))
        parts.append({"In": f"{requirement.key} in ({values})", "NotIn": f"{requirement.key} notin ({values})",
                      "Exists": requirement.key, "DoesNotExist": f"!{requirement.key}"}[requirement.operator])
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a binding's paramRef gives one request: objects to evaluate with, or a fault, or nothing to do."""

    objects: tuple[ParamObject, ...] = ()
    fault: str | None = None
    skip: bool = False  # no params and parameterNotFoundAction Allow: the binding allows


@dataclass
class ParamStore:
    """Params objects by (apiVersion, kind)."""

    objects: dict[tuple[str, str], list[ParamObject]] = field(default_factory=dict)
    namespaced: set[tuple[str, str]] = field(default_factory=lambda: set(NAMESPACED_KINDS))

    def add(self, data: Mapping[str, Any], prepare: Callable[[Any], Any]) -> None:
        metadata = data.get("metadata") or {}
        key = (str(data["apiVersion"]), str(data["kind"]))
        namespace = str(metadata.get("namespace") or "")
        if namespace:
            self.namespaced.add(key)
        self.objects.setdefault(key, []).append(ParamObject(
            name=str(metadata.get("name", "")), namespace=namespace, labels=labels_of(data) or {}, value=data,
            prepared=prepare(data)))

    def identity(self, data: Mapping[str, Any]) -> tuple[str, str, str, str]:
        """(apiVersion, kind, namespace, name) of an object, its namespace as `finish` settles it."""
        metadata = data.get("metadata") or {}
        key = (str(data["apiVersion"]), str(data["kind"]))
        namespace = str(metadata.get("namespace") or "") or ("default" if key in self.namespaced else "")
        return (*key, namespace, str(metadata.get("name", "")))

    def replace(self, data: Mapping[str, Any], prepare: Callable[[Any], Any]) -> None:
        """Add `data` in place of the object of the same identity (a PolicyTest's params over the directory's)."""
        self.add(data, prepare)
        identity = self.identity(data)
        key = identity[:2]
        *earlier, added = self.objects[key]
        self.objects[key] = [o for o in earlier if (o.namespace or ("default" if key in self.namespaced else ""),
                                                    o.name) != identity[2:]] + [added]

    def finish(self) -> None:
        """Objects of a namespaced kind written without a namespace live in `default`, as `kubectl apply` does."""
        for key in self.namespaced:
            self.objects[key] = [o if o.namespace else ParamObject(o.name, "default", o.labels, o.value, o.prepared)
                                 for o in self.objects.get(key, [])]

    def kinds(self) -> Iterable[tuple[str, str]]:
        return self.objects.keys()

    def resolve(self, kind: ParamKind | None, ref: ParamRef | None, *, request_namespace: str) -> Resolution:
        if kind is None and ref is None:
            return Resolution(objects=(ParamObject("", "", {}, None, None),))
        if kind is None:
            return Resolution(fault="the binding has a paramRef but the policy has no paramKind")
        if ref is None:
            return Resolution(fault=f"the policy's paramKind is {kind.apiVersion}/{kind.kind} but the binding has "
                                    "no paramRef")
        key = (kind.apiVersion, kind.kind)
        if key in self.namespaced:
            namespace = ref.namespace or request_namespace
            if not namespace:
                return Resolution(fault=f"paramRef has no namespace, {kind.kind} is namespaced and the request is "
                                        "for a cluster-scoped resource")
        elif ref.namespace:
            return Resolution(fault=f"paramRef.namespace is set but {kind.kind} is cluster-scoped")
        else:
            namespace = ""
        found = self.find(key, namespace, ref)
        if found:
            return Resolution(objects=found)
        if ref.parameterNotFoundAction == "Allow":
            return Resolution(skip=True)
        return Resolution(fault=NOT_FOUND_MESSAGE)  # Deny (the default): subject to the failurePolicy

    def find(self, key: tuple[str, str], namespace: str, ref: ParamRef) -> tuple[ParamObject, ...]:
        """The objects of kind `key` in `namespace` ("" for a cluster-scoped kind) that `ref` picks: by name, or
        by selector in name order. A subclass may add objects from elsewhere (webhook.cluster: live ConfigMaps)."""
        candidates = [o for o in self.objects.get(key, []) if o.namespace == namespace]
        if ref.name is not None:
            return tuple(o for o in candidates if o.name == ref.name)
        assert ref.selector is not None
        return tuple(sorted((o for o in candidates if selector_matches(ref.selector, o.labels)), key=lambda o: o.name))
