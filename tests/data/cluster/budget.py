"""A CPU budget per namespace from the live cluster: the namespace's annotation `example.com/cpu-budget` caps
the sum of the CPU requests of its Pods (those that still count) plus the new Pod's."""

from webhook import AdmissionRequest, deny, validating

BUDGET = "example.com/cpu-budget"


def millicores(quantity: object) -> int:
    """Simple CPU quantities only: "500m", "2", "0.5"."""
    text = str(quantity).strip()
    if text.endswith("m"):
        return int(text[:-1])
    return round(float(text) * 1000)


def requested(pod: dict) -> int:
    spec = pod.get("spec") or {}
    return sum(millicores(((container.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
               for container in spec.get("containers") or ())


@validating("cpu-budget", resources=["pods"], operations=["CREATE"])
def cpu_budget(request: AdmissionRequest):
    namespace = request.cluster.namespace(request.namespace) or {}
    budget = ((namespace.get("metadata") or {}).get("annotations") or {}).get(BUDGET)
    if budget is None:
        return None
    used = sum(requested(pod) for pod in request.cluster.pods(request.namespace))
    wanted = requested(request.object)
    if used + wanted > millicores(budget):
        return deny(f"namespace {request.namespace} has a CPU budget of {millicores(budget)}m: {used}m is requested "
                    f"already, this Pod asks for {wanted}m more")
    return None
