"""`webhook register`: the Validating- and MutatingWebhookConfiguration that route requests to this server.

The rules are the union of the loaded policies' resource rules, so the API server only calls for what some
policy can match (excludes, resourceNames and selectors are then checked here). Policies with
`failurePolicy: Fail` and `Ignore` go to two webhooks of the same configuration (paths `/validate/fail` and
`/validate/ignore`, each evaluating only its own policies), so that an unreachable server blocks only what
must not pass unchecked, and no policy is evaluated twice for one request. `kube-system` and the server's
own namespace are exempt, so the cluster can always be repaired and the webhook's own Pods can always start.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webhook.policies.compiled import Phase, PolicySet

GROUP_VERSION = "admissionregistration.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
ALWAYS_EXEMPT = ("kube-system",)
_KINDS: dict[Phase, str] = {"validate": "ValidatingWebhookConfiguration", "mutate": "MutatingWebhookConfiguration"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where the API server sends reviews: a URL (a server outside the cluster) or a Service."""

    url: str | None = None
    service_name: str | None = None
    service_namespace: str | None = None
    service_port: int = 443

    def client_config(self, path: str, ca_bundle: bytes) -> dict[str, Any]:
        config: dict[str, Any]
        if self.url is not None:
            config = {"url": f"{self.url.rstrip('/')}{path}"}
        else:
            config = {"service": {"namespace": self.service_namespace, "name": self.service_name,
                                  "path": path, "port": self.service_port}}
        config["caBundle"] = base64.b64encode(ca_bundle).decode()
        return config


def _rules(policies: Sequence[Any]) -> list[dict[str, Any]]:
    """The union of the policies' resource rules, without repeats, in first-seen order."""
    seen: dict[str, dict[str, Any]] = {}
    for policy in policies:
        for rule in policy.match.resourceRules:
            entry = {"apiGroups": list(rule.apiGroups), "apiVersions": list(rule.apiVersions),
                     "operations": list(rule.operations), "resources": list(rule.resources), "scope": rule.scope}
            seen.setdefault(repr(sorted(entry.items())), entry)
    return list(seen.values())


def webhook_configurations(policy_set: PolicySet, *, target: Target, ca_bundle: bytes, name: str = "webhook.dev",
                           own_namespace: str | None = None, exempt_namespaces: Sequence[str] = (),
                           timeout_seconds: int = 5) -> list[dict[str, Any]]:
    """The two configurations (a phase without policies gets none; an existing one is then left alone)."""
    exempt = list(dict.fromkeys([*ALWAYS_EXEMPT, *([own_namespace] if own_namespace else []), *exempt_namespaces]))
    configurations = []
    for phase, kind in _KINDS.items():
        webhooks = []
        for failure_policy in ("Fail", "Ignore"):
            policies = [p for p in policy_set.in_phase(phase) if p.failure_policy == failure_policy]
            if not policies:
                continue
            webhook: dict[str, Any] = {
                "name": f"{failure_policy.lower()}.{phase}.{name}",
                "clientConfig": target.client_config(f"/{phase}/{failure_policy.lower()}", ca_bundle),
                "rules": _rules(policies),
                "failurePolicy": failure_policy,
                "matchPolicy": "Equivalent",
                "namespaceSelector": {"matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": exempt}]},
                "objectSelector": {},
                "sideEffects": "NoneOnDryRun",
                "timeoutSeconds": timeout_seconds,
                "admissionReviewVersions": ["v1", "v1beta1"],
            }
            if phase == "mutate":
                # Called again when a later mutating webhook changed the object, so our defaults still hold.
                webhook["reinvocationPolicy"] = "IfNeeded"
            webhooks.append(webhook)
        if webhooks:
            configurations.append({"apiVersion": GROUP_VERSION, "kind": kind,
                                   "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "webhook"}},
                                   "webhooks": webhooks})
    return configurations


def as_model(manifest: dict[str, Any]) -> Any:
    """The `kubernetes` client's (pydantic) model of a configuration: types and required fields checked."""
    from kubernetes import client

    return getattr(client, f"V1{manifest['kind']}").from_dict(manifest)


def schema_problems(manifest: dict[str, Any]) -> list[str]:
    """What the admissionregistration.k8s.io/v1 models refuse (wrong types, missing required fields) or drop
    (a misspelt or unknown field), found by a round trip through them."""
    from kubernetes import client
    from pydantic import ValidationError

    try:
        model = as_model(manifest)
    except (ValidationError, ValueError, AttributeError) as error:
        return [str(error)]
    back = client.ApiClient().sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
    return [f"{path}: {problem}" for path, problem in _differences(manifest, back, manifest.get("kind", ""))]


def _differences(given: Any, known: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(given, dict) and isinstance(known, dict):
        found = [(f"{path}.{key}", "not a field of the API") for key in given if key not in known]
        return found + [item for key in given if key in known for item in _differences(given[key], known[key],
                                                                                          f"{path}.{key}")]
    if isinstance(given, list) and isinstance(known, list) and len(given) == len(known):
        return [item for index, (a, b) in enumerate(zip(given, known, strict=True))
                for item in _differences(a, b, f"{path}[{index}]")]
    return [] if given == known or (given in ({}, []) and known is None) else [(path, f"{given!r} became {known!r}")]


def apply(configurations: Sequence[dict[str, Any]], *, kubeconfig: str | None = None,
          context: str | None = None) -> list[str]:
    """Create or replace each configuration through the `kubernetes` client; what was done, per object."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    api = client.AdmissionregistrationV1Api()
    done = []
    for manifest in configurations:
        name = manifest["metadata"]["name"]
        model = as_model(manifest)
        validating = manifest["kind"] == "ValidatingWebhookConfiguration"
        read = (api.read_validating_webhook_configuration if validating
                else api.read_mutating_webhook_configuration)
        try:
            existing = read(name)
        except ApiException as error:
            if error.status != 404:
                raise
            (api.create_validating_webhook_configuration if validating
             else api.create_mutating_webhook_configuration)(model)
            done.append(f"{manifest['kind']} {name} created")
            continue
        model.metadata.resource_version = existing.metadata.resource_version if existing.metadata else None
        (api.replace_validating_webhook_configuration if validating
         else api.replace_mutating_webhook_configuration)(name, model)
        done.append(f"{manifest['kind']} {name} updated")
    return done
