"""default-resources: fill in missing CPU/memory requests and the memory limit of every container (mutation).

Why: like the LimitRanger admission plugin, defaults make a Pod schedulable by its real needs without every
author writing them; quotas/require-requests-and-limits.yaml then checks the result.
Applies to: Pods, in every namespace except kube-system. Existing values are never changed.
Parameters: requests.cpu (100m), requests.memory (128Mi), limits.memory (512Mi).
"""

from webhook import AdmissionRequest, mutating, patch

DEFAULTS = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


@mutating("default-resources", resources=["pods"], api_groups=[""], api_versions=["v1"], operations=["CREATE"],
          namespace_selector={"matchExpressions": [
              {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]},
          params=DEFAULTS)
def default_resources(request: AdmissionRequest):
    operations = []
    spec = request.object.get("spec") or {}
    for field in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(field) or []):
            base = f"/spec/{field}/{index}/resources"
            resources = container.get("resources")
            if not isinstance(resources, dict):
                operations.append({"op": "add", "path": base, "value": {}})
                resources = {}
            for section, defaults in request.params.items():
                present = resources.get(section)
                if not isinstance(present, dict):
                    operations.append({"op": "add", "path": f"{base}/{section}", "value": dict(defaults)})
                    continue
                for name, value in defaults.items():
                    if name not in present:
                        operations.append({"op": "add", "path": f"{base}/{section}/{name}", "value": value})
    return patch(operations) if operations else None
