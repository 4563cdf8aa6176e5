"""The audit loop of `webhook serve --audit`: one replica (the Lease holder) audits every `interval_seconds` and
after every policy reload, announces changes of state as CloudEvents through the server's EventRecorder, writes
the reports, and keeps the audit metrics. `/readyz` never depends on it.

The pass runs in a thread (listing and evaluating), paced to `objects_per_second` so that a large cluster does
not take the GIL from the admission requests for long; events are recorded on the event loop (the recorder is
not shared across threads) and reports written in a thread after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webhook.background_audit.api import ApiError, KubeApi, Stopped
from webhook.background_audit.leader import LeaderElector
from webhook.background_audit.ledger import Change, Ledger
from webhook.background_audit.reports import FORMATS, ReportWriter
from webhook.background_audit.scan import Auditor, AuditPass
from webhook.background_audit.targets import AuditPlan, PolicyInfo, plan
from webhook.cluster import LiveClusterState
from webhook.config import Settings
from webhook.events import model
from webhook.events.service import EventRecorder
from webhook.metrics import Metrics
from webhook.policies.compiled import PolicySet
from webhook.policies.store import PolicyStore
from webhook.state import ClusterState

log = logging.getLogger("webhook.background_audit")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_PASS_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def default_identity() -> str:
    """As client-go's convention: the host (the Pod's name) and something unique to this process."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def own_namespace() -> str | None:
    """POD_NAMESPACE, else the service account's namespace (in a Pod), else None."""
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    return None


@dataclass(frozen=True)
class AuditSettings:
    interval_seconds: float = 3600.0
    retry_seconds: float = 60.0  # after an incomplete pass
    page_size: int = 500
    qps: float = 10.0
    objects_per_second: float = 1000.0
    report_format: str = "openreports"
    write_reports: bool = True
    lease_namespace: str = "default"
    lease_name: str = "webhook-audit"
    identity: str = field(default_factory=default_identity)
    lease_seconds: int = 15  # client-go's defaults
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    exempt_namespaces: tuple[str, ...] = ("kube-system",)


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.objects = Counter("webhook_audit_objects", "Objects judged by the background audit, by kind.", ["kind"],
                               registry=registry)
        self.violations = Gauge("webhook_audit_violations", "Objects violating, by policy, after the last audit pass.",
                                ["policy"], registry=registry)
        self.duration = Histogram("webhook_audit_pass_duration_seconds", "Time of an audit pass (list and judge).",
                                  buckets=_PASS_BUCKETS, registry=registry)
        self.last_success = Gauge("webhook_audit_last_success_timestamp_seconds", "When the last complete audit pass "
                                  "ended (Unix time).", registry=registry)
        self.passes = Counter("webhook_audit_passes", "Audit passes, by result (complete, incomplete, aborted).",
                              ["result"], registry=registry)
        self.events = Counter("webhook_audit_events", "Audit events recorded, by type (violation, resolved).",
                              ["type"], registry=registry)
        self.requests = Counter("webhook_audit_api_requests", "API requests of the audit (lists, reports; not the "
                                "Lease).", registry=registry)
        self.leader = Gauge("webhook_audit_leader", "1 while this process holds the audit Lease.", registry=registry)


@dataclass
class PassOutcome:
    plan: AuditPlan
    audit_pass: AuditPass
    changes: list[Change]


