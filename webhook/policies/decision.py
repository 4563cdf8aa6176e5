"""The one place where policy results become a verdict: failurePolicy and validationActions are applied here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.policies.compiled import Phase
from webhook.policies.evaluation import PolicyResult

MAX_MESSAGE_BYTES = 5 * 1024
MAX_WARNING_CHARS = 256  # the API server may truncate longer ones
MAX_WARNINGS_BYTES = 4000  # the API server drops warnings past 4096 bytes in all
REASON_CODES = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413}
AUDIT_FAILURE_KEY = "validation_failure"


@dataclass(slots=True)
class Decision:
    allowed: bool
    code: int = 200
    reason: str = ""
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    audit_annotations: dict[str, str] = field(default_factory=dict)
    patch: list[dict[str, Any]] = field(default_factory=list)
    results: Sequence[PolicyResult] = ()
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # per policy: name, result, messages


def single_line(text: str, *, limit: int) -> str:
    """Whitespace folded to single spaces, cut to `limit` UTF-8 bytes on a character boundary."""
    text = " ".join(text.split())
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."


def _add_warning(warnings: list[str], used: list[int], text: str) -> None:
    warning = single_line(text, limit=MAX_WARNING_CHARS)
    size = len(warning.encode())
    if used[0] + size > MAX_WARNINGS_BYTES:
        return
    used[0] += size
    warnings.append(warning)


def decide(results: Sequence[PolicyResult], *, phase: Phase) -> Decision:
    """Apply each policy's failurePolicy to its faults and its validationActions to its violations."""
    denials: list[tuple[str, str]] = []  # (message, reason)
    warnings: list[str] = []
    used = [0]
    audit_failures: list[dict[str, Any]] = []
    annotations: dict[str, str] = {}
    patch: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for result in results:
        policy = result.policy
        name = policy.name
        if not (result.violations or result.faults or result.warnings or result.audit_annotations or
                result.patch):  # the common case: nothing to report but that it passed
            outcomes.append({"policy": name, "result": "pass", "messages": []})
            continue
        native = policy.binding is not None  # Kubernetes' kinds: Kubernetes' wording
        outcomes.append(_outcome(result))
        for text in result.warnings:
            _add_warning(warnings, used, f"{name}: {text}")
        annotations.update(result.audit_annotations)
        violations = [(v.message, v.reason) for v in result.violations]
        if result.faults:
            fault = "; ".join(result.faults)
            if policy.failure_policy == "Fail":
                violations.append((f"policy fault: {fault}", "Forbidden"))
            elif not native:  # the API server ignores such faults silently; our own kind says so
                _add_warning(warnings, used, f"{name}: policy fault ignored (failurePolicy Ignore): {fault}")
        for message, reason in violations:
            if "Deny" in policy.actions:
                denials.append((f"{policy.label} denied request: {message}" if native else f"{name}: {message}",
                                reason))
            if "Warn" in policy.actions:
                _add_warning(warnings, used,
                             f"Validation failed for {policy.label}: {message}" if native else f"{name}: {message}")
            if "Audit" in policy.actions:
                record: dict[str, Any] = {"policy": name, "message": single_line(message, limit=MAX_MESSAGE_BYTES),
                                          "validationActions": sorted(policy.actions)}
                if native:
                    record["binding"] = policy.binding
                audit_failures.append(record)
        if phase == "mutate" and not result.faults:
            patch.extend(result.patch)
    if audit_failures:
        annotations[AUDIT_FAILURE_KEY] = orjson.dumps(audit_failures).decode()
    if denials:
        reason = denials[0][1]
        message = single_line("; ".join(message for message, _ in denials), limit=MAX_MESSAGE_BYTES)
        return Decision(allowed=False, code=REASON_CODES.get(reason, 403), reason=reason, message=message,
                        warnings=warnings, audit_annotations=annotations, results=results, outcomes=outcomes)
    return Decision(allowed=True, warnings=warnings, audit_annotations=annotations, patch=patch, results=results,
                    outcomes=outcomes)


def _outcome(result: PolicyResult) -> dict[str, Any]:
    """One policy's result as events report it: pass, fail (Deny), warn, audit or error (a fault)."""
    actions = result.policy.actions
    if result.faults:
        kind = "error"
    elif result.violations:
        kind = "fail" if "Deny" in actions else ("warn" if "Warn" in actions else "audit")
    elif result.warnings:
        kind = "warn"
    else:
        kind = "pass"
    messages = [*(v.message for v in result.violations), *result.faults, *result.warnings]
    return {"policy": result.policy.name, "result": kind,
            "messages": [single_line(m, limit=MAX_WARNING_CHARS * 4) for m in messages]}
