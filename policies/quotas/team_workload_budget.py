"""team-workload-budget: one workload's replicas times its Pods' requests stay within its team's per-workload
budget (by default none: opt-in per team).

Why: a namespace ResourceQuota answers "no" Pod by Pod, after the Deployment was accepted, so a typo such as
`replicas: 300` or `memory: 64Gi` shows up as a stuck rollout with FailedCreate events. Checking the whole
workload when it is written tells the author at once, with the arithmetic.
Applies to: Deployments, StatefulSets and ReplicaSets (spec.replicas, default 1), Jobs (the Pods that run at
once: spec.parallelism, default 1, but no more than spec.completions) and CronJobs (one run's Job; runs that
overlap under concurrencyPolicy Allow are not added up), in namespaces whose `team` label names a team with a
budget. ReplicaSets owned by a Deployment and Jobs owned by a CronJob are skipped: their owner was checked.
DaemonSets are not checked (their size is the node count, unknown here), nor bare Pods (one replica).
What a Pod requests is what Kubernetes schedules it with: the containers' requests plus the sidecars' (init
containers with restartPolicy Always), at least the largest ordinary init container's (plus the sidecars
started before it), pod-level spec.resources when set, plus spec.overhead; a missing request counts its
limit (as the API server defaults it). Quantities are exact fractions: 3 x 333m is 999m, not 0.999000001.
On UPDATE: denied only when the workload's total for a resource grows past the budget, so scaling down, or
editing a workload that was over budget before the budget was set, is allowed.
Not covered: the scale subresource (`kubectl scale`, HorizontalPodAutoscalers) sends a Scale object without the
pod template; cap autoscalers with their maxReplicas, and namespaces with a ResourceQuota or
quotas/namespace_resource_budget.py.
Parameters (params): teamLabel (the namespace label naming the team, default `team`); budgets: team name to
{resource: quantity} (cpu, memory, or any resource such as nvidia.com/gpu); default: the budget of teams
without an entry (None: no budget). The `example` entry shows the format; replace it with your teams. Change
PARAMS below.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from webhook import AdmissionRequest, deny, helper_module, pod_spec, validating

_quantity = helper_module(__file__, "_quantity")

PARAMS: dict[str, Any] = {
    "teamLabel": "team",
    "budgets": {
        "example": {"cpu": "16", "memory": "32Gi"},
    },
    "default": None,
}

_OWNERS = {"ReplicaSet": "Deployment", "Job": "CronJob"}  # children whose owner this policy checks instead


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _replicas(obj: dict[str, Any]) -> tuple[int, str]:
    """How many Pods of the template run at once, and how that was found (for the message)."""
    kind = obj.get("kind")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if kind == "CronJob":
        job_template = spec.get("jobTemplate") if isinstance(spec.get("jobTemplate"), dict) else {}
        spec = job_template.get("spec") if isinstance(job_template.get("spec"), dict) else {}
    if kind in ("Job", "CronJob"):
        parallelism = _int(spec.get("parallelism"), 1)
        completions = spec.get("completions")
        if isinstance(completions, int) and not isinstance(completions, bool) and completions < parallelism:
            return completions, f"{completions} parallel Pods (completions)"
        return parallelism, f"{parallelism} parallel Pods"
    replicas = _int(spec.get("replicas"), 1)
    return replicas, f"{replicas} replicas"


def _totals(obj: Any) -> tuple[dict[str, Fraction], dict[str, Fraction], str]:
    """The workload's total per resource, one Pod's requests, and the replica text."""
    if not isinstance(obj, dict):
        return {}, {}, ""
    count, text = _replicas(obj)
    per_pod = _quantity.pod_requests(pod_spec(obj))
    return {name: amount * count for name, amount in per_pod.items()}, per_pod, text


def _owned_by_checked_parent(obj: dict[str, Any]) -> bool:
    owner_kind = _OWNERS.get(str(obj.get("kind")))
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return owner_kind is not None and any(
        isinstance(ref, dict) and ref.get("controller") is True and ref.get("kind") == owner_kind
        for ref in metadata.get("ownerReferences") or ())


@validating("team-workload-budget", resources=["deployments", "statefulsets", "replicasets", "jobs", "cronjobs"],
            api_groups=["apps", "batch"], api_versions=["v1"], operations=["CREATE", "UPDATE"],
            namespace_selector={"matchExpressions": [{"key": PARAMS["teamLabel"], "operator": "Exists"}]},
            params=PARAMS, audit=True)
def team_workload_budget(request: AdmissionRequest):
    obj = request.object
    if not isinstance(obj, dict) or _owned_by_checked_parent(obj):
        return None
    namespace = request.namespace_object if isinstance(request.namespace_object, dict) else {}
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    team = labels.get(request.params["teamLabel"])
    budget = request.params["budgets"].get(team) if team else None
    if budget is None:
        budget = request.params.get("default")
    if not budget:
        return None
    totals, per_pod, replicas = _totals(obj)
    old_totals = _totals(request.old_object)[0] if request.operation == "UPDATE" else {}
    problems = []
    for name, limit_text in budget.items():
        limit = _quantity.parse(limit_text)
        total = totals.get(name, Fraction(0))
        if total <= limit or (name in old_totals and total <= old_totals[name]):
            continue
        pod_amount = per_pod.get(name, Fraction(0))
        problems.append(f"{name}: {replicas} x {_quantity.format_quantity(pod_amount, name)} per Pod = "
                        f"{_quantity.format_quantity(total, name)}, over the budget of {limit_text}")
    if not problems:
        return None
    kind = str(obj.get("kind", "")).lower()
    name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName") or ""
    return deny(f"{kind} {name} would request more than team {team}'s per-workload budget: " + "; ".join(problems)
                + ". Lower the replicas or the per-Pod requests, or split the workload (budgets: the "
                  f"team-workload-budget policy's params, team label {request.params['teamLabel']!r})")


def _check_params(params: Any) -> None:
    for budget in [*params["budgets"].values(), params.get("default") or {}]:
        for value in budget.values():
            _quantity.parse(value)  # raises at load: a budget that is not a quantity


_check_params(PARAMS)
