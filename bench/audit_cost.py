"""What a background audit pass costs with the shipped policy library: objects per second, API requests per pass,
and peak memory, for 10,000 objects served by the fake API server of the tests.

    .venv/bin/python bench/audit_cost.py [--objects 10000] [--page-size 500]

The fake API server (tests/fake_apiserver.py) runs in a process of its own, so that this process's peak RSS is
the audit's: the shipped library loaded and planned, then a pass through the real `kubernetes` client (lists in
pages, every object judged by `webhook.admission.admit` as a CREATE), the reports written, and a second pass
whose reports are unchanged (nothing written). Then the same objects judged in-process (no HTTP, no JSON), which
is the evaluation alone. The objects: Pods (60%), Deployments, ReplicaSets, StatefulSets, Jobs in 50
namespaces (a fifth labelled `environment: production`), about a third breaking some policy.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = (("pods", None, 60), ("deployments", "apps/v1", 15), ("replicasets", "apps/v1", 10),
         ("statefulsets", "apps/v1", 10), ("jobs", "batch/v1", 5))


def pod_spec(index: int) -> dict[str, Any]:
    broken = index % 3 == 0
    image = "nginx:latest" if broken else f"registry.example.com/app@sha256:{index:064x}"
    resources = ({"requests": {"cpu": "100m"}} if broken else
                 {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}})
    return {"containers": [{"name": "app", "image": image, "resources": resources,
                            "ports": [{"containerPort": 8080}], "env": [{"name": "MODE", "value": "serve"}]}],
            "priorityClassName": "standard" if index % 5 else "system-cluster-critical"}


def make_object(kind: str, index: int) -> dict[str, Any]:
    namespace = f"team-{index % 50}"
    metadata = {"name": f"{kind[:-1]}-{index}", "namespace": namespace, "labels": {"app": f"app-{index % 200}"},
                "annotations": {"example.com/owner": "platform"}}
    if kind == "pods":
        return {"metadata": metadata, "spec": pod_spec(index), "status": {"phase": "Running"}}
    template = {"metadata": {"labels": {"app": f"app-{index % 200}"}}, "spec": pod_spec(index)}
    if kind == "jobs":
        return {"metadata": metadata, "spec": {"template": {**template, "spec": {**template["spec"],
                                                                                "restartPolicy": "Never"}}}}
    spec: dict[str, Any] = {"replicas": 1 + index % 4, "selector": {"matchLabels": {"app": f"app-{index % 200}"}},
                            "template": template}
    if kind == "deployments":
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    return {"metadata": metadata, "spec": spec}


def objects(count: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    found = []
    index = 0
    for kind, group_version, share in KINDS:
        for _ in range(count * share // 100):
            found.append((kind, group_version, make_object(kind, index)))
            index += 1
    return found


def serve(count: int, connection: Any) -> None:
    """The child process: a fake API server holding the namespaces and `count` objects."""
    from tests.fake_apiserver import FakeAPIServer

    api = FakeAPIServer()
    for number in range(50):
        labels = {"kubernetes.io/metadata.name": f"team-{number}"}
        if number % 5 == 0:
            labels["environment"] = "production"
        api.put("namespaces", {"metadata": {"name": f"team-{number}", "labels": labels}})
    for kind, group_version, obj in objects(count):
        if group_version is None:
            api.put(kind, obj)
        else:
            api.api_put(group_version, kind, obj)
    connection.send(api.url)
    connection.recv()  # until the parent is done
    connection.send(len(api.requests))
    api.close()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=500)
    arguments = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(arguments.objects, child), daemon=True)
    server.start()
    url = parent.recv()

    import tempfile

    import yaml

    from webhook.background_audit.api import KubeApi
    from webhook.background_audit.ledger import Ledger
    from webhook.background_audit.reports import FORMATS, ReportWriter
    from webhook.background_audit.scan import Auditor, ListedNamespaces
    from webhook.background_audit.targets import plan
    from webhook.cluster import api_client_for
    from webhook.policies.cel import make_engine
    from webhook.policies.loader import load_policy_set

    kubeconfig = Path(tempfile.mkdtemp()) / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}], "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}]}))
    audit_plan = plan(load_policy_set(ROOT / "policies", engine=make_engine("builtin")))
    api = KubeApi(api_client_for(kubeconfig=kubeconfig), qps=0)
    cluster = ListedNamespaces.listed(api)
    auditor = Auditor(api, page_size=arguments.page_size)
    writer = ReportWriter(api, FORMATS["openreports"])
    ledger = Ledger()
    print(f"{arguments.objects} objects, page size {arguments.page_size}, {len(audit_plan.policy_set.policies)} "
          f"audited policies over {', '.join(r.resource for r in audit_plan.resources)}")
    before = rss_mib()
    print(f"RSS before the first pass (library loaded and planned): {before:.0f} MiB")
    for number in (1, 2):
        requests = api.requests
        audit_pass = auditor.run(audit_plan, cluster=cluster)
        ledger.apply(audit_pass, policies={policy.name for policy in audit_plan.policy_set.policies})
        judged = sum(audit_pass.objects.values())
        elapsed = audit_pass.finished - audit_pass.started
        counts = audit_pass.counts()
        started = time.perf_counter()
        summary = writer.write(audit_pass.judged.values(), info=audit_plan.info,
                               stamp=lambda finding, subject, at=audit_pass.started: ledger.since(finding, subject, at))
        written = time.perf_counter() - started
        audit_pass.forget()  # as the server does: the ledger and the reports hold the results now
        print(f"pass {number}: {judged} objects in {elapsed:.2f} s = {judged / elapsed:,.0f} objects/s "
              f"(list + judge), {audit_pass.requests} list requests; {counts['fail']} fail, {counts['warn']} warn, "
              f"{counts['error']} error, {counts['pass']} pass results")
        print(f"        reports in {written:.2f} s: {summary.created} created, {summary.updated} updated, "
              f"{summary.unchanged} unchanged, {summary.deleted} deleted; {api.requests - requests} API requests "
              "in the pass with its reports")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB ({peak - before:+.0f} MiB over the loaded library); RSS now {rss_mib():.0f} MiB")

    from webhook.background_audit.scan import AuditPass
    from webhook.background_audit.targets import KNOWN

    items = []
    for kind, group_version, obj in objects(arguments.objects):
        group = (group_version or "v1").rpartition("/")[0]
        resource_row = KNOWN[(group, kind)]
        items.append((resource_row, {**obj, "apiVersion": resource_row.api_version, "kind": resource_row.kind,
                                     "metadata": {**obj["metadata"], "uid": f"u-{len(items)}"}}))
    by_resource: dict[Any, list[dict[str, Any]]] = {}
    for resource_row, obj in items:
        by_resource.setdefault(resource_row, []).append(obj)
    in_process = AuditPass(started=time.time())
    started = time.perf_counter()
    for resource_row, page in by_resource.items():
        auditor.judge_page(resource_row, page, audit_plan, cluster, in_process)
    elapsed = time.perf_counter() - started
    print(f"in-process (judging only, no HTTP or JSON): {len(items)} objects in {elapsed:.2f} s = "
          f"{len(items) / elapsed:,.0f} objects/s")
    parent.send("done")
    print(f"API requests served by the fake API server in all: {parent.recv()}")
    server.join(10)


if __name__ == "__main__":
    main()
