"""`webhook register`: the Validating- and MutatingWebhookConfiguration that route requests to this server.

The webhooks are planned from the loaded policies (`registration_scope`): grouped by phase, failure policy and
the selectors known statically, with rules that name only what some policy matches (no cross products, DELETE
and UPDATE only where a policy judges them), so the API server depends on this server for no more than the
policies need (excludes, resourceNames and matchConditions are then checked here). Policies with
`failurePolicy: Fail` and `Ignore` go to separate webhooks of the same configuration (paths `/validate/fail` and
`/validate/ignore`, each evaluating only its own policies), so that an unreachable server blocks only what
must not pass unchecked, and no policy is evaluated twice for one request. `kube-system` and the server's
own namespace are exempt, so the cluster can always be repaired and the webhook's own Pods can always start.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webhook.policies.compiled import Phase, PolicySet
from webhook.registration_scope import POLICIES_ANNOTATION, plan, scope_suffix

GROUP_VERSION = "admissionregistration.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
ALWAYS_EXEMPT = ("kube-system",)
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "webhook"
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


def webhook_configurations(policy_set: PolicySet, *, target: Target, ca_bundle: bytes, name: str = "webhook.dev",
                           own_namespace: str | None = None, exempt_namespaces: Sequence[str] = (),
                           timeout_seconds: int = 5) -> list[dict[str, Any]]:
    """The two configurations (a phase without policies gets none; an existing one is then left alone)."""
    exempt = list(dict.fromkeys([*ALWAYS_EXEMPT, *([own_namespace] if own_namespace else []), *exempt_namespaces]))
    configurations = []
    for phase, kind in _KINDS.items():
        webhooks = []
        served: dict[str, list[str]] = {}  # webhook name -> the policies its calls can reach
        for failure_policy in ("Fail", "Ignore"):
            policies = [p for p in policy_set.in_phase(phase) if p.failure_policy == failure_policy]
            for webhook_plan in plan(policies, exempt=exempt):
                scope = webhook_plan.scope
                label = failure_policy.lower() + ("" if scope.is_empty else f"-{scope_suffix(scope)}")
                while f"{label}.{phase}.{name}" in served:  # two plans with one scope (different rules)
                    label += "x"
                namespace_selector = {**scope.namespace_selector, "matchExpressions": [
                    *scope.namespace_selector.get("matchExpressions", []),
                    {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": list(exempt)}]}
                webhook: dict[str, Any] = {
                    "name": f"{label}.{phase}.{name}",
                    "clientConfig": target.client_config(f"/{phase}/{failure_policy.lower()}", ca_bundle),
                    "rules": webhook_plan.rules,
                    "failurePolicy": failure_policy,
                    "matchPolicy": "Equivalent",
                    "namespaceSelector": namespace_selector,
                    "objectSelector": scope.object_selector,
                    "sideEffects": "NoneOnDryRun",
                    "timeoutSeconds": timeout_seconds,
                    "admissionReviewVersions": ["v1", "v1beta1"],
                }
                if phase == "mutate":
                    # Called again when a later mutating webhook changed the object, so our defaults still hold.
                    webhook["reinvocationPolicy"] = "IfNeeded"
                webhooks.append(webhook)
                served[webhook["name"]] = list(webhook_plan.policies)
        if webhooks:
            configurations.append({"apiVersion": GROUP_VERSION, "kind": kind,
                                   "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: MANAGED_BY},
                                                "annotations": {POLICIES_ANNOTATION: json.dumps(served)}},
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


def _api(*, kubeconfig: str | None, context: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    return client.AdmissionregistrationV1Api()


def delete(name: str, *, kubeconfig: str | None = None, context: str | None = None) -> list[str]:
    """Delete the two configurations called `name` that `webhook register` created (labelled managed-by
    webhook); one without that label is someone else's and is left alone. What was done, per object."""
    from kubernetes.client.exceptions import ApiException

    api = _api(kubeconfig=kubeconfig, context=context)
    done = []
    for kind in _KINDS.values():
        validating = kind == "ValidatingWebhookConfiguration"
        try:
            existing = (api.read_validating_webhook_configuration if validating
                        else api.read_mutating_webhook_configuration)(name)
        except ApiException as error:
            if error.status != 404:
                raise
            done.append(f"{kind} {name} not found")
            continue
        labels = (existing.metadata.labels if existing.metadata else None) or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            done.append(f"{kind} {name} left alone: not labelled {MANAGED_BY_LABEL}={MANAGED_BY}")
            continue
        try:
            (api.delete_validating_webhook_configuration if validating
             else api.delete_mutating_webhook_configuration)(name)
        except ApiException as error:
            if error.status != 404:
                raise
        done.append(f"{kind} {name} deleted")
    return done


def apply(configurations: Sequence[dict[str, Any]], *, kubeconfig: str | None = None,
          context: str | None = None) -> list[str]:
    """Create or replace each configuration through the `kubernetes` client; what was done, per object."""
    from kubernetes.client.exceptions import ApiException

    api = _api(kubeconfig=kubeconfig, context=context)
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
