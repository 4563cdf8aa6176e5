"""What the audit lists and which policies judge it: the resources named by the audited policies' rules, the
policies that take part, and the severity and category reports give each policy.

The audit presents an existing object as the API server would present it being created (operation CREATE, no
old object, no user: see `scan`), so a policy takes part when it validates, matches CREATE and is not a Python
policy that did not opt in (`@validating(..., audit=True)`: some need a real request). Resources come from the
explicit names in those policies' resource rules; a table gives each one's group version, kind and scope
(the API server's discovery would give the same, at a request per group). Wildcards (`*`), subresources and
resources missing from the table are not listed: a note says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from webhook.authoring import POLICY_MARK
from webhook.policies.compiled import CompiledPolicy, PolicySet
from webhook.policies.matching import ResourceKey

SEVERITY_KEYS = ("policies.webhook.dev/severity", "policies.kyverno.io/severity")
CATEGORY_KEYS = ("policies.webhook.dev/category", "policies.kyverno.io/category")
SEVERITIES = ("critical", "high", "medium", "low", "info")
OPERATION = "CREATE"
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:
        """The list path across namespaces (or of the cluster-scoped resource)."""
        return f"/apis/{self.group}/{self.version}/{self.resource}" if self.group else f"/api/v1/{self.resource}"

    def key(self) -> ResourceKey:
        """How an object of this resource is matched (as a CREATE)."""
        return ResourceKey(operation=OPERATION, group=self.group, version=self.version, resource=self.resource,
                           sub_resource="", request_group=self.group, request_version=self.version,
                           request_resource=self.resource, request_sub_resource="", namespaced=self.namespaced)


def _table() -> dict[tuple[str, str], Resource]:
    rows = {
        ("", "v1", True): "pods/Pod services/Service configmaps/ConfigMap secrets/Secret "
                          "serviceaccounts/ServiceAccount persistentvolumeclaims/PersistentVolumeClaim "
                          "replicationcontrollers/ReplicationController "
                          "limitranges/LimitRange resourcequotas/ResourceQuota",
        ("", "v1", False): "namespaces/Namespace nodes/Node persistentvolumes/PersistentVolume",
        ("apps", "v1", True): "deployments/Deployment statefulsets/StatefulSet daemonsets/DaemonSet "
                              "replicasets/ReplicaSet",
        ("batch", "v1", True): "jobs/Job cronjobs/CronJob",
        ("autoscaling", "v2", True): "horizontalpodautoscalers/HorizontalPodAutoscaler",
        ("policy", "v1", True): "poddisruptionbudgets/PodDisruptionBudget",
        ("networking.k8s.io", "v1", True): "ingresses/Ingress networkpolicies/NetworkPolicy",
        ("networking.k8s.io", "v1", False): "ingressclasses/IngressClass",
        ("scheduling.k8s.io", "v1", False): "priorityclasses/PriorityClass",
        ("rbac.authorization.k8s.io", "v1", True): "roles/Role rolebindings/RoleBinding",
        ("rbac.authorization.k8s.io", "v1", False): "clusterroles/ClusterRole clusterrolebindings/ClusterRoleBinding",
        ("storage.k8s.io", "v1", False): "storageclasses/StorageClass",
    }
    table = {}
    for (group, version, namespaced), names in rows.items():
        for entry in names.split():
            resource, kind = entry.split("/")
            table[(group, resource)] = Resource(group, version, resource, kind, namespaced)
    return table


KNOWN = _table()


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What a report says about a policy besides its results."""

    severity: str = ""
    category: str = ""


@dataclass(frozen=True)
class AuditPlan:
    """One policy set prepared for auditing: the policies that take part, what to list, and the notes."""

    policy_set: PolicySet  # only the audited validating policies (mutating ones are left out too)
    resources: tuple[Resource, ...]
    notes: tuple[str, ...]
    info: Mapping[str, PolicyInfo]  # by policy name
    digest: str  # of the source set


