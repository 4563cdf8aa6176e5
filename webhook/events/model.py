"""CloudEvents 1.0 for admission decisions and policy-set changes: attributes, subject, data."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any

ADMISSION_TYPE_PREFIX = "dev.webhook.admission."
POLICY_TYPE_PREFIX = "dev.webhook.policy."
SUBSCRIBER_TYPE_PREFIX = "dev.webhook.subscriber."
AUDIT_TYPE_PREFIX = "dev.webhook.audit."  # .violation, .resolved (webhook.background_audit)
_ID_NAMESPACE = uuid.UUID("6f1c5d0e-7e55-4a52-9b62-2a7d0f6a4c11")
REDACTED = "<redacted>"


def event_source(*, cluster: str, server: str) -> str:
    """The `source` attribute: which cluster and which server decided."""
    return f"urn:webhook.dev:cluster:{cluster}:server:{server}"


def admission_event_id(uid: str, phase: str) -> str:
    """Stable for one request and phase, so an API server retry of the same review is deduplicated."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{uid}/{phase}"))


def admission_subject(*, resource: str, sub_resource: str, namespace: str, name: str) -> str:
    """`namespaces/prod/deployments/web`, `namespaces/prod` for a Namespace, `nodes/n1` when cluster-scoped."""
    if resource == "namespaces" and not namespace:
        subject = f"namespaces/{name}" if name else "namespaces"
    elif namespace:
        subject = f"namespaces/{namespace}/{resource}" + (f"/{name}" if name else "")
    else:
        subject = resource + (f"/{name}" if name else "")
    return f"{subject}/{sub_resource}" if sub_resource else subject


def admission_event_type(*, allowed: bool, patched: bool, warned: bool) -> str:
    if not allowed:
        return ADMISSION_TYPE_PREFIX + "denied"
    if patched:
        return ADMISSION_TYPE_PREFIX + "mutated"
    if warned:
        return ADMISSION_TYPE_PREFIX + "warned"
    return ADMISSION_TYPE_PREFIX + "allowed"


def rfc3339(moment: float | None = None) -> str:
    """RFC 3339 in UTC with a `Z`, of a Unix time (now when not given)."""
    stamp = datetime.datetime.now(datetime.UTC) if moment is None else datetime.datetime.fromtimestamp(
        moment, datetime.UTC)
    return stamp.isoformat().replace("+00:00", "Z")


def attributes(*, event_id: str, event_type: str, source: str, subject: str, time: float | None = None,
               extensions: Mapping[str, str] | None = None) -> dict[str, str]:
    """Context attributes (spec 1.0); extension names are lower-case letters and digits."""
    return {"specversion": "1.0", "id": event_id, "source": source, "type": event_type, "subject": subject,
            "time": rfc3339(time), "datacontenttype": "application/json", **(extensions or {})}


def is_secret(kind: Mapping[str, Any]) -> bool:
    return kind.get("group", "") == "" and kind.get("kind") == "Secret"


def admission_event(facts: Mapping[str, Any], *, source: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The CloudEvent (attributes, data) of one decision, from the facts the serving process spooled (see
    `AdmissionFacts`): built by the deliverer, so the admission answer does not pay for it."""
    kind, resource = facts["kind"], facts["resource"]
    patch = list(facts["patch"])
    data: dict[str, Any] = {
        "uid": facts["uid"], "phase": facts["phase"], "operation": facts["operation"],
        "kind": kind, "resource": resource, "subResource": facts["sub_resource"],
        "namespace": facts["namespace"], "name": facts["name"],
        "userInfo": {"username": facts["username"], "groups": list(facts["groups"])},
        "allowed": facts["allowed"], "status": facts["status"] or None,
        "warnings": list(facts["warnings"]), "auditAnnotations": dict(facts["audit_annotations"]),
        "policies": list(facts["policies"]),
        "patch": redact_patch(patch) if is_secret(kind) else patch,
        "durationMs": round(facts["duration_ms"], 3),
    }
    if is_secret(kind):  # policy messages may quote a Secret's values (a fault naming a bad value, a denial)
        if data["status"]:
            data["status"] = {**data["status"], "message": REDACTED}
        data["warnings"] = [REDACTED for _ in data["warnings"]]
        data["policies"] = [{**policy, "messages": [REDACTED for _ in policy.get("messages", [])]}
                            for policy in data["policies"]]
    event_attributes = attributes(
        event_id=admission_event_id(facts["uid"], facts["phase"]),
        event_type=admission_event_type(allowed=facts["allowed"], patched=bool(patch),
                                        warned=bool(facts["warnings"])),
        source=source, time=facts["time"],
        subject=admission_subject(resource=resource.get("resource", ""), sub_resource=facts["sub_resource"],
                                  namespace=facts["namespace"], name=facts["name"]),
        extensions={"phase": facts["phase"]},
    )
    return event_attributes, data


def redact_patch(operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patch operations with their values hidden (for Secrets: the paths say what changed, not to what)."""
    return [{k: (REDACTED if k == "value" else v) for k, v in operation.items()} for operation in operations]


def new_event_id() -> str:
    """For events that happen once (policy loads, subscriber changes)."""
    return uuid.uuid4().hex
