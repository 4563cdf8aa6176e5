"""One audit pass: list each planned resource page by page and judge every object with the validating policies.

How an existing object is presented (the choice the API server never has to make): as a CREATE of that object,
with no old object, an empty user and `dryRun: false`, as Gatekeeper's audit does (its audit reviews carry
no operation or user; policies that need them "cannot be audited"). The alternative, Kyverno's UPDATE with
`oldObject` = `object`, makes every transition rule (no downgrade, immutable fields) pass trivially while still
sending UPDATE-only rules such as a change freeze an update that nobody made; CREATE asks the question the
report answers: "would this object be admitted if it were submitted now?". Policies that match no CREATE are
left out with a note (`targets.takes_part`).

Only a page of objects is held at a time; what is kept per object is its reference and its findings (one
per policy, rule and outcome, shared between objects when equal). A transient API error is retried on the
same page (the pass resumes where it was); an expired `continue` token lists the resource again from the start
(objects judged twice are stored once, by uid); a resource that still fails is named in `errors` and the pass
is incomplete (reports are then not replaced and no object counts as deleted).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.admission import admit
from webhook.background_audit.api import ApiError, Expired, KubeApi, RateLimiter, Stopped
from webhook.background_audit.targets import OPERATION, AuditPlan, Resource
from webhook.policies.compiled import CompiledPolicy
from webhook.policies.decision import single_line
from webhook.policies.evaluation import PolicyResult
from webhook.reviews import AdmissionRequest, GroupVersionKind, GroupVersionResource, UserInfo
from webhook.state import ClusterUnavailable

MAX_MESSAGE = 1024
VIOLATING = frozenset({"fail", "warn"})
_RANK = {"pass": 0, "warn": 1, "fail": 2, "error": 3}


@dataclass(frozen=True, slots=True)
class Subject:
    """The object a result is about."""

    api_version: str
    kind: str
    resource: str  # plural, for event subjects
    namespace: str
    name: str
    uid: str
    resource_version: str = ""

    def reference(self) -> dict[str, str]:
        """As a report's `resources` entry (an ObjectReference)."""
        found = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid}
        if self.namespace:
            found["namespace"] = self.namespace
        return found


@dataclass(frozen=True, slots=True)
class Finding:
    """What one policy (with one binding) said about one object, for one rule."""

    policy: str
    binding: str
    rule: str
    result: str  # pass, fail, warn, error
    message: str = ""


@dataclass(frozen=True, slots=True)
class Judged:
    subject: Subject
    findings: tuple[Finding, ...]


@dataclass
class AuditPass:
    started: float
    finished: float = 0.0
    judged: dict[str, Judged] = field(default_factory=dict)  # by uid: objects some audited policy matched
    seen: set[str] = field(default_factory=set)  # uids of every object judged
    objects: Counter[str] = field(default_factory=Counter)  # judged, by kind
    listed: set[tuple[str, str]] = field(default_factory=set)  # (apiVersion, kind) listed to the end
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aborted: bool = False
    requests: int = 0  # API requests of the pass (retries included)
    _counts: dict[str, int] | None = None  # kept by `forget`

    @property
    def complete(self) -> bool:
        return not self.errors and not self.aborted

    def forget(self) -> None:
        """Drop what was judged (the ledger and the reports hold it now), keeping the counts."""
        self._counts = self.counts()
        self.judged, self.seen = {}, set()

    def counts(self) -> dict[str, int]:
        """Results by outcome (pass, fail, warn, error)."""
        if self._counts is not None:
            return dict(self._counts)
        found = dict.fromkeys(("pass", "fail", "warn", "error"), 0)
        for judged in self.judged.values():
            for finding in judged.findings:
                found[finding.result] += 1
        return found