def takes_part(policy: CompiledPolicy) -> str | None:
    """Why a validating policy is not audited, or None when it is."""
    if policy.python_function is not None:
        spec = getattr(policy.python_function, POLICY_MARK, None)
        if spec is None or not spec.audit:
            return f"Python policy {policy.name} is not audited (opt in with @validating(..., audit=True))"
    if not any("*" in rule.operations or OPERATION in rule.operations for rule in policy.match.resourceRules):
        return f"policy {policy.label} matches no CREATE: not audited (the audit presents objects as CREATE)"
    return None


def plan(policy_set: PolicySet) -> AuditPlan:
    """The audited subset of `policy_set` and the resources its rules name."""
    notes: list[str] = []

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)

    audited: list[CompiledPolicy] = []
    for policy in policy_set.in_phase("validate"):
        reason = takes_part(policy)
        if reason is None:
            audited.append(policy)
        else:
            note(reason)
    resources: dict[tuple[str, str], Resource] = {}
    for policy in audited:
        named, noted = False, len(notes)
        for rule in policy.match.resourceRules:
            if "*" not in rule.operations and OPERATION not in rule.operations:
                continue
            for pattern in rule.resources:
                if "/" in pattern or pattern == "*":
                    continue  # subresources have no object of their own; wildcards are noted below
                candidates = [resource for (group, name), resource in KNOWN.items() if name == pattern
                              and ("*" in rule.apiGroups or group in rule.apiGroups)]
                if not candidates:
                    note(f"policy {policy.label}: resource {pattern!r} of API group(s) "
                         f"{', '.join(repr(g) for g in rule.apiGroups)} is not known to the audit: not listed")
                for resource in candidates:
                    if policy.matches_key(resource.key(), name=None):
                        resources[(resource.group, resource.resource)] = resource
                        named = True
                    elif "*" not in rule.apiVersions and resource.version not in rule.apiVersions:
                        note(f"policy {policy.label}: the audit lists {resource.resource} in {resource.api_version} "
                             "only, which its rules do not match")
        if not named and len(notes) == noted:
            note(f"policy {policy.label} names no resource the audit lists ('*' or subresources only): nothing is "
                 "listed for it; it still judges the objects listed for other policies")
    subset = dataclasses.replace(policy_set, policies=tuple(audited), _by_phase={}, _cache={}, _lock=threading.Lock(),
                                 fast_validators={})
    ordered = tuple(sorted(resources.values(), key=lambda r: (r.namespaced, r.group, r.resource)))
    return AuditPlan(policy_set=subset, resources=ordered, notes=tuple(notes), info=policy_info(policy_set, audited),
                     digest=policy_set.digest)


def policy_info(policy_set: PolicySet, policies: list[CompiledPolicy]) -> dict[str, PolicyInfo]:
    """Severity and category from each policy's annotations (YAML metadata.annotations, or a Python policy's
    `annotations=`); an unknown severity is left out (reports accept only the five)."""
    by_name: dict[tuple[str, str], Mapping[str, Any]] = {}
    for file in policy_set.files:
        if not file.endswith((".yaml", ".yml")):
            continue
        with contextlib.suppress(OSError, yaml.YAMLError):
            for document in yaml.load_all(Path(file).read_text(), Loader=_LOADER):
                metadata = document.get("metadata") if isinstance(document, dict) else None
                if isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict):
                    by_name[(str(document.get("kind")), str(metadata.get("name")))] = metadata["annotations"]
    found: dict[str, PolicyInfo] = {}
    for policy in policies:
        spec = getattr(policy.python_function, POLICY_MARK, None) if policy.python_function else None
        annotations = spec.annotations if spec is not None else by_name.get((policy.kind, policy.name), {})
        severity = next((str(annotations[key]).lower() for key in SEVERITY_KEYS if key in annotations), "")
        category = next((str(annotations[key]) for key in CATEGORY_KEYS if key in annotations), "")
        found[policy.name] = PolicyInfo(severity if severity in SEVERITIES else "", category)
    return found
