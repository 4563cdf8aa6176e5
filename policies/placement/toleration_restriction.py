"""namespace-default-tolerations and namespace-toleration-whitelist: the PodTolerationRestriction admission
plugin as policies, with the same namespace annotations.

What: two namespace annotations, each a JSON list of tolerations (the Pod spec's format):
    scheduler.alpha.kubernetes.io/defaultTolerations: '[{"key": "dedicated", "operator": "Equal",
                                                         "value": "batch", "effect": "NoSchedule"}]'
    scheduler.alpha.kubernetes.io/tolerationsWhitelist: '[{"key": "dedicated", "operator": "Exists"}]'
  - namespace-default-tolerations (mutating) appends each default toleration that the Pod (or pod template)
    does not already have, or a broader one (a toleration it has that tolerates everything the default does).
    The Pod's own tolerations are never changed or removed.
  - namespace-toleration-whitelist (validating) denies a Pod or pod template with a toleration that no
    whitelist entry covers. An entry covers a toleration when it tolerates at least what the toleration
    does, as the plugin decides: the same key (an entry with an empty key and operator Exists covers every
    key); the same effect (an entry without effect covers every effect); operator Exists covers any value,
    Equal (or no operator) covers only Equal with the same value (so a whitelisted `Equal dedicated=batch`
    does not allow `Exists dedicated`, which would tolerate every value); and an entry with effect NoExecute
    and tolerationSeconds covers only tolerations that set at most as many seconds.
    A malformed annotation (not a JSON list of tolerations) denies the namespace's Pods, naming it.
Why: a taint reserves nodes (GPU, dedicated tenants, spot capacity); whoever can add the matching toleration
can use them. The whitelist decides per namespace who may; defaults save tenants from knowing the taints.
Applies to: Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs
in namespaces with either annotation. Namespaces without them are untouched.
Always allowed (params.alwaysAllowed, whitelisted in every namespace): the tolerations Kubernetes itself adds
to Pods before this webhook sees them: not-ready and unreachable (NoExecute, from the DefaultTolerationSeconds
admission plugin) and memory-pressure (NoSchedule, from PodTolerationRestriction if it is also enabled). Pods
owned by a DaemonSet, and DaemonSet templates, may also carry params.daemonSetAllowed: the node-condition
tolerations the DaemonSet controller adds (disk-pressure, pid-pressure, unschedulable, network-unavailable).
UPDATE: defaults are added to Pods on CREATE only (a Pod's tolerations can only grow afterwards), and to
workloads on CREATE and when their pod template changes. The whitelist is checked on CREATE, on a Pod UPDATE
that changes its tolerations, and on a workload UPDATE that changes its pod template (the new Pods would be
denied anyway), so scaling or relabelling an existing workload is never blocked.
Differences from PodTolerationRestriction: no cluster-wide default or whitelist (the plugin's configuration
file); an explicitly empty whitelist `[]` allows no tolerations (beyond the always allowed ones) where the
plugin treats it as "no whitelist"; the plugin's merge may drop a Pod toleration that a default makes
redundant, this policy only appends.
Parameters: alwaysAllowed and daemonSetAllowed below (lists of whitelist entries). The annotations are the
per-namespace configuration: only cluster administrators should be able to update Namespaces (RBAC).
A namespace whose annotations cannot be read (the live cluster cache not synced) is a policy fault: denied
under failurePolicy Fail rather than let through unchecked.
"""

from __future__ import annotations

import json
from typing import Any

from webhook import AdmissionRequest, Deny, Patch, deny, mutating, patch, pod_spec, pod_spec_path, validating

DEFAULTS = "scheduler.alpha.kubernetes.io/defaultTolerations"
WHITELIST = "scheduler.alpha.kubernetes.io/tolerationsWhitelist"
OPERATORS = ("", "Equal", "Exists")
EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")

PARAMS = {
    "alwaysAllowed": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    ],
    "daemonSetAllowed": [
        {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"},
    ],
}


class MalformedAnnotation(ValueError):
    pass


