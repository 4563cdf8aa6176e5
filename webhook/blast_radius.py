"""`webhook register --dry-run --blast-radius`: what the API server does with writes while this server is down,
read from the configurations that `webhook register` would apply (Fail webhooks refuse, Ignore ones admit
unchecked, anything no webhook matches never depends on the server)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

from webhook.registration_scope import NAMESPACE_NAME_LABEL, POLICIES_ANNOTATION

_CONSEQUENCE = {"Fail": "REFUSED while the server is down", "Ignore": "ADMITTED UNCHECKED while the server is down"}


def _requirement(expression: dict[str, Any]) -> str:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if key == NAMESPACE_NAME_LABEL and operator == "NotIn":
        return "not " + ", ".join(values)
    if key == NAMESPACE_NAME_LABEL and operator == "In":
        return "only " + ", ".join(values)
    if operator == "Exists":
        return f"labelled {key}"
    if operator == "DoesNotExist":
        return f"not labelled {key}"
    return f"{key} {'in' if operator == 'In' else 'not in'} ({', '.join(values)})"


def describe_selector(selector: dict[str, Any] | None) -> str:
    """A label selector in words: `all` for an empty one, else its requirements joined by `and`."""
    if not selector:
        return "all"
    parts = [f"only {value}" if key == NAMESPACE_NAME_LABEL else f"{key}={value}"
             for key, value in (selector.get("matchLabels") or {}).items()]
    parts += [_requirement(expression) for expression in selector.get("matchExpressions") or []]
    return " and ".join(parts) or "all"


def _resource(group: str, resource: str) -> str:
    base, slash, sub = resource.partition("/")
    name = base if group == "" else f"{base}.{group}"
    return f"{name}{slash}{sub}"


def report(configurations: Sequence[dict[str, Any]]) -> str:
    """The blast radius as text: per webhook, its consequence, namespaces, objects and operations by resource."""
    lines = []
    for failure_policy in ("Fail", "Ignore"):
        for manifest in configurations:
            phase = "validating" if manifest["kind"].startswith("Validating") else "mutating"
            served = json.loads(((manifest.get("metadata") or {}).get("annotations") or {}).get(
                POLICIES_ANNOTATION, "{}"))
            for webhook in manifest.get("webhooks", []):
                if webhook.get("failurePolicy", "Fail") != failure_policy:
                    continue
                lines.append(f"{_CONSEQUENCE[failure_policy]} ({phase} webhook {webhook['name']}):")
                lines.append(f"  namespaces: {describe_selector(webhook.get('namespaceSelector'))}")
                lines.append(f"  objects:    {describe_selector(webhook.get('objectSelector'))}")
                if served.get(webhook["name"]):
                    lines.extend(textwrap.wrap(", ".join(served[webhook["name"]]), width=116, break_on_hyphens=False,
                                               initial_indent="  policies:   ", subsequent_indent=" " * 14))
                for rule in webhook.get("rules", []):
                    resources = ", ".join(_resource(group, resource) for group in rule["apiGroups"]
                                          for resource in rule["resources"])
                    versions = ", ".join(rule["apiVersions"])
                    lines.append(f"  {' '.join(rule['operations']):<20} {resources} ({versions})")
    if not lines:
        return "No webhooks: no write depends on the server.\n"
    lines.append("Every other write (kind, operation or namespace not listed above) never calls the server.")
    return "\n".join(lines) + "\n"
