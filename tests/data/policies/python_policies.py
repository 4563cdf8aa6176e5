"""Test Python policies: scoped to py-* namespaces."""

from webhook import AdmissionRequest, audit, deny, mutating, patch, validating, warn


@validating(resources=["pods"], operations=["CREATE"])
def forbidden_label(request: AdmissionRequest):
    if request.namespace != "py-ns":
        return None
    labels = (request.object.get("metadata") or {}).get("labels") or {}
    results = [warn(f"checked by Python for {request.user_info.username}"), audit("checked", "yes")]
    if "forbidden" in labels:
        results.append(deny("the forbidden label is forbidden", reason="Invalid"))
    return results


@validating("python-raises", resources=["pods"], operations=["CREATE"],
            namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": "py-raise"}})
def raises(request: AdmissionRequest):
    raise RuntimeError("policy bug")


@mutating(resources=["pods"], operations=["CREATE"],
          namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": "py-ns"}},
          params={"owner": "platform"})
def add_owner(request: AdmissionRequest):
    return patch({"op": "add", "path": "/metadata/annotations/owner", "value": request.params["owner"]})
