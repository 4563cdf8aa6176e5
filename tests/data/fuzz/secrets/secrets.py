"""Python policies over Secrets: one copies a value into a patch, one fails on a value it cannot parse."""

from webhook import AdmissionRequest, mutating, patch, validating


@mutating("secret-backup", resources=["secrets"], api_groups=[""], operations=["CREATE", "UPDATE"],
          object_selector={"matchExpressions": [{"key": "faults", "operator": "DoesNotExist"}]})
def backup(request: AdmissionRequest):
    data = request.object.get("data") or {}
    if "password" in data:
        return patch({"op": "add", "path": "/data/backup", "value": data["password"]})
    return None


@validating("secret-port", resources=["secrets"], api_groups=[""], operations=["CREATE"],
            object_selector={"matchLabels": {"faults": "yes"}})
def port(request: AdmissionRequest):
    int(request.object["data"]["port"])  # a ValueError quoting the value: a policy fault
