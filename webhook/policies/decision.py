"""The one place where policy results become a verdict: failurePolicy and validationActions are applied here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.policies.compiled import Phase
from webhook.policies.evaluation import PolicyResult
from webhook.policies.native import VALIDATING, Violation

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


@dataclass(slots=True)
class _Verdict:
    """What the results of one request add up to, as decide() collects it."""

    denials: list[tuple[str, str, int, bool]] = field(default_factory=list)  # (message, reason, code, native)
    warnings: list[str] = field(default_factory=list)
    used: list[int] = field(default_factory=lambda: [0])  # bytes of warnings so far
    audit_failures: list[dict[str, Any]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    native_annotations: dict[str, list[str]] = field(default_factory=dict)  # key: distinct values in order

    def warn(self, text: str) -> None:
        _add_warning(self.warnings, self.used, text)


def decide(results: Sequence[PolicyResult], *, phase: Phase) -> Decision:
    """Apply each policy's failurePolicy to its faults and its validationActions to its violations."""
    verdict = _Verdict()
    patch: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for result in results:
        if not (result.violations or result.faults or result.warnings or result.audit_annotations or
                result.patch):  # the common case: nothing to report but that it passed
            outcomes.append({"policy": result.policy.name, "result": "pass", "messages": []})
            continue
        outcomes.append(_outcome(result))
        if result.policy.binding is not None:
            _native(result, verdict)
        else:
            _own(result, verdict)
        if phase == "mutate" and not result.faults:
            patch.extend(result.patch)
    annotations = verdict.annotations
    for key, values in verdict.native_annotations.items():  # dispatcher.go: distinct values of the bindings joined
        annotations[key] = ", ".join(values)
    if verdict.audit_failures:
        annotations[AUDIT_FAILURE_KEY] = orjson.dumps(verdict.audit_failures).decode()
    if verdict.denials:
        message, reason, code = _denial(verdict.denials)
        return Decision(allowed=False, code=code, reason=reason, message=message, warnings=verdict.warnings,
                        audit_annotations=annotations, results=results, outcomes=outcomes)
    return Decision(allowed=True, warnings=verdict.warnings, audit_annotations=annotations, patch=patch,
                    results=results, outcomes=outcomes)


def _own(result: PolicyResult, verdict: _Verdict) -> None:
    """The Policy kind: every failure and fault reported, each named by its policy."""
    policy, name = result.policy, result.policy.name
    for text in result.warnings:
        verdict.warn(f"{name}: {text}")
    verdict.annotations.update(result.audit_annotations)
    violations = [(v.message, v.reason) for v in result.violations]
    if result.faults:
        fault = "; ".join(result.faults)
        if policy.failure_policy == "Fail":
            violations.append((f"policy fault: {fault}", "Forbidden"))
        else:  # the API server ignores such faults silently; our own kind says so
            verdict.warn(f"{name}: policy fault ignored (failurePolicy Ignore): {fault}")
    for message, reason in violations:
        if "Deny" in policy.actions:
            verdict.denials.append((f"{name}: {message}", reason, REASON_CODES.get(reason, 403), False))
        if "Warn" in policy.actions:
            verdict.warn(f"{name}: {message}")
        if "Audit" in policy.actions:
            verdict.audit_failures.append({"policy": name, "message": single_line(message, limit=MAX_MESSAGE_BYTES),
                                           "validationActions": sorted(policy.actions)})


def _native(result: PolicyResult, verdict: _Verdict) -> None:
    """Kubernetes' kinds, as policy/validating/dispatcher.go and policy/generic/policy_dispatcher.go decide: each
    decision through the binding's validationActions (an error only under failurePolicy Fail), and in Kubernetes'
    words."""
    policy = result.policy
    decisions = result.violations
    if result.faults and not any(v.fault for v in decisions):  # faults from outside evaluation (the deadline)
        decisions = [*decisions, *(Violation(f, "Invalid", fault=True, error=True, direct=True) for f in result.faults)]
    validating = policy.kind == VALIDATING
    for decision in decisions:
        if decision.error and policy.failure_policy != "Fail":
            continue  # the API server admits, silently
        if not validating:  # generic/policy_dispatcher.go: 403 whatever the reason
            verdict.denials.append((f"policy '{policy.name}' with binding '{policy.binding}' denied request: "
                                    f"{decision.message}", decision.reason, 403, True))
            continue
        if decision.direct or "Deny" in policy.actions:
            verdict.denials.append((f"{policy.label} denied request: {decision.message}", decision.reason,
                                    REASON_CODES.get(decision.reason, 422), True))
        if decision.direct:
            continue
        if "Warn" in policy.actions:
            verdict.warn(f"Validation failed for {policy.label}: {decision.message}")
        if "Audit" in policy.actions:  # dispatcher.go's ValidationFailureValue, field for field
            verdict.audit_failures.append({"message": decision.message, "policy": policy.name,
                                           "binding": policy.binding, "expressionIndex": decision.index,
                                           "validationActions": sorted(policy.actions)})
    for key, value in result.audit_annotations.items():
        values = verdict.native_annotations.setdefault(key, [])
        if value not in values:
            values.append(value)


def _denial(denials: list[tuple[str, str, int, bool]]) -> tuple[str, str, int]:
    """The response's message, reason and code: of Kubernetes' kinds the first denial only (dispatcher.go), of the
    Policy kind all, on one line; the first denial gives reason and code."""
    first_native = next((message for message, _, _, native in denials if native), "")
    own = single_line("; ".join(message for message, _, _, native in denials if not native), limit=MAX_MESSAGE_BYTES)
    parts = [first_native, own] if denials[0][3] else [own, first_native]
    _, reason, code, _ = denials[0]
    return "; ".join(part for part in parts if part), reason, code


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
    messages = [*(v.message for v in result.violations if not v.fault), *result.faults, *result.warnings]
    return {"policy": result.policy.name, "result": kind,
            "messages": [single_line(m, limit=MAX_WARNING_CHARS * 4) for m in messages]}
