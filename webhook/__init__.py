"""Kubernetes admission webhook server: CEL and Python policies, CloudEvents notifications.

The names below are the Python policy API; everything else is reached through `webhook` commands.
"""

from webhook.authoring import (
    AdmissionRequest,
    Allow,
    Audit,
    Deny,
    GroupVersionKind,
    GroupVersionResource,
    Patch,
    UserInfo,
    Warn,
    allow,
    audit,
    deny,
    helper_module,
    mutating,
    patch,
    pod_metadata,
    pod_spec,
    pod_spec_path,
    validating,
    warn,
)
from webhook.state import ClusterUnavailable

__all__ = [
    "AdmissionRequest",
    "Allow",
    "Audit",
    "ClusterUnavailable",
    "Deny",
    "GroupVersionKind",
    "GroupVersionResource",
    "Patch",
    "UserInfo",
    "Warn",
    "allow",
    "audit",
    "deny",
    "helper_module",
    "mutating",
    "patch",
    "pod_metadata",
    "pod_spec",
    "pod_spec_path",
    "validating",
    "warn",
]
