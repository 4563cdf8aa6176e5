"""Python policies for the audit tests: one opted in, one not (it needs a real request)."""

from webhook import AdmissionRequest, deny, validating


@validating("pod-needs-requests", resources=["pods"], api_groups=[""], api_versions=["v1"], audit=True,
            annotations={"policies.webhook.dev/severity": "low", "policies.webhook.dev/category": "Quotas"})
def pod_needs_requests(request: AdmissionRequest):
    containers = request.object["spec"]["containers"]
    missing = [c["name"] for c in containers if not (c.get("resources") or {}).get("requests")]
    return deny(f"containers without requests: {', '.join(missing)}") if missing else None


@validating("only-alice", resources=["pods"], api_groups=[""], api_versions=["v1"])
def only_alice(request: AdmissionRequest):
    return None if request.user_info.username == "alice" else deny("only alice")