class ListedNamespaces:
    """A cluster state for a one-shot audit: the Namespaces listed before the pass (labels and annotations,
    for namespaceSelector and namespaceObject). Pods are not listed: a policy asking for them faults."""

    def __init__(self, namespaces: Iterable[Mapping[str, Any]]) -> None:
        self._namespaces: dict[str, Mapping[str, Any]] = {}
        for item in namespaces:
            metadata = item.get("metadata") or {}
            name = str(metadata.get("name", ""))
            self._namespaces[name] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": name, "labels": dict(metadata.get("labels") or {}),
                "annotations": dict(metadata.get("annotations") or {})}}

    @classmethod
    def listed(cls, api: KubeApi, *, page_size: int = 500) -> ListedNamespaces:
        found: list[Mapping[str, Any]] = []
        for page in api.pages("/api/v1/namespaces", limit=page_size):
            found.extend({"metadata": item.get("metadata") or {}} for item in page)
        return cls(found)

    @property
    def synced(self) -> bool:
        return True

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self._namespaces.get(name)

    def pods(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        raise ClusterUnavailable("`webhook audit` does not list Pods; the server's audit (serve --audit) has them")


def rule_of(policy: CompiledPolicy, message: str) -> str:
    """The rule a violation comes from: `validations[i]` when its message tells which, the Python function's
    name, else `validations` (a messageExpression's text names no validation)."""
    if policy.python_function is not None:
        return str(getattr(policy.python_function, "__name__", policy.name))
    validations = policy.validations
    found = [index for index, validation in enumerate(validations)
             if message in (validation.message, f"failed expression: {validation.source}")]
    if len(found) == 1 or len(validations) == 1:
        return f"validations[{found[0] if found else 0}]"
    return "validations"


def findings_of(results: Sequence[PolicyResult]) -> list[Finding]:
    """One finding per violation, warning and fault; one `pass` per policy with none."""
    found: list[Finding] = []
    for result in results:
        policy = result.policy
        binding = policy.binding or ""
        whole = (str(getattr(policy.python_function, "__name__", policy.name)) if policy.python_function else
                 "validations[0]" if len(policy.validations) == 1 else "validations")  # the whole policy
        if result.faults:
            message = single_line("; ".join(result.faults), limit=MAX_MESSAGE)
            found.append(Finding(policy.name, binding, whole, "error", message))
        outcome = "warn" if policy.actions == frozenset({"Warn"}) else "fail"
        for violation in result.violations:
            found.append(Finding(policy.name, binding, rule_of(policy, violation.message), outcome,
                                 single_line(violation.message, limit=MAX_MESSAGE)))
        for warning in result.warnings:
            found.append(Finding(policy.name, binding, whole, "warn", single_line(warning, limit=MAX_MESSAGE)))
        if not (result.faults or result.violations or result.warnings):
            found.append(Finding(policy.name, binding, whole, "pass"))
    return found


def worst(results: Iterable[str]) -> str:
    return max(results, key=lambda result: _RANK[result], default="pass")


class Auditor:
    """Runs passes through one `KubeApi`; objects are judged at most `objects_per_second` (0: no limit), and the
    namespaces in `exempt_namespaces` (as the webhook configurations exempt them) are skipped."""

    def __init__(self, api: KubeApi, *, page_size: int = 500, objects_per_second: float = 0.0,
                 exempt_namespaces: Sequence[str] = ("kube-system",), deadline_seconds: float = 0.0,
                 relists: int = 2) -> None:
        self.api, self.page_size, self.relists = api, page_size, relists
        self.pace = RateLimiter(objects_per_second, page_size)
        self.exempt = frozenset(exempt_namespaces)
        self.deadline_seconds = deadline_seconds

    def run(self, plan: AuditPlan, *, cluster: Any, proceed: Callable[[], bool] = lambda: True) -> AuditPass:
        """One pass over every planned resource; `proceed()` is asked between pages (False: abort)."""
        audit_pass = AuditPass(started=time.time(), notes=list(plan.notes))
        before = self.api.requests
        interned: dict[Finding, Finding] = {}
        try:
            for resource in plan.resources:
                if not proceed():
                    audit_pass.aborted = True
                    break
                self._resource(resource, plan, cluster, audit_pass, interned, proceed)
        except Stopped:
            audit_pass.aborted = True
        audit_pass.requests = self.api.requests - before
        audit_pass.finished = time.time()
        return audit_pass

    def _resource(self, resource: Resource, plan: AuditPlan, cluster: Any, audit_pass: AuditPass,
                  interned: dict[Finding, Finding], proceed: Callable[[], bool]) -> None:
        for attempt in range(self.relists + 1):
            try:
                for page in self.api.pages(resource.path, limit=self.page_size):
                    self.judge_page(resource, page, plan, cluster, audit_pass, interned)
                    if not proceed():
                        audit_pass.aborted = True
                        return
                audit_pass.listed.add((resource.api_version, resource.kind))
                return
            except Expired as error:
                if attempt == self.relists:
                    audit_pass.errors.append(f"{resource.resource}: {error}")
            except ApiError as error:
                audit_pass.errors.append(f"{resource.resource}: {error}")
                return

    def judge_page(self, resource: Resource, page: list[dict[str, Any]], plan: AuditPlan, cluster: Any,
                   audit_pass: AuditPass, interned: dict[Finding, Finding] | None = None) -> None:
        """Judge one page of `resource`'s objects into `audit_pass` (equal findings shared through `interned`)."""
        interned = {} if interned is None else interned
        kind = GroupVersionKind.model_construct(group=resource.group, version=resource.version, kind=resource.kind)
        gvr = GroupVersionResource.model_construct(group=resource.group, version=resource.version,
                                                   resource=resource.resource)
        raw_kind = {"group": resource.group, "version": resource.version, "kind": resource.kind}
        raw_resource = {"group": resource.group, "version": resource.version, "resource": resource.resource}
        user = UserInfo.model_construct(username="", uid="", groups=[], extra={})
        options = {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        if (delay := self.pace.delay(len(page))) > 0:
            self.api.pause(delay)
        for obj in page:
            obj.setdefault("apiVersion", resource.api_version)  # list items of built-in kinds carry neither
            obj.setdefault("kind", resource.kind)
            metadata = obj.get("metadata") or {}
            name, namespace = str(metadata.get("name", "")), str(metadata.get("namespace") or "")
            if (namespace if resource.namespaced else name if resource.resource == "namespaces" else "") in self.exempt:
                continue
            uid = str(metadata.get("uid") or f"{namespace}/{name}")
            request = AdmissionRequest.model_construct(
                uid=f"audit-{uid}", kind=kind, resource=gvr, subResource="", requestKind=kind, requestResource=gvr,
                requestSubResource="", name=name, namespace=namespace, operation=OPERATION, userInfo=user,
                object=obj, oldObject=None, dryRun=False, options=options)
            raw = {"uid": request.uid, "kind": raw_kind, "resource": raw_resource, "name": name,
                   "namespace": namespace, "operation": OPERATION, "userInfo": {}, "dryRun": False, "options": options}
            decision = admit(plan.policy_set, request, raw, phase="validate", cluster=cluster,
                             deadline_seconds=self.deadline_seconds)
            if uid not in audit_pass.seen:  # a relist judges objects again: counted once
                audit_pass.seen.add(uid)
                audit_pass.objects[resource.kind] += 1
            if not decision.results:
                audit_pass.judged.pop(uid, None)
                continue
            findings = tuple(interned.setdefault(finding, finding) for finding in findings_of(decision.results))
            subject = Subject(resource.api_version, resource.kind, resource.resource, namespace, name, uid,
                              str(metadata.get("resourceVersion", "")))
            audit_pass.judged[uid] = Judged(subject, findings)
