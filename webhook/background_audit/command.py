"""`webhook audit`: one pass over a cluster with a policy directory, printed as a table or JSON; with
`--write-reports` the reports are written once (for CI jobs and cron). Exit status: 0 no violation, 1 some
violation or a policy that could not judge an object, 2 a problem with the policies, the cluster configuration
or the API (then nothing is reported as compliant)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import orjson

from webhook.background_audit.api import ApiError, KubeApi
from webhook.background_audit.reports import FORMATS, ReportWriter
from webhook.background_audit.scan import Auditor, AuditPass, ListedNamespaces
from webhook.background_audit.targets import AuditPlan, plan
from webhook.cel.environment import parse_version
from webhook.cluster import api_client_for
from webhook.errors import PolicyLoadError
from webhook.policies import deadline
from webhook.policies.cel import make_engine
from webhook.policies.loader import load_policy_set


def command(arguments: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        policy_set = load_policy_set(arguments.policies, engine=make_engine(
            arguments.cel_engine, kubernetes_version=parse_version(arguments.kubernetes_version)))
    except PolicyLoadError as error:
        print("\n".join(str(problem) for problem in error.problems), file=err)
        return 2
    audit_plan = plan(policy_set)
    try:
        api_client = api_client_for(kubeconfig=arguments.kubeconfig, context=arguments.context,
                                    in_cluster=arguments.in_cluster)
    except Exception as error:  # the kubernetes client's configuration loaders raise several kinds
        print(f"webhook audit: no cluster configuration: {type(error).__name__}: {error}", file=err)
        return 2
    api = KubeApi(api_client, qps=arguments.qps, burst=max(1, int(arguments.qps * 2)))
    deadline.install()  # one object's evaluation is bounded as a review's is (main thread only)
    try:
        cluster = ListedNamespaces.listed(api, page_size=arguments.page_size)
        auditor = Auditor(api, page_size=arguments.page_size, exempt_namespaces=arguments.exempt_namespaces,
                          deadline_seconds=arguments.evaluation_deadline_seconds)
        audit_pass = auditor.run(audit_plan, cluster=cluster)
        if audit_pass.complete and arguments.write_reports:
            writer = ReportWriter(api, FORMATS[arguments.report_format])
            summary = writer.write(audit_pass.judged.values(), info=audit_plan.info,
                                   stamp=lambda finding, subject: audit_pass.started)
            print(f"reports: {summary.created} created, {summary.updated} updated, {summary.unchanged} unchanged, "
                  f"{summary.deleted} deleted", file=err)
    except ApiError as error:
        print(f"webhook audit: the API server refused: {error}", file=err)
        return 2
    finally:
        api_client.close()
    audit_pass.requests = api.requests
    if arguments.output == "json":
        out.write(orjson.dumps(as_json(audit_plan, audit_pass), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(audit_plan, audit_pass, out=out, err=err)
    if not audit_pass.complete:
        if arguments.write_reports:
            print("webhook audit: the pass is incomplete; reports were not written", file=err)
        return 2
    counts = audit_pass.counts()
    return 1 if counts["fail"] or counts["warn"] or counts["error"] else 0


def rows(audit_pass: AuditPass) -> list[dict[str, Any]]:
    """The results other than pass, by policy, then object."""
    found: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for judged in audit_pass.judged.values():
        subject = judged.subject
        for finding in judged.findings:
            if finding.result == "pass":
                continue
            found.append(((finding.policy, finding.binding, subject.kind, subject.namespace, subject.name,
                           finding.rule), {
                "policy": finding.policy, "binding": finding.binding, "rule": finding.rule, "result": finding.result,
                "message": finding.message, "object": {"apiVersion": subject.api_version, "kind": subject.kind,
                                                       "namespace": subject.namespace, "name": subject.name,
                                                       "uid": subject.uid}}))
    found.sort(key=lambda row: row[0])
    return [row for _, row in found]


def as_json(audit_plan: AuditPlan, audit_pass: AuditPass) -> dict[str, Any]:
    return {
        "complete": audit_pass.complete,
        "objects": dict(sorted(audit_pass.objects.items())),
        "resources": [f"{resource.resource}.{resource.group}" if resource.group else resource.resource
                      for resource in audit_plan.resources],
        "policies": sorted({policy.name for policy in audit_plan.policy_set.policies}),
        "summary": audit_pass.counts(),
        "results": rows(audit_pass),
        "notes": audit_pass.notes,
        "errors": audit_pass.errors,
        "apiRequests": audit_pass.requests,
        "durationSeconds": round(audit_pass.finished - audit_pass.started, 3),
    }


def print_table(audit_plan: AuditPlan, audit_pass: AuditPass, *, out: TextIO, err: TextIO) -> None:
    found = rows(audit_pass)
    if found:
        widths = [max(len(text) for text in [header, *values]) for header, values in (
            ("POLICY", [row["policy"] for row in found]), ("RESULT", [row["result"] for row in found]),
            ("KIND", [row["object"]["kind"] for row in found]),
            ("OBJECT", [_object(row["object"]) for row in found]))]
        def line(*columns: str) -> str:
            return "  ".join([*(text.ljust(width) for text, width in zip(columns, widths, strict=False)),
                              columns[-1]]).rstrip()

        print(line("POLICY", "RESULT", "KIND", "OBJECT", "MESSAGE"), file=out)
        for row in found:
            print(line(row["policy"], row["result"], row["object"]["kind"], _object(row["object"]), row["message"]),
                  file=out)
    for note in audit_pass.notes:
        print(f"note: {note}", file=err)
    for error in audit_pass.errors:
        print(f"error: {error}", file=err)
    counts = audit_pass.counts()
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(audit_pass.objects.items())) or "none"
    print(f"audited {sum(audit_pass.objects.values())} objects ({kinds}) with {len(audit_plan.policy_set.policies)} "
          f"policies: {counts['fail']} fail, {counts['warn']} warn, {counts['error']} error, {counts['pass']} pass; "
          f"{audit_pass.requests} API requests{'' if audit_pass.complete else '; INCOMPLETE'}", file=out)


def _object(reference: dict[str, str]) -> str:
    return f"{reference['namespace']}/{reference['name']}" if reference["namespace"] else reference["name"]
