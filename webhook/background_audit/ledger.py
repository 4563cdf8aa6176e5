"""The last known state of each (policy, binding, object): what changed in a pass, and since when each result
holds (a report's result timestamps, so that an unchanged report is not rewritten).

Events follow changes of state, never passes: a key becomes `violating` (a fail or warn result) and one
`violation` is announced; it stops (fixed, deleted, no longer matched, or its policy removed by a reload) and
one `resolved` is announced. An `error` (the policy could not judge the object) changes nothing that was
announced. Objects are forgotten as deleted only after a pass that listed their kind to the end.

After a restart, or when this replica becomes the leader, the ledger is seeded from the reports the last
leader wrote (`seed`): they hold the state it announced, so nothing is announced twice and changes made
meanwhile are still announced. With no report to seed from (the first pass ever, reports disabled or not
readable), the first pass is a baseline: its violations are recorded and not announced (read the reports),
which is how a restart never turns into a storm of events for violations already known.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.background_audit.scan import VIOLATING, AuditPass, Finding, Judged, Subject, worst
from webhook.background_audit.targets import KNOWN

Key = tuple[str, str, str]  # policy, binding, object uid
_EVENT_IDS = uuid.UUID("4b0c8f3e-2f6a-4d5e-9a63-7c1e5b9d2a10")
_PLURALS = {(resource.api_version, resource.kind): resource.resource for resource in KNOWN.values()}


@dataclass(slots=True)
class Entry:
    status: str  # the worst result of the key's findings: pass, warn, fail, error
    since: float  # when it came to this status
    violating: bool  # what was announced (or taken as the baseline)
    subject: Subject
    messages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One state change to announce: `violation` or `resolved`, and why (violating, fixed, deleted,
    not-matched, policy-removed)."""

    type: str
    reason: str
    policy: str
    binding: str
    result: str
    subject: Subject
    messages: tuple[str, ...]
    since: float

    def event_id(self, digest: str) -> str:
        """Stable for the same change of the same object version under the same policy set: a leader that
        announces again what its predecessor announced (and crashed before writing the reports) gives the same
        id, which subscribers deduplicate on."""
        parts = (digest, self.policy, self.binding, self.subject.uid, self.type, self.reason,
                 self.subject.resource_version)
        return str(uuid.uuid5(_EVENT_IDS, "/".join(parts)))


class Ledger:
    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}
        self.seeded = False  # from reports: the next pass announces changes
        self.passes = 0

    def seed(self, results: Iterable[Mapping[str, Any]]) -> int:
        """Take the state from report results (as `reports.ReportWriter.results` reads them); the keys seeded."""
        grouped: dict[Key, list[Mapping[str, Any]]] = {}
        for result in results:
            resources = result.get("resources") or []
            if not resources or not isinstance(resources[0], dict):
                continue
            properties = result.get("properties") or {}
            key = (str(result.get("policy", "")), str(properties.get("binding", "")), str(resources[0].get("uid", "")))
            grouped.setdefault(key, []).append(result)
        for key, found in grouped.items():
            reference = found[0]["resources"][0]
            api_version, kind = str(reference.get("apiVersion", "")), str(reference.get("kind", ""))
            subject = Subject(api_version, kind, _PLURALS.get((api_version, kind), kind.lower() + "s"),
                              str(reference.get("namespace", "")), str(reference.get("name", "")), key[2])
            status = worst(str(result.get("result", "pass")) for result in found if result.get("result") in
                           ("pass", "fail", "warn", "error"))
            stamps = [float((result.get("timestamp") or {}).get("seconds", 0)) for result in found]
            messages = tuple(str(result.get("message", "")) for result in found if result.get("result") in VIOLATING)
            self.entries[key] = Entry(status, min(stamps, default=0.0), status in VIOLATING, subject, messages)
        self.seeded = bool(grouped)  # no report of ours at all: the first pass is a baseline
        return len(grouped)

    def apply(self, audit_pass: AuditPass, *, policies: set[str]) -> list[Change]:
        """Update from a pass; the changes to announce (none for a baseline pass: see the module docstring)."""
        announce = self.seeded or self.passes > 0
        self.passes += 1
        now = audit_pass.started
        changes: list[Change] = []
        touched: set[Key] = set()
        for judged in audit_pass.judged.values():
            for key, findings in _by_key(judged).items():
                touched.add(key)
                changes.extend(self._judge(key, judged.subject, findings, now))
        for key in [key for key in self.entries if key not in touched]:
            entry = self.entries[key]
            if key[0] not in policies:
                reason = "policy-removed"
            elif key[2] in audit_pass.seen:
                reason = "not-matched"
            elif (entry.subject.api_version, entry.subject.kind) in audit_pass.listed:
                reason = "deleted"
            elif audit_pass.complete:
                reason = "not-matched"  # its kind is no longer audited
            else:
                continue  # its kind was not listed to the end: nothing is known
            del self.entries[key]
            if entry.violating:
                changes.append(Change("resolved", reason, key[0], key[1], entry.status, entry.subject, (), now))
        return changes if announce else []

    def _judge(self, key: Key, subject: Subject, findings: list[Finding], now: float) -> list[Change]:
        status = worst(finding.result for finding in findings)
        messages = tuple(finding.message for finding in findings if finding.result in VIOLATING)
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = Entry(status, now, status in VIOLATING, subject, messages)
            return [Change("violation", "violating", key[0], key[1], status, subject, messages, now)] \
                if status in VIOLATING else []
        if status != entry.status:
            entry.status, entry.since = status, now
        entry.subject, entry.messages = subject, messages
        if status in VIOLATING and not entry.violating:
            entry.violating = True
            return [Change("violation", "violating", key[0], key[1], status, subject, messages, now)]
        if status == "pass" and entry.violating:
            entry.violating = False
            return [Change("resolved", "fixed", key[0], key[1], status, subject, (), now)]
        return []

    def since(self, finding: Finding, subject: Subject, default: float) -> float:
        """When the finding's key came to its current status (for report timestamps)."""
        entry = self.entries.get((finding.policy, finding.binding, subject.uid))
        return entry.since if entry is not None else default

    def violations(self) -> dict[str, int]:
        """Objects violating, by policy (for the metrics)."""
        found: dict[str, int] = {}
        for (policy, _, _), entry in self.entries.items():
            if entry.status in VIOLATING:
                found[policy] = found.get(policy, 0) + 1
        return found


def _by_key(judged: Judged) -> dict[Key, list[Finding]]:
    grouped: dict[Key, list[Finding]] = {}
    for finding in judged.findings:
        grouped.setdefault((finding.policy, finding.binding, judged.subject.uid), []).append(finding)
    return grouped
