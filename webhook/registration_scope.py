"""What the API server must send, derived from the policies: the fewest webhooks whose rules and selectors cover
exactly the requests some policy can match.

A policy's resource rules become atoms (group, version, resource, operation, scope); atoms that name a resource
its built-in group does not serve (`apps/jobs`, from `apiGroups: [apps, batch]` with `resources: [..., jobs]`)
are dropped, since no request can carry them. Policies of one phase and failure policy with the same statically
known scope (namespaceSelector and objectSelector of the policy and of its binding, ANDed) share a webhook with
that scope. A scoped webhook leaves out the atoms that the unscoped webhook of its phase and failure policy
already routes: both call the same path, which evaluates every policy of that failure policy (checking their
selectors itself), so one call is enough. What cannot be known statically (excludes, resourceNames,
matchConditions, a binding's narrower rules) is left to the server: the webhooks are a superset of what the
policies match, never less.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.policies.compiled import CompiledPolicy
from webhook.policies.model import LabelSelector

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
POLICIES_ANNOTATION = "webhook.dev/policies"  # on a configuration, JSON: each webhook's name -> its policies
OPERATION_ORDER = ("CREATE", "UPDATE", "DELETE", "CONNECT", "*")
# What the built-in API groups serve: a rule's cross product outside these names matches no request.
BUILTIN_RESOURCES: dict[str, frozenset[str]] = {
    "": frozenset({"pods", "services", "configmaps", "secrets", "namespaces", "nodes", "persistentvolumeclaims",
                   "persistentvolumes", "serviceaccounts", "endpoints", "events", "limitranges", "resourcequotas",
                   "replicationcontrollers", "podtemplates", "bindings", "componentstatuses"}),
    "apps": frozenset({"deployments", "statefulsets", "daemonsets", "replicasets", "controllerrevisions"}),
    "batch": frozenset({"jobs", "cronjobs"}),
    "autoscaling": frozenset({"horizontalpodautoscalers"}),
    "policy": frozenset({"poddisruptionbudgets", "podsecuritypolicies"}),
    "networking.k8s.io": frozenset({"networkpolicies", "ingresses", "ingressclasses"}),
    "rbac.authorization.k8s.io": frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"}),
    "scheduling.k8s.io": frozenset({"priorityclasses"}),
    "coordination.k8s.io": frozenset({"leases"}),
    "discovery.k8s.io": frozenset({"endpointslices"}),
    "storage.k8s.io": frozenset({"storageclasses", "volumeattachments", "csidrivers", "csinodes",
                                 "csistoragecapacities"}),
}


@dataclass(frozen=True, slots=True, order=True)
class Atom:
    """One (group, version, resource[/subresource], operation, scope) that a policy's rules match."""

    group: str
    resource: str
    version: str
    operation: str
    scope: str


@dataclass(frozen=True, slots=True)
class Scope:
    """The namespace and object selectors every policy of a webhook shares ({} for none), as the API spells them."""

    namespace_selector: dict[str, Any]
    object_selector: dict[str, Any]

    @property
    def key(self) -> str:
        return json.dumps([self.namespace_selector, self.object_selector], sort_keys=True)

    @property
    def is_empty(self) -> bool:
        return not self.namespace_selector and not self.object_selector


@dataclass(frozen=True, slots=True)
class WebhookPlan:
    """One webhook to register: its scope, rules (as the API spells them) and the policies it serves."""

    scope: Scope
    rules: list[dict[str, Any]]
    policies: tuple[str, ...]


def _exists(group: str, resource: str) -> bool:
    base = resource.partition("/")[0]
    known = BUILTIN_RESOURCES.get(group)
    return known is None or base == "*" or base in known


def atoms(policy: CompiledPolicy) -> set[Atom]:
    """The atoms of the policy's resource rules (excludes and resourceNames only narrow, so are left out)."""
    found = set()
    for rule in policy.match.resourceRules:
        for group in rule.apiGroups:
            for resource in rule.resources:
                if not _exists(group, resource):
                    continue
                for version in rule.apiVersions:
                    for operation in rule.operations:
                        found.add(Atom(group, resource, version, operation, rule.scope))
    return found


def _merged(selectors: Iterable[LabelSelector], *, exempt: Sequence[str]) -> dict[str, Any]:
    """Selectors ANDed into one; a requirement that the exemption already implies is dropped."""
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for selector in selectors:
        for key, value in selector.matchLabels.items():
            if labels.setdefault(key, value) != value:
                expressions.append({"key": key, "operator": "In", "values": [value]})
        for requirement in selector.matchExpressions:
            expression = requirement.model_dump(exclude_defaults=True)
            implied = (requirement.key == NAMESPACE_NAME_LABEL and requirement.operator == "NotIn"
                       and set(requirement.values) <= set(exempt))
            if not implied and expression not in expressions:
                expressions.append(expression)
    merged: dict[str, Any] = {}
    if labels:
        merged["matchLabels"] = dict(sorted(labels.items()))
    if expressions:
        merged["matchExpressions"] = expressions
    return merged


