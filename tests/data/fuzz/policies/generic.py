"""Python policies that walk whatever object they are given, as careless real ones do."""

from webhook import AdmissionRequest, deny, mutating, patch, validating, warn


def _nodes(value, depth=0):
    if isinstance(value, dict):
        return 1 + sum(_nodes(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_nodes(v, depth + 1) for v in value)
    return 1


@validating("fuzz-python-size", resources=["*"], api_groups=["*"], api_versions=["*"],
            operations=["CREATE", "UPDATE", "DELETE", "CONNECT"])
def size(request: AdmissionRequest):
    nodes = _nodes(request.object) + _nodes(request.old_object)
    if nodes > 5000:
        return deny(f"{nodes} nodes is too many", reason="RequestEntityTooLarge")
    name = request.object["metadata"]["name"]  # a KeyError or TypeError on odd objects: a fault
    return warn(f"{name}: {nodes} nodes") if nodes > 100 else None


@mutating("fuzz-python-annotate", resources=["pods", "deployments"], api_groups=["", "apps"],
          failure_policy="Ignore")
def annotate(request: AdmissionRequest):
    metadata = request.object.get("metadata") or {}
    operations = []
    if "annotations" not in metadata:
        operations.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    operations.append({"op": "add", "path": "/metadata/annotations/fuzz-user",
                       "value": request.user_info.username})
    return patch(operations)
