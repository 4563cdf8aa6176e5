"""The Python policy API: decorators that mark policy functions, the request they receive, what they return.

A module in the policies directory marks functions with `@validating(...)` or `@mutating(...)`; the loader
finds them by that mark (there is no global registry). Each call gets an `AdmissionRequest` and returns
None (allow), one result, or a list of results.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from webhook.state import EMPTY, ClusterState

POLICY_MARK = "__webhook_policy__"
Phase = Literal["validate", "mutate"]
FailurePolicy = Literal["Fail", "Ignore"]
Reason = Literal["Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"]


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str


@dataclass(frozen=True, slots=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """What a Python policy sees of one admission request. `object` and `old_object` are plain dicts."""

    uid: str
    operation: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str
    name: str
    namespace: str
    object: Any
    old_object: Any
    user_info: UserInfo
    dry_run: bool
    params: Any
    namespace_object: Any
    options: Any = None
    # The time of the decision (fixed by `webhook test` cases), and what is known of the cluster:
    # `cluster.pods(namespace)`, `cluster.namespace(name)`; raises ClusterUnavailable when it cannot tell.
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    cluster: ClusterState = EMPTY


@dataclass(frozen=True, slots=True)
class Allow:
    """Nothing to object to."""


@dataclass(frozen=True, slots=True)
class Deny:
    message: str
    reason: Reason = "Forbidden"


@dataclass(frozen=True, slots=True)
class Warn:
    message: str


@dataclass(frozen=True, slots=True)
class Patch:
    operations: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Audit:
    key: str
    value: str


Result = Allow | Deny | Warn | Patch | Audit
PolicyFunction = Callable[[AdmissionRequest], "Result | Sequence[Result] | None"]
F = TypeVar("F", bound=Callable[..., Any])


def allow() -> Allow:
    return Allow()


def deny(message: str, *, reason: Reason = "Forbidden") -> Deny:
    return Deny(message, reason)


def warn(message: str) -> Warn:
    return Warn(message)


def patch(*operations: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Patch:
    """JSONPatch operations, given one by one or as one list: patch({"op": "add", ...})."""
    flat: list[Mapping[str, Any]] = []
    for item in operations:
        if isinstance(item, Mapping):
            flat.append(item)
        else:
            flat.extend(item)
    return Patch(tuple(flat))


def audit(key: str, value: str) -> Audit:
    return Audit(key, value)


@dataclass(frozen=True, slots=True)
class PythonPolicySpec:
    """What a decorator records on a function; the loader turns it into a policy."""

    name: str | None
    phase: Phase
    match_constraints: Mapping[str, Any]
    failure_policy: FailurePolicy
    params: Any
    audit: bool = False  # judged by the background audit too (`webhook audit`, `serve --audit`)
    annotations: Mapping[str, str] = field(default_factory=dict)  # as a YAML policy's (severity, category)


# --- pod templates: one policy for Pods and every workload that makes them ------------------------------

WORKLOAD_RULES = (("apps", ("deployments", "statefulsets", "daemonsets", "replicasets")),
                  ("batch", ("jobs", "cronjobs")))


def pod_templates_rules(operations: Sequence[str]) -> list[dict[str, Any]]:
    """Resource rules for the workload kinds that carry a pod template, with these operations."""
    return [{"apiGroups": [group], "apiVersions": ["v1"], "operations": list(operations), "resources": list(kinds)}
            for group, kinds in WORKLOAD_RULES]


def pod_spec_path(obj: Any) -> str:
    """The JSON Pointer of the pod spec in a Pod or a workload: `/spec`, `/spec/template/spec`, or
    `/spec/jobTemplate/spec/template/spec` (CronJob)."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind == "Pod":
        return "/spec"
    if kind == "CronJob":
        return "/spec/jobTemplate/spec/template/spec"
    return "/spec/template/spec"


