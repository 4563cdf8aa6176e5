"""AdmissionReview (admission.k8s.io/v1 and v1beta1): the request model and the response builder."""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webhook.errors import BadRequest

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class GroupVersionKind(_Wire):
    group: str = ""
    version: str
    kind: str


class GroupVersionResource(_Wire):
    group: str = ""
    version: str
    resource: str


class UserInfo(_Wire):
    username: str = ""
    uid: str = ""
    groups: list[str] = Field(default_factory=list)
    extra: dict[str, list[str]] = Field(default_factory=dict)


class AdmissionRequest(_Wire):
    """The `request` of an AdmissionReview, fields spelled as Kubernetes spells them."""

    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str = ""
    requestKind: GroupVersionKind | None = None
    requestResource: GroupVersionResource | None = None
    requestSubResource: str = ""
    name: str = ""
    namespace: str = ""
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: UserInfo = Field(default_factory=UserInfo)
    object: dict[str, Any] | None = None
    oldObject: dict[str, Any] | None = None
    dryRun: bool = False
    options: dict[str, Any] | None = None


class AdmissionReview(_Wire):
    apiVersion: Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def _shown(value: Any) -> str:
    """A value from the request, for an error message: strings quoted and cut short, anything else by type."""
    return repr(value[:100]) if isinstance(value, str) else f"a {type(value).__name__}"


def parse_review(body: bytes) -> tuple[AdmissionReview, dict[str, Any]]:
    """The validated review and the raw request dict (kept for the CEL `request` variable); BadRequest if not."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"request body is not valid JSON: {error}", reason="InvalidJSON") from error
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object (an AdmissionReview), got {type(data).__name__}",
                         reason="InvalidAdmissionReview")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if kind != "AdmissionReview" or api_version not in API_VERSIONS:
        raise BadRequest(
            f"expected kind AdmissionReview with apiVersion {' or '.join(API_VERSIONS)}, "
            f"got kind {_shown(kind)} apiVersion {_shown(api_version)}", reason="UnsupportedAdmissionReviewVersion")
    try:
        review = AdmissionReview.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()[:10])
        raise BadRequest(f"invalid AdmissionReview: {problems}", reason="InvalidAdmissionReview") from error
    return review, data["request"]


def build_response(*, api_version: str, uid: str, allowed: bool, code: int = 200, reason: str = "",
                   message: str = "", warnings: list[str] | None = None,
                   audit_annotations: dict[str, str] | None = None,
                   patch: list[dict[str, Any]] | None = None) -> bytes:
    """The AdmissionReview reply as JSON bytes; `uid` echoed, patch base64 JSONPatch only when non-empty."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": code, "reason": reason, "message": message}
    if warnings:
        response["warnings"] = warnings
    if audit_annotations:
        response["auditAnnotations"] = audit_annotations
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    return orjson.dumps({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
