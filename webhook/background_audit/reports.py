"""Policy reports from a pass: OpenReports (`openreports.io/v1alpha1` `Report` per namespace, `ClusterReport`
for cluster-scoped objects) or, selectable, the older `wgpolicyk8s.io/v1alpha2` `PolicyReport` /
`ClusterPolicyReport` (the same fields; Policy Reporter and Kyverno's tooling read both).

Each report holds one result per policy, rule and outcome of each object (pass results included, as Kyverno's
background reports), with severity and category from the policy's annotations, the time the result was
found, and summary counts. A namespace's results go into `webhook-audit`, then `webhook-audit-2`, ... of at most
1,000 results and about 768 KiB each (etcd takes objects up to 1.5 MiB). Writing replaces the whole set: reports
whose content is unchanged are left alone, others replaced (resourceVersion checked), and reports of ours
(label `app.kubernetes.io/managed-by: webhook-audit`) that the pass no longer needs are deleted, so results of
fixed or deleted objects disappear with the next pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.background_audit.api import ApiError, KubeApi
from webhook.background_audit.scan import Finding, Judged, Subject
from webhook.background_audit.targets import PolicyInfo

MANAGED_BY = ("app.kubernetes.io/managed-by", "webhook-audit")
NAME = "webhook-audit"
SOURCE = "webhook"
MAX_RESULTS = 1000
MAX_BYTES = 768 * 1024
REPORT_PAGE = 5  # reports per list page: a report of 1,000 results is ~10 MiB once decoded
Stamp = Callable[[Finding, Subject], float]


@dataclass(frozen=True, slots=True)
class ReportFormat:
    name: str
    group: str
    version: str
    namespaced: tuple[str, str]  # plural, kind
    cluster: tuple[str, str]
    top_level_source: bool  # OpenReports has `source` on the report too

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def path(self, namespace: str, name: str | None = None) -> str:
        """Of one report (with `name`), or of the collection to create in ("" namespace: cluster-scoped)."""
        base = (f"/apis/{self.api_version}/namespaces/{namespace}/{self.namespaced[0]}" if namespace
                else f"/apis/{self.api_version}/{self.cluster[0]}")
        return f"{base}/{name}" if name else base


FORMATS = {
    "openreports": ReportFormat("openreports", "openreports.io", "v1alpha1", ("reports", "Report"),
                                ("clusterreports", "ClusterReport"), True),
    "policyreport": ReportFormat("policyreport", "wgpolicyk8s.io", "v1alpha2", ("policyreports", "PolicyReport"),
                                 ("clusterpolicyreports", "ClusterPolicyReport"), False),
}


@dataclass
class WriteSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


def result(finding: Finding, subject: Subject, *, info: PolicyInfo, stamp: float) -> dict[str, Any]:
    found: dict[str, Any] = {"source": SOURCE, "policy": finding.policy, "rule": finding.rule,
                             "result": finding.result, "scored": True,
                             "timestamp": {"seconds": int(stamp), "nanos": 0},
                             "resources": [subject.reference()]}
    if finding.message:
        found["message"] = finding.message
    if info.severity:
        found["severity"] = info.severity
    if info.category:
        found["category"] = info.category
    if finding.binding:
        found["properties"] = {"binding": finding.binding}
    return found


def results_of(judged: Iterable[Judged], *, info: Mapping[str, PolicyInfo], stamp: Stamp) -> list[dict[str, Any]]:
    """Report results of some objects, in a stable order (kind, name, policy, binding, rule, result)."""
    ordered = sorted(judged, key=lambda item: (item.subject.kind, item.subject.name, item.subject.uid))
    found = []
    for item in ordered:
        for finding in sorted(item.findings, key=lambda f: (f.policy, f.binding, f.rule, f.result, f.message)):
            found.append(result(finding, item.subject, info=info.get(finding.policy, PolicyInfo()),
                                stamp=stamp(finding, item.subject)))
    return found


def summary_of(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
    for item in results:
        counts[str(item["result"])] += 1
    return counts


def reports_for(report_format: ReportFormat, namespace: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports of one namespace ("" : cluster-scoped objects), split by MAX_RESULTS and MAX_BYTES."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for item in results:
        length = len(orjson.dumps(item))
        if chunks[-1] and (len(chunks[-1]) >= MAX_RESULTS or size + length > MAX_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += length
    plural_kind = report_format.namespaced if namespace else report_format.cluster
    reports = []
    for index, chunk in enumerate(chunks):
        metadata: dict[str, Any] = {"name": NAME if index == 0 else f"{NAME}-{index + 1}",
                                    "labels": {MANAGED_BY[0]: MANAGED_BY[1]}}
        if namespace:
            metadata["namespace"] = namespace
        report: dict[str, Any] = {"apiVersion": report_format.api_version, "kind": plural_kind[1],
                                  "metadata": metadata}
        if report_format.top_level_source:
            report["source"] = SOURCE
        report["summary"] = summary_of(chunk)
        report["results"] = chunk
        reports.append(report)
    return reports


def content_hash(report: Mapping[str, Any]) -> str:
    """Of what a pass decides (results and summary), not of metadata the API server keeps."""
    content = {"results": report.get("results") or [], "summary": report.get("summary") or {}}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ReportWriter:
    """Reads and replaces this server's reports through `api`."""

    def __init__(self, api: KubeApi, report_format: ReportFormat) -> None:
        self.api, self.format = api, report_format

    def _reports(self) -> Iterator[dict[str, Any]]:
        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        for plural, kind in (self.format.namespaced, self.format.cluster):
            path = f"/apis/{self.format.api_version}/{plural}"
            try:
                for page in self.api.pages(path, limit=REPORT_PAGE, label_selector=selector):
                    yield from page
            except ApiError as error:
                if error.status == 404:
                    raise ApiError(404, f"{kind} ({self.format.api_version}) is not served: install its CRD (the "
                                        "chart's audit.crds.enabled) or choose another --report-format") from error
                raise

    def results(self) -> Iterator[dict[str, Any]]:
        """Every result of this server's reports (to seed a ledger)."""
        for report in self._reports():
            yield from report.get("results") or ()

    def existing(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(namespace, name) -> (resourceVersion, content hash) of this server's reports."""
        return {(str(report["metadata"].get("namespace", "")), str(report["metadata"]["name"])):
                (str(report["metadata"].get("resourceVersion", "")), content_hash(report))
                for report in self._reports()}

    def write(self, judged: Iterable[Judged], *, info: Mapping[str, PolicyInfo], stamp: Stamp) -> WriteSummary:
        """Replace the reports with those of `judged` (every object of a complete pass)."""
        existing = self.existing()
        groups: dict[str, list[Judged]] = {}
        for item in judged:
            groups.setdefault(item.subject.namespace, []).append(item)
        summary = WriteSummary()
        wanted: set[tuple[str, str]] = set()
        for namespace in sorted(groups):
            for report in reports_for(self.format, namespace, results_of(groups[namespace], info=info, stamp=stamp)):
                key = (namespace, str(report["metadata"]["name"]))
                wanted.add(key)
                found = existing.get(key)
                if found is not None and found[1] == content_hash(report):
                    summary.unchanged += 1
                    continue
                self._put(namespace, report, found[0] if found is not None else None)
                if found is None:
                    summary.created += 1
                else:
                    summary.updated += 1
        for namespace, name in sorted(set(existing) - wanted):
            try:
                self.api.request("DELETE", self.format.path(namespace, name))
            except ApiError as error:
                if error.status != 404:
                    raise
            summary.deleted += 1
        return summary

    def _put(self, namespace: str, report: dict[str, Any], resource_version: str | None) -> None:
        name = str(report["metadata"]["name"])
        for attempt in range(3):
            try:
                if resource_version is None:
                    self.api.request("POST", self.format.path(namespace), body=report)
                else:
                    body = {**report, "metadata": {**report["metadata"], "resourceVersion": resource_version}}
                    self.api.request("PUT", self.format.path(namespace, name), body=body)
                return
            except ApiError as error:
                if error.status != 409 or attempt == 2:  # 409: created or changed meanwhile; take its version
                    raise
                current = self.api.get(self.format.path(namespace, name))
                resource_version = None if current is None else str(current["metadata"].get("resourceVersion", ""))