def scope_of(policy: CompiledPolicy, *, exempt: Sequence[str]) -> Scope:
    matches = [m for m in (policy.match, policy.binding_match) if m is not None]
    return Scope(namespace_selector=_merged((m.namespaceSelector for m in matches), exempt=exempt),
                 object_selector=_merged((m.objectSelector for m in matches), exempt=()))


def rules_of(found: Iterable[Atom]) -> list[dict[str, Any]]:
    """The fewest rules for these atoms without a cross product: one per group, scope, versions and operations."""
    by_resource: dict[tuple[str, str, str], dict[str, set[str]]] = {}
    for atom in found:
        by_resource.setdefault((atom.group, atom.resource, atom.scope), {}).setdefault(
            atom.operation, set()).add(atom.version)
    by_rule: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for (group, resource, scope), operations in sorted(by_resource.items()):
        by_versions: dict[tuple[str, ...], list[str]] = {}
        for operation, version_set in operations.items():
            # The API server wants '*' alone in a list; it covers the rest anyway.
            by_versions.setdefault(("*",) if "*" in version_set else tuple(sorted(version_set)), []).append(operation)
        for versions, grouped in by_versions.items():
            ordered = ("*",) if "*" in grouped else tuple(sorted(set(grouped), key=_operation_rank))
            by_rule.setdefault((group, scope, versions, ordered), []).append(resource)
    return [{"apiGroups": [group], "apiVersions": list(versions), "operations": list(operations),
             "resources": _resources(resources), "scope": scope}
            for (group, scope, versions, operations), resources in by_rule.items()]


def _resources(resources: list[str]) -> list[str]:
    """As the API server accepts them: '*/*' alone, '*' only next to subresource patterns."""
    if "*/*" in resources:
        return ["*/*"]
    if "*" in resources:
        return sorted({"*", *(resource for resource in resources if "/" in resource)})
    return sorted(set(resources))


def _operation_rank(operation: str) -> int:
    return OPERATION_ORDER.index(operation) if operation in OPERATION_ORDER else len(OPERATION_ORDER)


def plan(policies: Sequence[CompiledPolicy], *, exempt: Sequence[str]) -> list[WebhookPlan]:
    """The webhooks for the policies of one phase and failure policy: the unscoped one first."""
    grouped: dict[str, tuple[Scope, set[Atom], list[tuple[str, set[Atom]]]]] = {}
    for policy in policies:
        scope = scope_of(policy, exempt=exempt)
        entry = grouped.setdefault(scope.key, (scope, set(), []))
        own = atoms(policy)
        entry[1].update(own)
        label = policy.name if policy.binding in (None, policy.name) else f"{policy.name} ({policy.binding})"
        entry[2].append((label, own))
    unscoped = Scope({}, {}).key
    everywhere = grouped[unscoped][1] if unscoped in grouped else set()
    plans: dict[str, WebhookPlan] = {}
    for key in sorted(grouped, key=lambda k: (k != unscoped, k)):
        scope, found, members = grouped[key]
        remaining = found if key == unscoped else found - everywhere
        if not remaining:
            continue
        # The policies this webhook's calls can reach: for the unscoped one, any policy that shares its rules.
        candidates = [m for _, _, group in grouped.values() for m in group] if key == unscoped else members
        labels = [label for label, own in candidates if own & remaining]
        rules = rules_of(remaining)
        # Scopes that name values of one label (one namespace each, say) and need the same rules: one webhook.
        single = _single_label(scope)
        joined = json.dumps([single[0], scope.object_selector, rules], sort_keys=True) if single else key
        earlier = _single_label(plans[joined].scope) if single and joined in plans else None
        if single and earlier:
            values = sorted({*earlier[1], *single[1]})
            scope = Scope({"matchExpressions": [{"key": single[0], "operator": "In", "values": values}]},
                          scope.object_selector)
            labels = [*plans[joined].policies, *labels]
        plans[joined] = WebhookPlan(scope=scope, rules=rules, policies=tuple(labels))
    return list(plans.values())


def _single_label(scope: Scope) -> tuple[str, list[str]] | None:
    """(key, values) when the namespace selector is one label equal to, or in, some values; else None."""
    selector = scope.namespace_selector
    labels, expressions = selector.get("matchLabels", {}), selector.get("matchExpressions", [])
    if len(labels) == 1 and not expressions:
        key, value = next(iter(labels.items()))
        return key, [value]
    if not labels and len(expressions) == 1 and expressions[0]["operator"] == "In":
        return expressions[0]["key"], list(expressions[0]["values"])
    return None


def scope_suffix(scope: Scope) -> str:
    """A short stable tag for a scoped webhook's name: the same selectors keep the same name."""
    return hashlib.sha256(scope.key.encode()).hexdigest()[:6]
