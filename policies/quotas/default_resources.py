"""default-resources: fill in missing resource requests and limits of every container (mutation), as the
LimitRanger admission plugin does with a LimitRange's `defaultRequest` and `default`.

Why: defaults make a Pod schedulable by its real needs without every author writing them;
quotas/require-requests-and-limits.yaml then checks the result, and the other quota policies see real numbers.
Applies to: Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and
CronJobs, in every namespace except kube-system; containers, init containers and sidecars (init containers with
restartPolicy Always). Ephemeral containers cannot have resources. Existing values are never changed.
On CREATE; on UPDATE only of a workload whose pod template changes (a Pod's resources cannot be updated, and
defaulting an untouched template would start a rollout nobody asked for).

What is filled in, per container and per resource (as LimitRanger, with one deliberate difference):
  - a missing limit becomes `default[resource]`; but when the container's own request is larger than that
    default, the limit becomes the request (LimitRanger would write a limit below the request, and the API
    server would then reject the Pod as invalid);
  - a missing request becomes the container's own limit when it sets one (the API server does the same for
    Pods), else `defaultRequest[resource]`, else the defaulted limit (a LimitRange's defaultRequest defaults to
    its default); never more than the container's limit.
  - resources that pod-level `spec.resources` (Kubernetes 1.32+) sets are left to it.
  - a value that is not a quantity is left as it is (the API server rejects the object afterwards).
Parameters (params): defaultRequest (cpu 100m, memory 128Mi) and default (limits: memory 256Mi): maps of
resource name to quantity. Change them in DEFAULTS below. Keep memory's default/defaultRequest ratio within
quotas/limit_request_ratio.py's cap (2), and cover every resource quotas/require-requests-and-limits.yaml
requires.
"""

from __future__ import annotations

from typing import Any

from webhook import AdmissionRequest, helper_module, mutating, patch, pod_spec, pod_spec_path

_quantity = helper_module(__file__, "_quantity")

DEFAULTS = {
    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
    "default": {"memory": "256Mi"},
}


def _defaults(container: dict[str, Any], pod_level: set[str], params: Any) -> dict[str, dict[str, Any]]:
    """The values to add to this container: {"requests": {...}, "limits": {...}} (only what is missing)."""
    resources = container.get("resources")
    resources = resources if isinstance(resources, dict) else {}
    requests = resources.get("requests") if isinstance(resources.get("requests"), dict) else {}
    limits = resources.get("limits") if isinstance(resources.get("limits"), dict) else {}
    default_limits = params.get("default") or {}
    default_requests = params.get("defaultRequest") or {}
    added: dict[str, dict[str, Any]] = {"requests": {}, "limits": {}}
    for name in dict.fromkeys([*default_limits, *default_requests]):
        if name in pod_level:
            continue
        request = _quantity.try_parse(requests[name]) if name in requests else None
        if name in requests and request is None:
            continue  # not a quantity: the API server's validation rejects the object after admission
        limit = limits.get(name)
        if name not in limits and name in default_limits:
            limit = default_limits[name]
            if request is not None and request > _quantity.parse(limit):
                limit = requests[name]  # a default below the request would make the container invalid
            added["limits"][name] = limit
        if name in requests:
            continue
        if name in limits:
            value = limits[name]  # as the API server defaults a Pod's request to its limit
        elif name in default_requests:
            value = default_requests[name]
            bound = _quantity.try_parse(limit) if limit is not None else None
            if bound is not None and _quantity.parse(value) > bound:
                value = limit
        else:
            value = limit
        if value is not None:
            added["requests"][name] = value
    return added


def _operations(spec: dict[str, Any], base: str, params: Any) -> list[dict[str, Any]]:
    pod_resources = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
    pod_level = {str(name) for section in ("requests", "limits")
                 for name in (pod_resources.get(section) or {})} & _quantity.POD_LEVEL_RESOURCES
    operations: list[dict[str, Any]] = []
    for field in ("initContainers", "containers"):
        containers = spec.get(field)
        for index, container in enumerate(containers if isinstance(containers, list) else []):
            if not isinstance(container, dict):
                continue
            added = _defaults(container, pod_level, params)
            if not added["requests"] and not added["limits"]:
                continue
            path = f"{base}/{field}/{index}/resources"
            resources = container.get("resources")
            if not isinstance(resources, dict):
                operations.append({"op": "add", "path": path,
                                   "value": {section: values for section, values in added.items() if values}})
                continue
            for section, values in added.items():
                if not values:
                    continue
                if not isinstance(resources.get(section), dict):
                    operations.append({"op": "add", "path": f"{path}/{section}", "value": values})
                    continue
                for name, value in values.items():
                    operations.append({"op": "add", "path": f"{path}/{section}/{_quantity.escape_pointer(name)}",
                                       "value": value})
    return operations


@mutating("default-resources", resources=["pods"], api_groups=[""], api_versions=["v1"],
          operations=["CREATE", "UPDATE"], pod_templates=True,
          namespace_selector={"matchExpressions": [
              {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]},
          params=DEFAULTS)
def default_resources(request: AdmissionRequest):
    spec = pod_spec(request.object)
    if not isinstance(spec, dict):
        return None
    if request.operation == "UPDATE" and (request.kind.kind == "Pod" or spec == pod_spec(request.old_object)):
        return None
    operations = _operations(spec, pod_spec_path(request.object), request.params)
    return patch(operations) if operations else None


def _check_params(params: Any) -> None:
    """Refuse to load with defaults that are not quantities, or a defaultRequest above its default limit (a
    LimitRange with those values is refused by the API server too)."""
    for section in ("defaultRequest", "default"):
        for value in (params.get(section) or {}).values():
            _quantity.parse(value)
    for name, value in (params.get("defaultRequest") or {}).items():
        limit = (params.get("default") or {}).get(name)
        if limit is not None and _quantity.parse(value) > _quantity.parse(limit):
            raise ValueError(f"defaultRequest.{name} {value} is above default.{name} {limit}")


_check_params(DEFAULTS)
