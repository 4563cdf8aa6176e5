from webhook import AdmissionRequest, deny, pod_spec, validating


def _millicores(text: str) -> int:
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def _requested(spec) -> int:
    return sum(_millicores(((c.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
               for c in (spec or {}).get("containers", []))


@validating("cpu-budget", resources=["pods"], operations=["CREATE"], pod_templates=True)
def cpu_budget(request: AdmissionRequest):
    namespace = request.cluster.namespace(request.namespace) or {}
    budget = (namespace.get("metadata", {}).get("annotations") or {}).get("example.com/cpu-budget")
    if budget is None:
        return None
    used = sum(_requested(pod.get("spec")) for pod in request.cluster.pods(request.namespace))
    wanted = _requested(pod_spec(request.object))
    if used + wanted > _millicores(budget):
        return deny(f"{request.namespace} would use {used + wanted}m of its {budget} CPU budget "
                    f"({request.now:%Y-%m-%d})")
    return None