def _annotations(request: AdmissionRequest) -> dict[str, Any]:
    """The namespace's annotations: the live cluster cache (ClusterUnavailable while it cannot answer: a fault
    under failurePolicy Fail), else the Namespace objects the server knows."""
    namespace = request.cluster.namespace(request.namespace) or request.namespace_object or {}
    annotations = (namespace.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def _parse(annotations: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
    """The annotation's tolerations; None when it is absent or blank."""
    text = annotations.get(name)
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise MalformedAnnotation(f"{name} is not JSON ({error})") from error
    if not isinstance(value, list):
        raise MalformedAnnotation(f"{name} is not a JSON list of tolerations")
    for item in value:
        problem = _toleration_problem(item)
        if problem:
            raise MalformedAnnotation(f"{name} has an invalid toleration {json.dumps(item)}: {problem}")
    return value


def _toleration_problem(item: Any) -> str:
    if not isinstance(item, dict):
        return "not an object"
    unknown = set(item) - {"key", "operator", "value", "effect", "tolerationSeconds"}
    if unknown:
        return f"unknown field {sorted(unknown)[0]}"
    if any(not isinstance(item.get(name, ""), str) for name in ("key", "operator", "value", "effect")):
        return "key, operator, value and effect must be strings"
    if item.get("operator", "") not in OPERATORS:
        return "operator must be Equal or Exists"
    if item.get("effect", "") not in EFFECTS:
        return "effect must be NoSchedule, PreferNoSchedule or NoExecute"
    if item.get("operator") == "Exists" and item.get("value"):
        return "operator Exists takes no value"
    if not item.get("key") and item.get("operator") != "Exists":
        return "an empty key needs operator Exists"
    seconds = item.get("tolerationSeconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        return "tolerationSeconds must be an integer"
    return ""


def _norm(t: dict[str, Any]) -> tuple[str, str, str, str, int | None]:
    operator = t.get("operator") or "Equal"
    value = "" if operator == "Exists" else str(t.get("value") or "")
    return (str(t.get("key") or ""), operator, value, str(t.get("effect") or ""), t.get("tolerationSeconds"))


def covers(entry: dict[str, Any], t: dict[str, Any]) -> bool:
    """Whether `entry` tolerates at least what `t` does (Kubernetes' isSuperset, with an empty operator
    read as Equal on both sides, as the API defines it)."""
    e_key, e_op, e_value, e_effect, e_seconds = _norm(entry)
    t_key, t_op, t_value, t_effect, t_seconds = _norm(t)
    if (e_key, e_op, e_value, e_effect, e_seconds) == (t_key, t_op, t_value, t_effect, t_seconds):
        return True
    if t_key != e_key and not (e_key == "" and e_op == "Exists"):
        return False
    if e_effect and t_effect != e_effect:
        return False
    if e_effect == "NoExecute" and e_seconds is not None and (t_seconds is None or t_seconds > e_seconds):
        return False
    if e_op == "Exists":
        return True
    return t_op == "Equal" and t_value == e_value


def describe(t: dict[str, Any]) -> str:
    key, operator, value, effect, seconds = _norm(t)
    text = f"{key or '<every key>'} Exists" if operator == "Exists" else f"{key}={value}"
    if effect:
        text += f":{effect}"
    if seconds is not None:
        text += f" for {seconds}s"
    return text


def _template(obj: Any) -> Any:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict):
        return None
    if obj.get("kind") == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    return spec.get("template")


def _template_changed(request: AdmissionRequest) -> bool:
    return request.old_object is None or _template(request.object) != _template(request.old_object)


def _tolerations(spec: Any) -> list[dict[str, Any]]:
    items = spec.get("tolerations") if isinstance(spec, dict) else None
    return [t for t in items if isinstance(t, dict)] if isinstance(items, list) else []


def _daemon_set_pod(obj: dict[str, Any]) -> bool:
    if obj.get("kind") == "DaemonSet":
        return True
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(o, dict) and o.get("kind") == "DaemonSet" and o.get("controller") for o in owners)


@mutating("namespace-default-tolerations", resources=["pods"], api_groups=[""], api_versions=["v1"],
          operations=["CREATE", "UPDATE"], pod_templates=True, params=PARAMS)
def default_tolerations(request: AdmissionRequest) -> Patch | None:
    if request.operation != "CREATE" and (request.kind.kind == "Pod" or not _template_changed(request)):
        return None
    try:
        defaults = _parse(_annotations(request), DEFAULTS)
    except MalformedAnnotation:
        return None  # namespace-toleration-whitelist denies, naming the annotation
    spec = pod_spec(request.object)
    if not defaults or not isinstance(spec, dict):
        return None
    present = _tolerations(spec)
    missing: list[dict[str, Any]] = []
    for default in defaults:
        if not any(covers(t, default) for t in present + missing):
            missing.append(default)
    if not missing:
        return None
    path = pod_spec_path(request.object) + "/tolerations"
    if not isinstance(spec.get("tolerations"), list):
        return patch({"op": "add", "path": path, "value": missing})
    return patch([{"op": "add", "path": path + "/-", "value": t} for t in missing])


@validating("namespace-toleration-whitelist", resources=["pods"], api_groups=[""], api_versions=["v1"],
            operations=["CREATE", "UPDATE"], pod_templates=True, params=PARAMS, audit=True)
def toleration_whitelist(request: AdmissionRequest) -> Deny | None:
    spec = pod_spec(request.object)
    if request.operation == "UPDATE":
        if request.kind.kind == "Pod":
            if _tolerations(spec) == _tolerations(pod_spec(request.old_object)):
                return None
        elif not _template_changed(request):
            return None
    annotations = _annotations(request)
    if DEFAULTS not in annotations and WHITELIST not in annotations:
        return None
    namespace = request.namespace
    try:
        defaults = _parse(annotations, DEFAULTS) or []
        whitelist = _parse(annotations, WHITELIST)
    except MalformedAnnotation as error:
        return deny(f"namespace {namespace} has a malformed annotation: {error}; ask a cluster administrator "
                    "to fix it (a JSON list of tolerations)")
    if whitelist is None:
        return None
    allowed = whitelist + list(request.params["alwaysAllowed"])
    if _daemon_set_pod(request.object):
        allowed += list(request.params["daemonSetAllowed"])
    refused = [t for t in _tolerations(spec) if not any(covers(entry, t) for entry in allowed)]
    if not refused:
        return None
    field = pod_spec_path(request.object).strip("/").replace("/", ".") + ".tolerations"
    message = (f"{field} has tolerations that namespace {namespace} does not allow: "
               f"{', '.join(describe(t) for t in refused)}; allowed "
               f"(annotation {WHITELIST}): {', '.join(describe(t) for t in whitelist) or 'none'}. "
               "Remove them, or ask a cluster administrator to allow them")
    bad_defaults = [t for t in defaults if not any(covers(entry, t) for entry in allowed)]
    if bad_defaults:
        message += (f" (the namespace's own {DEFAULTS} adds {', '.join(describe(t) for t in bad_defaults)}, "
                    "which its whitelist does not allow: the namespace must be fixed)")
    return deny(message)