class AuditService:
    def __init__(self, api_client: Any, settings: AuditSettings, *, policies: Callable[[], PolicySet | None],
                 cluster: ClusterState, events: EventRecorder | None, metrics: Metrics) -> None:
        self.settings, self.policies, self.cluster, self.events = settings, policies, cluster, events
        self.metrics = AuditMetrics(metrics.registry)
        self.stop_event = threading.Event()
        self.api = KubeApi(api_client, qps=settings.qps, burst=max(1, int(settings.qps * 2)), stop=self.stop_event)
        election = KubeApi(api_client, qps=0, attempts=1, timeout=max(1.0, settings.renew_deadline / 2),
                           stop=self.stop_event)
        self.elector = LeaderElector(election, namespace=settings.lease_namespace, name=settings.lease_name,
                                     identity=settings.identity, lease_seconds=settings.lease_seconds,
                                     renew_deadline=settings.renew_deadline, retry_period=settings.retry_period,
                                     on_change=self._leadership)
        self.auditor = Auditor(self.api, page_size=settings.page_size, objects_per_second=settings.objects_per_second,
                               exempt_namespaces=settings.exempt_namespaces)
        self.writer = ReportWriter(self.api, FORMATS[settings.report_format]) if settings.write_reports else None
        self.ledger = Ledger()
        self.outcomes: list[PassOutcome] = []  # the last few (what they judged forgotten), for tests and logs
        self._new_term = threading.Event()  # leadership gained: seed the ledger and audit at once
        self._reload = threading.Event()
        self._plan: tuple[PolicySet, AuditPlan] | None = None

    def policies_changed(self) -> None:
        """A policy set was loaded: audit again (thread-safe)."""
        self._reload.set()

    def _leadership(self, leading: bool) -> None:
        if leading:
            self._new_term.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Elect and audit until `stop`; then end the election (releasing the Lease)."""
        elector = threading.Thread(target=self.elector.run, args=(self.stop_event,), name="webhook-audit-leader",
                                   daemon=True)
        elector.start()
        due = 0.0
        try:
            while not stop.is_set():
                self.metrics.leader.set(int(self.elector.leading))
                ready = getattr(self.cluster, "synced", True) and self.policies() is not None
                if self.elector.leading and ready and (self._new_term.is_set() or self._reload.is_set()
                                                       or time.monotonic() >= due):
                    self._reload.clear()
                    try:
                        complete = await self.audit_once(stop)
                    except Exception:  # a bug must not end the loop: the next pass may do better
                        log.exception("audit pass failed")
                        complete = False
                    due = time.monotonic() + (self.settings.interval_seconds if complete else
                                              min(self.settings.retry_seconds, self.settings.interval_seconds))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.2)
        finally:
            self.stop_event.set()
            await asyncio.to_thread(elector.join, 30)
            self.metrics.leader.set(0)

    async def audit_once(self, stop: asyncio.Event) -> bool:
        """One pass now (this process must lead): judge, announce, write the reports; True when all of it
        completed."""
        policy_set = self.policies()
        if policy_set is None:
            return False
        try:
            outcome = await asyncio.to_thread(self._scan, policy_set, stop)
        except (ApiError, Stopped) as error:
            log.error("audit pass failed: %s", error)
            self.metrics.passes.labels("incomplete").inc()
            return False
        audit_pass = outcome.audit_pass
        self._announce(outcome)
        written = audit_pass.complete
        if written and self.writer is not None:
            writer = self.writer
            before = self.api.requests
            try:
                summary = await asyncio.to_thread(writer.write, audit_pass.judged.values(), info=outcome.plan.info,
                                                  stamp=lambda finding, subject: self.ledger.since(
                                                      finding, subject, audit_pass.started))
                log.info("audit reports: %d created, %d updated, %d unchanged, %d deleted", summary.created,
                         summary.updated, summary.unchanged, summary.deleted)
            except (ApiError, Stopped) as error:
                written = False
                log.error("audit reports not written: %s", error)
            self.metrics.requests.inc(self.api.requests - before)
        result = "aborted" if audit_pass.aborted else "complete" if audit_pass.complete else "incomplete"
        self.metrics.passes.labels(result).inc()
        self.metrics.duration.observe(audit_pass.finished - audit_pass.started)
        self.metrics.requests.inc(audit_pass.requests)
        for kind, count in audit_pass.objects.items():
            self.metrics.objects.labels(kind).inc(count)
        self.metrics.violations.clear()
        for policy, count in self.ledger.violations().items():
            self.metrics.violations.labels(policy).set(count)
        if written:
            self.metrics.last_success.set(audit_pass.finished)
        audit_pass.forget()  # held by the ledger and the reports now: one pass's objects at a time, not two
        self.outcomes = [*self.outcomes[-4:], outcome]
        counts = audit_pass.counts()
        log.info("audit pass %s: %d objects in %.1fs, %d API requests; %d fail, %d warn, %d error; %d events%s",
                 result, sum(audit_pass.objects.values()), audit_pass.finished - audit_pass.started,
                 audit_pass.requests, counts["fail"], counts["warn"], counts["error"], len(outcome.changes),
                 "".join(f"; {error}" for error in audit_pass.errors))
        return written

    def _scan(self, policy_set: PolicySet, stop: asyncio.Event) -> PassOutcome:
        """In a thread: (re)seed the ledger on a new term, plan, run the pass, update the ledger."""
        if self._new_term.is_set():
            self._new_term.clear()
            self.ledger = Ledger()
            if self.writer is not None:
                try:
                    seeded = self.ledger.seed(self.writer.results())
                    log.info("audit: %d results known from the reports", seeded)
                except ApiError as error:
                    log.warning("audit: cannot read the reports (%s): the first pass is a baseline", error)
            if not self.ledger.seeded:
                log.info("audit: no report to start from: the first pass is a baseline (its violations are reported, "
                         "not announced)")
        cached = self._plan
        audit_plan = cached[1] if cached is not None and cached[0] is policy_set else plan(policy_set)
        self._plan = (policy_set, audit_plan)

        def proceed() -> bool:
            return not stop.is_set() and not self.stop_event.is_set() and self.elector.leading

        audit_pass = self.auditor.run(audit_plan, cluster=self.cluster, proceed=proceed)
        changes = [] if audit_pass.aborted else self.ledger.apply(
            audit_pass, policies={policy.name for policy in audit_plan.policy_set.policies})
        return PassOutcome(audit_plan, audit_pass, changes)

    def _announce(self, outcome: PassOutcome) -> None:
        if self.events is None:
            return
        for change in outcome.changes:
            self.events.record_audit(event_type=change.type, event_id=change.event_id(outcome.plan.digest),
                                     subject=model.admission_subject(resource=change.subject.resource, sub_resource="",
                                                                     namespace=change.subject.namespace,
                                                                     name=change.subject.name),
                                     data=event_data(change, outcome.plan.info.get(change.policy, PolicyInfo()),
                                                     digest=outcome.plan.digest))
            self.metrics.events.labels(change.type).inc()


def event_data(change: Change, info: PolicyInfo, *, digest: str) -> dict[str, Any]:
    """The data of a `dev.webhook.audit.violation` or `.resolved` event."""
    subject = change.subject
    secret = model.is_secret({"group": subject.api_version.rpartition("/")[0], "kind": subject.kind})
    data: dict[str, Any] = {
        "policy": change.policy, "result": change.result, "reason": change.reason,
        "messages": [model.REDACTED if secret else message for message in change.messages],
        "object": {"apiVersion": subject.api_version, "kind": subject.kind, "namespace": subject.namespace,
                   "name": subject.name, "uid": subject.uid, "resourceVersion": subject.resource_version},
        "since": model.rfc3339(change.since), "policySetDigest": digest,
    }
    if change.binding:
        data["binding"] = change.binding
    if info.severity:
        data["severity"] = info.severity
    if info.category:
        data["category"] = info.category
    return data


def for_server(settings: Settings, *, live: LiveClusterState, store: PolicyStore, events: EventRecorder | None,
               metrics: Metrics) -> AuditService:
    """The service `webhook serve --audit` runs: through the live cluster state's connection, judging with the
    store's current set (with the live ConfigMaps as params). The server's own namespace is exempt, as the
    webhook configurations exempt it."""
    namespace = own_namespace()
    exempt = ("kube-system", *settings.audit_exempt_namespaces, *([namespace] if namespace else []))

    def policies() -> PolicySet | None:
        current = store.current
        return None if current is None else live.with_params(current)

    return AuditService(live.api_client, AuditSettings(
        interval_seconds=settings.audit_interval_seconds, page_size=settings.audit_page_size, qps=settings.audit_qps,
        objects_per_second=settings.audit_objects_per_second, report_format=settings.audit_report_format,
        write_reports=settings.audit_reports, lease_namespace=settings.audit_lease_namespace or namespace or "default",
        lease_name=settings.audit_lease_name, exempt_namespaces=tuple(dict.fromkeys(exempt))),
        policies=policies, cluster=live, events=events, metrics=metrics)