def _at(obj: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def pod_spec(obj: Any) -> Any:
    """The pod spec of a Pod or of a workload's pod template (None when there is none)."""
    return _at(obj, pod_spec_path(obj))


def pod_metadata(obj: Any) -> Any:
    """The metadata of a Pod or of a workload's pod template ({} when the template has none)."""
    if isinstance(obj, dict) and obj.get("kind") == "Pod":
        return obj.get("metadata") or {}
    return _at(obj, pod_spec_path(obj).removesuffix("/spec") + "/metadata") or {}


def _marker(phase: Phase, *, name: str | None, resources: Sequence[str], api_groups: Sequence[str],
            api_versions: Sequence[str], operations: Sequence[str],
            namespace_selector: Mapping[str, Any] | None, object_selector: Mapping[str, Any] | None,
            failure_policy: FailurePolicy, params: Any, pod_templates: bool = False, audit: bool = False,
            annotations: Mapping[str, str] | None = None) -> Callable[[F], F]:
    for keyword, value in (("resources", resources), ("api_groups", api_groups), ("api_versions", api_versions),
                           ("operations", operations)):
        if isinstance(value, str):  # list("pods") would be ["p", "o", "d", "s"]: a policy that never matches
            raise TypeError(f"{keyword} must be a list: write {keyword}=[{value!r}], not {keyword}={value!r}")
    match: dict[str, Any] = {
        "resourceRules": [{
            "apiGroups": list(api_groups),
            "apiVersions": list(api_versions),
            "operations": list(operations),
            "resources": list(resources),
        }, *(pod_templates_rules(operations) if pod_templates else [])],
    }
    if namespace_selector:
        match["namespaceSelector"] = dict(namespace_selector)
    if object_selector:
        match["objectSelector"] = dict(object_selector)

    def mark(function: F) -> F:
        setattr(function, POLICY_MARK, PythonPolicySpec(name, phase, match, failure_policy, params, audit,
                                                        dict(annotations or {})))
        return function

    return mark


def validating(name: str | None = None, *, resources: Sequence[str], api_groups: Sequence[str] = ("*",),
               api_versions: Sequence[str] = ("*",), operations: Sequence[str] = ("CREATE", "UPDATE"),
               namespace_selector: Mapping[str, Any] | None = None,
               object_selector: Mapping[str, Any] | None = None,
               failure_policy: FailurePolicy = "Fail", params: Any = None,
               pod_templates: bool = False, audit: bool = False,
               annotations: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Mark a function as a validating policy (called on /validate). Name defaults to the function's.
    With `pod_templates=True` it also gets the Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and
    CronJobs whose pods the rules would match; use `pod_spec(request.object)` to reach the pod spec.
    With `audit=True` the background audit judges existing objects with it too (as CREATE requests without a
    user: only for functions that need nothing but the object); `annotations` give it a report's severity
    and category, as a YAML policy's metadata.annotations (`policies.webhook.dev/severity`, `.../category`)."""
    return _marker("validate", name=name, resources=resources, api_groups=api_groups,
                   api_versions=api_versions, operations=operations, namespace_selector=namespace_selector,
                   object_selector=object_selector, failure_policy=failure_policy, params=params,
                   pod_templates=pod_templates, audit=audit, annotations=annotations)


def mutating(name: str | None = None, *, resources: Sequence[str], api_groups: Sequence[str] = ("*",),
             api_versions: Sequence[str] = ("*",), operations: Sequence[str] = ("CREATE", "UPDATE"),
             namespace_selector: Mapping[str, Any] | None = None,
             object_selector: Mapping[str, Any] | None = None,
             failure_policy: FailurePolicy = "Fail", params: Any = None,
             pod_templates: bool = False) -> Callable[[F], F]:
    """Mark a function as a mutating policy (called on /mutate; may return patch(...)). With
    `pod_templates=True`, as for `validating`; patch paths start at `pod_spec_path(request.object)`."""
    return _marker("mutate", name=name, resources=resources, api_groups=api_groups,
                   api_versions=api_versions, operations=operations, namespace_selector=namespace_selector,
                   object_selector=object_selector, failure_policy=failure_policy, params=params,
                   pod_templates=pod_templates)


def import_file(path: Path, module_name: str) -> ModuleType:
    """The module in `path`, executed under `module_name` (registered while it runs, for dataclasses and
    typing, and not kept in sys.modules afterwards). The loader imports policy files with it."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    return module


def helper_module(policy_file: str, name: str) -> ModuleType:
    """A helper module next to a policy file (`_quantity = helper_module(__file__, "_quantity")`): the
    policies folder is not a package, and the loader skips files whose names start with `_` but reloads the
    policies when they change."""
    path = Path(policy_file).with_name(f"{name}.py")
    return import_file(path, f"webhook_helper_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}")
