"""namespace-resource-budget: the CPU and memory requests of a namespace's running Pods, plus the new Pod's, stay
within the budget its annotations set (opt-in: namespaces without the annotations have no budget).

    metadata:
      annotations:
        quotas.webhook.dev/cpu: "10"        # CPU requests of all running Pods, at most
        quotas.webhook.dev/memory: 20Gi     # memory requests of all running Pods, at most

Why: a budget a team owner can read on the namespace, answered with the numbers (what runs, what this Pod adds)
when a Pod is created. Unlike a ResourceQuota it does not require every Pod to declare requests (Pods without
requests count as 0; quotas/require-requests-and-limits.yaml and quotas/default_resources.py see to that).
Applies to: Pod creation, and in-place resizes (pods/resize), in every namespace but kube-system that carries
an annotation. The running Pods come from the live cluster state (`request.cluster.pods`), which leaves out
Succeeded and Failed Pods, as ResourceQuota does; Pods past their deletion grace period are left out too when
the state carries deletionTimestamp. A Pod counts what Kubernetes schedules it with: the containers' requests
plus the sidecars' (init containers with restartPolicy Always), at least the largest ordinary init container's
(plus the sidecars started before it), pod-level spec.resources when set, plus spec.overhead (RuntimeClass);
a missing request counts its limit. Quantities are exact fractions. A resource is only checked when the new Pod
asks for some of it (as ResourceQuota does), so a namespace already over budget can still run Pods that do
not add to the excess; a resize is checked when it raises a request.

failurePolicy Ignore, deliberately. When the cluster state cannot answer (the webhook just started and its
caches have not listed yet, or it lost the API server for longer than the staleness limit), the lookup raises
ClusterUnavailable, a fault. With Fail, every Pod creation in the cluster, including the Pods controllers
recreate after node failures, would be denied for as long as the webhook cannot see the cluster: an outage of
the webhook's cache would become an outage of every workload. With Ignore the Pod is admitted with the warning
"policy fault ignored (failurePolicy Ignore): ...". This budget is a friendly early check, not a hard
guarantee anyway: two Pods created at the same instant both see the same running Pods. Where overshooting
must be impossible, add a ResourceQuota (the API server serialises its usage updates).
A budget annotation that is not a quantity is reported as a warning and not enforced.
Parameters (params): annotations, a map of resource name to the namespace annotation holding its budget
(add e.g. `ephemeral-storage: quotas.webhook.dev/ephemeral-storage`). Change PARAMS below.
"""

from __future__ import annotations

import datetime
from fractions import Fraction
from typing import Any

from webhook import AdmissionRequest, deny, helper_module, validating, warn

_quantity = helper_module(__file__, "_quantity")

PARAMS = {"annotations": {"cpu": "quotas.webhook.dev/cpu", "memory": "quotas.webhook.dev/memory"}}


def _gone(pod: Any, now: datetime.datetime) -> bool:
    """A Pod whose deletion grace period is over no longer counts (as ResourceQuota's pod evaluator)."""
    metadata = pod.get("metadata") or {}
    stamp, grace = metadata.get("deletionTimestamp"), metadata.get("deletionGracePeriodSeconds")
    if not stamp or not isinstance(grace, int):
        return False
    try:
        deleted = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return False
    if deleted.tzinfo is None:
        deleted = deleted.replace(tzinfo=datetime.UTC)
    return now > deleted + datetime.timedelta(seconds=grace)


@validating("namespace-resource-budget", resources=["pods", "pods/resize"], api_groups=[""], api_versions=["v1"],
            operations=["CREATE", "UPDATE"], failure_policy="Ignore", params=PARAMS,
            namespace_selector={"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]})
def namespace_resource_budget(request: AdmissionRequest):
    if request.operation == "UPDATE" and request.sub_resource != "resize":
        return None  # a Pod's requests change only through the resize subresource
    namespace = request.cluster.namespace(request.namespace)  # ClusterUnavailable: a fault (see above)
    if namespace is None:  # no cluster connection: the policy directory's Namespace objects
        namespace = request.namespace_object if isinstance(request.namespace_object, dict) else {}
    annotations = (namespace.get("metadata") or {}).get("annotations") or {}
    budgets: dict[str, tuple[str, Fraction]] = {}
    results: list[Any] = []
    for resource, key in request.params["annotations"].items():
        if key not in annotations:
            continue
        amount = _quantity.try_parse(annotations[key])
        if amount is None:
            results.append(warn(f"namespace {request.namespace}: annotation {key}={annotations[key]!r} is not a "
                                f"quantity (examples: 10, 500m, 20Gi); its {resource} budget is not enforced"))
            continue
        budgets[resource] = (key, amount)
    if not budgets:
        return results or None
    wanted = _quantity.pod_requests((request.object or {}).get("spec"))
    before = _quantity.pod_requests((request.old_object or {}).get("spec")) if request.operation == "UPDATE" else {}
    checked = [r for r in budgets if wanted.get(r, 0) > 0 and wanted.get(r, 0) > before.get(r, 0)]
    if not checked:
        return results or None
    name = (request.object.get("metadata") or {}).get("name") or request.name
    running: dict[str, Fraction] = {}
    for pod in request.cluster.pods(request.namespace):  # not Succeeded or Failed
        if name and (pod.get("metadata") or {}).get("name") == name:
            continue  # this very Pod (being resized, or a stale cache entry): counted as it will be
        if _gone(pod, request.now):
            continue
        for resource, amount in _quantity.pod_requests(pod.get("spec")).items():
            running[resource] = running.get(resource, Fraction(0)) + amount
    problems = []
    for resource in checked:
        key, budget = budgets[resource]
        used, adds = running.get(resource, Fraction(0)), wanted[resource]
        if used + adds > budget:
            text = _quantity.format_quantity
            problems.append(f"{resource} requests would reach {text(used + adds, resource)} (running Pods "
                            f"{text(used, resource)} + this Pod {text(adds, resource)}), over the budget of "
                            f"{annotations[key]} (annotation {key})")
    if problems:
        return deny(f"namespace {request.namespace}: " + "; ".join(problems) + ". Lower this Pod's requests, "
                    "remove Pods the namespace no longer needs, or ask its owner for a larger budget")
    return results or None
