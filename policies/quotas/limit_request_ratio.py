"""limit-request-ratio: a container's limit may be at most N times its request, per resource (by default memory
2x, CPU 4x), as a LimitRange's `maxLimitRequestRatio` does.

Why: the scheduler reserves the request, the kernel allows up to the limit. A memory limit far above the request
overcommits the node: when several containers use what their limits allow, the node runs out of memory and the
kubelet evicts or the kernel OOM-kills Pods that stayed within their limits. Capping the ratio keeps what a
node promised close to what it can give. Production only: on dev clusters overcommit is usually the point.
Applies to: Pods (also in-place resizes through pods/resize) and the pod templates of Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, in namespaces labelled `environment: production`;
containers, init containers and sidecars. A resource is checked when the container has a limit for it; a
missing request counts as equal to the limit (the API server defaults it so); a zero request with a non-zero
limit is denied. Requiring the limit itself is quotas/require-requests-and-limits.yaml's job.
Quantities are compared exactly (fractions, not floats): 2Gi against 1Gi is exactly 2, 300m against 100m
exactly 3, whatever their suffixes.
On UPDATE: only of a workload whose pod template changes, so scaling an existing workload is never blocked, and a
Pod's resize; other Pod updates cannot change resources and are not checked.
Parameters (params): maxLimitRequestRatio, a map of resource name to the largest allowed limit/request ratio
(a number or a decimal string such as "1.5"; 1 means limit == request, Guaranteed QoS). Change PARAMS below.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from webhook import AdmissionRequest, deny, helper_module, pod_spec, pod_spec_path, validating

_quantity = helper_module(__file__, "_quantity")

PARAMS = {"maxLimitRequestRatio": {"cpu": "4", "memory": "2"}}


def _ratio_text(ratio: Fraction) -> str:
    if ratio.denominator == 1:
        return f"{ratio.numerator}x"
    return f"{float(ratio):.3g}x"


def _problems(container: Any, caps: dict[str, Fraction]) -> list[str]:
    if not isinstance(container, dict):
        return []
    resources = container.get("resources") if isinstance(container.get("resources"), dict) else {}
    requests = resources.get("requests") if isinstance(resources.get("requests"), dict) else {}
    limits = resources.get("limits") if isinstance(resources.get("limits"), dict) else {}
    found = []
    for name, cap in caps.items():
        if name not in limits:
            continue
        limit = _quantity.parse(limits[name])
        request = _quantity.parse(requests[name]) if name in requests else limit
        lowest = limit / cap  # the smallest request this limit allows
        if request <= 0 < limit:
            found.append(f"{container.get('name')}: {name} request is {requests.get(name)} with a limit of "
                         f"{limits[name]}; set the request to at least {_quantity.format_quantity(lowest, name)}")
        elif request > 0 and limit / request > cap:
            found.append(
                f"{container.get('name')}: {name} limit {limits[name]} is {_ratio_text(limit / request)} its request "
                f"{requests[name]} (at most {_ratio_text(cap)}); raise the request to at least "
                f"{_quantity.format_quantity(lowest, name)} or lower the limit to at most "
                f"{_quantity.format_quantity(request * cap, name)}")
    return found


@validating("limit-request-ratio", resources=["pods", "pods/resize"], api_groups=[""], api_versions=["v1"],
            operations=["CREATE", "UPDATE"], pod_templates=True,
            namespace_selector={"matchLabels": {"environment": "production"}}, params=PARAMS, audit=True)
def limit_request_ratio(request: AdmissionRequest):
    spec = pod_spec(request.object)
    if not isinstance(spec, dict):
        return None
    if request.operation == "UPDATE" and (spec == pod_spec(request.old_object) or
                                          (request.kind.kind == "Pod" and request.sub_resource != "resize")):
        return None
    caps = {str(name): _quantity.parse(value) for name, value in request.params["maxLimitRequestRatio"].items()}
    problems = []
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or ():
            problems.extend(_problems(container, caps))
    if problems:
        return deny(f"limits too far above requests (at {pod_spec_path(request.object)}): " + "; ".join(problems))
    return None


def _check_params(params: Any) -> None:
    for name, value in params["maxLimitRequestRatio"].items():
        if _quantity.parse(value) < 1:
            raise ValueError(f"maxLimitRequestRatio.{name} is {value}; a ratio below 1 would forbid every limit")


_check_params(PARAMS)
