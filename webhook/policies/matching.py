"""Which policies apply to a request: resource rules, label selectors, namespace selector (as the API server)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.policies.model import LabelSelector, MatchResources, RuleWithOperations

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, slots=True)
class ResourceKey:
    """What resource rules look at: the same key always matches the same rules, so results are cached."""

    operation: str
    group: str
    version: str
    resource: str
    sub_resource: str
    request_group: str
    request_version: str
    request_resource: str
    request_sub_resource: str
    namespaced: bool


def _split_resource(pattern: str) -> tuple[str, str]:
    resource, _, sub = pattern.partition("/")
    return resource, sub


def _rule_matches(rule: RuleWithOperations, *, operation: str, group: str, version: str, resource: str,
                  sub_resource: str, namespaced: bool) -> bool:
    if "*" not in rule.operations and operation not in rule.operations:
        return False
    if "*" not in rule.apiGroups and group not in rule.apiGroups:
        return False
    if "*" not in rule.apiVersions and version not in rule.apiVersions:
        return False
    is_namespace_object = group == "" and resource == "namespaces"
    if rule.scope == "Namespaced" and (is_namespace_object or not namespaced):
        return False
    if rule.scope == "Cluster" and not (is_namespace_object or not namespaced):
        return False
    for pattern in rule.resources:
        want_resource, want_sub = _split_resource(pattern)
        if want_resource in ("*", resource) and want_sub in ("*", sub_resource):
            return True
    return False


def _rule_applies(rule: RuleWithOperations, key: ResourceKey, *, equivalent: bool, name: str | None) -> bool:
    """One rule against the request; `name=None` means resourceNames are not known yet (treated as a match)."""
    if name is not None and rule.resourceNames and name not in rule.resourceNames:
        return False
    if _rule_matches(rule, operation=key.operation, group=key.group, version=key.version,
                     resource=key.resource, sub_resource=key.sub_resource, namespaced=key.namespaced):
        return True
    return equivalent and bool(key.request_resource) and _rule_matches(
        rule, operation=key.operation, group=key.request_group, version=key.request_version,
        resource=key.request_resource, sub_resource=key.request_sub_resource, namespaced=key.namespaced,
    )


def rules_match(match: MatchResources, key: ResourceKey, *, name: str | None) -> bool:
    """Resource rules, excludes first.

    With `name=None` the answer depends on `key` alone and may be cached: rules that list resourceNames
    count as matching and excludes that list resourceNames count as not excluding, so the answer is a
    superset; call again with the object's name for policies that use resourceNames.
    """
    equivalent = match.matchPolicy == "Equivalent"
    for rule in match.excludeResourceRules:
        if name is None and rule.resourceNames:
            continue
        if _rule_applies(rule, key, equivalent=equivalent, name=name):
            return False
    if not match.resourceRules:  # a binding's matchResources without rules: everything the policy matches
        return True
    return any(_rule_applies(rule, key, equivalent=equivalent, name=name) for rule in match.resourceRules)


def uses_resource_names(match: MatchResources) -> bool:
    return any(rule.resourceNames for rule in (*match.resourceRules, *match.excludeResourceRules))


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics; an empty selector matches everything."""
    for key, value in selector.matchLabels.items():
        if labels.get(key) != value:
            return False
    for requirement in selector.matchExpressions:
        present = requirement.key in labels
        if requirement.operator == "In" and (not present or labels[requirement.key] not in requirement.values):
            return False
        if requirement.operator == "NotIn" and present and labels[requirement.key] in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def is_empty(selector: LabelSelector) -> bool:
    return not selector.matchLabels and not selector.matchExpressions


def labels_of(obj: Any) -> dict[str, str] | None:
    """An object's labels, or None when it is null or has no metadata (cannot match a selector)."""
    if not isinstance(obj, dict):
        return None
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    labels = metadata.get("labels") or {}
    # Label values are strings (the API server validates them); anything else cannot match a selector.
    return {str(k): v for k, v in labels.items() if isinstance(v, str)} if isinstance(labels, dict) else {}


def object_selector_matches(selector: LabelSelector, *, obj: Any, old_obj: Any) -> bool:
    """Matches when the object or the old object matches; a null object never matches a non-empty selector."""
    if is_empty(selector):
        return True
    for candidate in (obj, old_obj):
        labels = labels_of(candidate)
        if labels is not None and selector_matches(selector, labels):
            return True
    return False


def namespace_selector_matches(selector: LabelSelector, *, key: ResourceKey, obj: Any, old_obj: Any,
                               namespace_labels: Mapping[str, str] | None) -> bool:
    """As the API server: a Namespace is matched on its own labels, other cluster-scoped objects always match."""
    if is_empty(selector):
        return True
    if key.group == "" and key.resource == "namespaces":
        labels = labels_of(obj) if obj is not None else labels_of(old_obj)
        return selector_matches(selector, labels or {})
    if not key.namespaced:
        return True
    return selector_matches(selector, namespace_labels or {})
