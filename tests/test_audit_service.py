"""The audit loop of `webhook serve --audit` (webhook.background_audit.service): events per change of state (never per
pass), a baseline first pass, seeding from reports after a restart, policy reloads, API errors mid-pass, Lease
leader election and hand-over; then a real `webhook serve --audit` process with a real HTTP subscriber."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import ServerProcess, client_context, wait_for
from tests.receivers import Receiver
from tests.test_audit import AUDIT_POLICIES, CLUSTER_REPORTS, REPORTS, namespace, pod, populate
from webhook.background_audit.api import KubeApi
from webhook.background_audit.leader import LeaderElector
from webhook.background_audit.service import AuditService, AuditSettings
from webhook.cluster import api_client_for
from webhook.events.service import EventRecorder, EventSettings
from webhook.events.spool import EVENT, read_records
from webhook.metrics import Metrics
from webhook.policies.cel import make_engine
from webhook.policies.store import PolicyStore
from webhook.state import EMPTY

LEASE = "/apis/coordination.k8s.io/v1/namespaces/webhook/leases/webhook-audit"
FAST_LEASE = {"lease_seconds": 1, "renew_deadline": 0.6, "retry_period": 0.1}
# Tests that run passes by hand lead with one step: a lease that outlives any pass here
HELD_LEASE = {"lease_seconds": 60, "renew_deadline": 40.0, "retry_period": 1.0}



class Replica:
    """An audit service as `webhook serve` builds it, with a real policy store and event recorder."""

    def __init__(self, api: FakeAPIServer, directory: Path, *, identity: str, policies: Path = AUDIT_POLICIES,
                 **settings: Any) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        subscribers = directory / "subscribers.yaml"
        subscribers.write_text("subscribers:\n  - name: all\n    sink: http://127.0.0.1:9/events\n")
        self.state = directory / "state"
        metrics = Metrics()
        self.events = EventRecorder(EventSettings(state_dir=self.state, subscribers_file=subscribers,
                                                  source="urn:test"), metrics=metrics)
        self.store = PolicyStore(policies, engine=make_engine("builtin"), metrics=metrics)
        assert self.store.load()
        self.metrics = metrics
        self.service = AuditService(
            api_client_for(kubeconfig=api.kubeconfig(directory)),
            AuditSettings(identity=identity, lease_namespace="webhook", objects_per_second=0, qps=0,
                          **{**HELD_LEASE, **settings}),
            policies=lambda: self.store.current, cluster=EMPTY, events=self.events, metrics=metrics)
        self.service.api.backoff_seconds = (0.01, 0.05)

    def audit(self) -> list[dict[str, Any]]:
        """Lead (if needed), run one pass; the audit events it recorded."""
        before = len(self.audit_events())
        if not self.service.elector.leading:
            assert self.service.elector.step()
        assert asyncio.run(self.service.audit_once(asyncio.Event()))
        return self.audit_events()[before:]

    def audit_events(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted((self.state / "spool").iterdir()):
            for kind, fields in read_records(path):
                if kind == EVENT:
                    event = orjson.loads(fields[0])
                    if event["attributes"]["type"].startswith("dev.webhook.audit."):
                        found.append(event)
        return found


def changes(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(type, policy, object, reason) of audit events, sorted."""
    return sorted((event["attributes"]["type"].removeprefix("dev.webhook.audit."), event["data"]["policy"],
                   event["data"]["object"]["name"], event["data"]["reason"]) for event in events)


def report_objects(api: FakeAPIServer) -> dict[tuple[str, str], list[tuple[str, str]]]:
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for report in api.api_objects(*REPORTS) + api.api_objects(*CLUSTER_REPORTS):
        for result in report["results"]:
            reference = result["resources"][0]
            found.setdefault((reference["kind"], reference["name"]), []).append((result["policy"], result["result"]))
    return {key: sorted(value) for key, value in found.items()}


def report_writes(api: FakeAPIServer) -> int:
    return sum(1 for method, path, _ in api.requests if method in ("POST", "PUT", "DELETE") and "reports" in path)


def test_events_follow_changes_of_state_never_passes(api: FakeAPIServer, tmp_path: Path) -> None:
    populate(api)
    replica = Replica(api, tmp_path / "a", identity="a")
    assert replica.audit() == []  # no report to start from: the first pass is a baseline
    assert report_objects(api)[("Pod", "bad")] == [("no-latest", "fail"), ("pod-needs-requests", "fail"),
                                                   ("require-team-label", "fail")]
    writes = report_writes(api)
    assert replica.audit() == []  # nothing changed: no event, and no report written again
    assert report_writes(api) == writes

    api.put("pods", pod("bad"))  # fixed
    api.put("pods", pod("good", image="nginx:latest"))  # broken
    fixed = replica.audit()
    assert changes(fixed) == [("resolved", "no-latest", "bad", "fixed"),
                              ("resolved", "pod-needs-requests", "bad", "fixed"),
                              ("resolved", "require-team-label", "bad", "fixed"),
                              ("violation", "no-latest", "good", "violating")]
    violation = next(event for event in fixed if event["attributes"]["type"] == "dev.webhook.audit.violation")
    assert violation["attributes"]["subject"] == "namespaces/shop/pods/good"
    assert violation["attributes"]["source"] == "urn:test"
    assert violation["data"]["messages"] == ["images must name a version"]
    assert violation["data"]["binding"] == "no-latest-everywhere"
    assert violation["data"]["severity"] == "high"
    assert violation["data"]["object"]["uid"] == "uid-pods-shop-good"
    assert report_objects(api)[("Pod", "bad")] == [("no-latest", "pass"), ("pod-needs-requests", "pass"),
                                                   ("require-team-label", "pass")]

    api.api_delete("apps/v1", "deployments", "batch", "shop")
    deleted = replica.audit()
    assert changes(deleted) == [("resolved", "require-team-label", "batch", "deleted"),
                                ("resolved", "two-replicas", "batch", "deleted")]
    assert ("Deployment", "batch") not in report_objects(api)  # its stale results are gone
    assert replica.audit() == []
    metrics = replica.metrics.render().decode()
    assert 'webhook_audit_violations{policy="no-latest"} 1.0' in metrics
    assert 'webhook_audit_passes_total{result="complete"} 5.0' in metrics
    assert 'webhook_audit_objects_total{kind="Pod"} 10.0' in metrics
    assert 'webhook_audit_events_total{type="resolved"} 5.0' in metrics
    assert "webhook_audit_last_success_timestamp_seconds 1." in metrics
    assert "webhook_audit_pass_duration_seconds_count 5.0" in metrics


def test_a_new_leader_starts_from_the_reports_so_nothing_is_announced_twice(api: FakeAPIServer,
                                                                            tmp_path: Path) -> None:
    populate(api)
    first = Replica(api, tmp_path / "a", identity="a")
    assert first.audit() == []
    first.service.elector.release()
    api.put("pods", pod("good", team=None))  # changed while nobody audited
    second = Replica(api, tmp_path / "b", identity="b")  # a restart, or the other replica taking over
    assert changes(second.audit()) == [("violation", "require-team-label", "good", "violating")]
    assert second.audit() == []


def test_a_policy_reload_audits_again_and_resolves_what_a_removed_policy_found(api: FakeAPIServer,
                                                                               tmp_path: Path) -> None:
    populate(api)
    policies = tmp_path / "policies"
    shutil.copytree(AUDIT_POLICIES, policies)
    replica = Replica(api, tmp_path / "a", identity="a", policies=policies)
    replica.audit()
    (policies / "team-label.yaml").unlink()
    (policies / "team-label-v2.yaml").write_text((AUDIT_POLICIES / "team-label.yaml").read_text().replace(
        "require-team-label", "team-label-v2").replace("'team' in", "'team-v2' in"))
    assert replica.store.load()
    replica.service.policies_changed()
    reloaded = replica.audit()
    assert changes(reloaded) == [
        ("resolved", "require-team-label", "bad", "policy-removed"),
        ("resolved", "require-team-label", "batch", "policy-removed"),
        ("violation", "team-label-v2", "bad", "violating"), ("violation", "team-label-v2", "batch", "violating"),
        ("violation", "team-label-v2", "good", "violating"), ("violation", "team-label-v2", "web", "violating")]
    assert all(policy != "require-team-label" for results in report_objects(api).values() for policy, _ in results)


def test_an_api_error_mid_pass_neither_repeats_nor_loses_an_event(api: FakeAPIServer, tmp_path: Path) -> None:
    api.put("namespaces", namespace("shop", owner="a"))
    for index in range(23):
        api.put("pods", pod(f"p{index:02}"))
    replica = Replica(api, tmp_path / "a", identity="a", page_size=5)
    assert replica.audit() == []  # the baseline: all compliant
    for index in range(23):
        api.put("pods", pod(f"p{index:02}", image="nginx:latest"))
    for offset in (5, 10, 15):  # pages 2, 3 and 4 fail once each, and are asked for again
        api.inject_failures(f"/api/v1/pods?limit=5&continue={offset}%3A", count=1, status=500)
    events = replica.audit()
    assert sorted(event["data"]["object"]["name"] for event in events) == [f"p{index:02}" for index in range(23)]
    assert {(event["data"]["policy"], event["data"]["reason"]) for event in events} == {("no-latest", "violating")}
    assert len({event["attributes"]["id"] for event in events}) == 23
    [report] = api.api_objects(*REPORTS)
    assert report["summary"]["fail"] == 23
    assert replica.audit() == []


def test_an_incomplete_pass_keeps_the_reports_and_announces_no_deletion(api: FakeAPIServer, tmp_path: Path) -> None:
    populate(api)
    replica = Replica(api, tmp_path / "a", identity="a")
    replica.audit()
    before = report_objects(api)
    api.inject_failures("/apis/apps/v1/deployments", count=100, status=503)
    api.put("pods", pod("bad"))
    replica.service.elector.step()
    assert asyncio.run(replica.service.audit_once(asyncio.Event())) is False
    assert changes(replica.audit_events()[-3:]) == [("resolved", "no-latest", "bad", "fixed"),
                                                    ("resolved", "pod-needs-requests", "bad", "fixed"),
                                                    ("resolved", "require-team-label", "bad", "fixed")]
    assert report_objects(api) == before  # kept until a complete pass
    assert 'webhook_audit_passes_total{result="incomplete"} 1.0' in replica.metrics.render().decode()


# --- Lease leader election --------------------------------------------------------------------------------------


def elector(api: FakeAPIServer, directory: Path, identity: str) -> LeaderElector:
    kube = KubeApi(api_client_for(kubeconfig=api.kubeconfig(directory)), qps=0, attempts=1)
    return LeaderElector(kube, namespace="webhook", name="webhook-audit", identity=identity, **FAST_LEASE)


def lease(api: FakeAPIServer) -> dict[str, Any]:
    [found] = api.api_objects("coordination.k8s.io/v1", "leases")
    spec: dict[str, Any] = found["spec"]
    return spec


def test_leader_hand_over_between_two_electors(api: FakeAPIServer, tmp_path: Path) -> None:
    a, b = elector(api, tmp_path, "a"), elector(api, tmp_path, "b")
    assert a.step() is True
    assert b.step() is False
    assert lease(api)["holderIdentity"] == "a"
    assert lease(api)["leaseDurationSeconds"] == 1
    # a stops renewing (a crash): b takes over once the record has not changed for the lease duration
    wait_for(lambda: b.step(), timeout=20, interval=0.1, what="b to take over an expired lease")
    assert lease(api)["holderIdentity"] == "b"
    assert lease(api)["leaseTransitions"] == 1
    assert a.leading is False  # past its renew deadline without renewing
    assert a.step() is False  # b holds and renews
    b.release()  # a graceful shutdown: a takes over at once
    assert lease(api)["holderIdentity"] == ""
    assert a.step() is True
    assert lease(api)["leaseTransitions"] == 2


def test_two_running_electors_never_lead_together_and_hand_over_on_stop(api: FakeAPIServer, tmp_path: Path) -> None:
    candidates = [elector(api, tmp_path, name) for name in ("a", "b")]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=candidate.run, args=(stop,), daemon=True)
               for candidate, stop in zip(candidates, stops, strict=True)]
    for thread in threads:
        thread.start()
    try:
        leader = wait_for(lambda: next((c for c in candidates if c.leading), None), what="a leader")
        for _ in range(20):
            assert sum(candidate.leading for candidate in candidates) <= 1
            stops[0].wait(0.05)
        index = candidates.index(leader)
        stops[index].set()
        threads[index].join(10)
        other = candidates[1 - index]
        wait_for(lambda: other.leading, timeout=10, what="the other candidate to take over")
        assert lease(api)["holderIdentity"] == other.identity
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(10)


def test_only_the_leader_audits_and_the_other_takes_over(api: FakeAPIServer, tmp_path: Path) -> None:
    populate(api)
    replicas = [Replica(api, tmp_path / name, identity=name, interval_seconds=3600, **FAST_LEASE)
                for name in ("a", "b")]

    async def scenario() -> tuple[Replica, Replica]:
        stops = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(replica.service.run(stop)) for replica, stop in zip(replicas, stops, strict=True)]
        while not any(replica.service.outcomes for replica in replicas):
            await asyncio.sleep(0.05)
        leader = next(replica for replica in replicas if replica.service.outcomes)
        other = replicas[1 - replicas.index(leader)]
        for _ in range(10):  # the other one does not audit meanwhile
            await asyncio.sleep(0.05)
            assert not other.service.outcomes
        stops[replicas.index(leader)].set()  # shutdown: the Lease is released
        await tasks[replicas.index(leader)]
        while not other.service.outcomes:
            await asyncio.sleep(0.05)
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
        return leader, other

    leader, other = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert leader.service.outcomes[0].audit_pass.complete
    assert other.service.outcomes[0].audit_pass.complete
    assert other.audit_events() == []  # it started from the leader's reports: nothing changed, nothing announced


# --- `webhook serve --audit` ------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def test_serve_audits_on_a_period_and_after_a_reload_and_announces_changes(
        api: FakeAPIServer, tmp_path: Path, receiver: Receiver,
        server_processes: Callable[..., ServerProcess]) -> None:
    import httpx

    populate(api)
    policies = tmp_path / "policies"
    shutil.copytree(AUDIT_POLICIES, policies)
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text(f"subscribers:\n  - name: audit\n    sink: {receiver.url}\n    filters:\n"
                           "      - prefix: {type: dev.webhook.audit.}\n")
    server = server_processes("--kubeconfig", str(api.kubeconfig(tmp_path)), "--policies", str(policies), "--audit",
                              "--audit-interval-seconds", "1", "--audit-lease-namespace", "webhook",
                              "--subscribers", str(subscribers), "--event-delivery", "inline")
    server.wait_ready()
    wait_for(lambda: api.api_objects(*REPORTS), timeout=60, what="the first reports")
    assert receiver.events() == []  # the first pass is a baseline
    api.put("pods", pod("good", requests=False))
    violation = wait_for(lambda: receiver.events("dev.webhook.audit.violation"), timeout=60, what="a violation")
    assert [(event.get_subject(), event.get_data()["policy"]) for event in violation] == [
        ("namespaces/shop/pods/good", "pod-needs-requests")]
    (policies / "python_rules.py").unlink()  # a reload: audited again at once
    resolved = wait_for(lambda: receiver.events("dev.webhook.audit.resolved"), timeout=60, what="resolved")
    assert sorted((event.get_data()["object"]["name"], event.get_data()["reason"]) for event in resolved) == [
        ("bad", "policy-removed"), ("good", "policy-removed")]
    with httpx.Client(base_url=server.url, verify=client_context(server.ca_file()), timeout=10) as client:
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
    assert "webhook_audit_leader 1.0" in metrics
    assert 'webhook_audit_passes_total{result="complete"}' in metrics
    assert lease(api)["holderIdentity"]


def test_serve_refuses_an_audit_without_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from webhook.cli import main

    assert main(["serve", "--audit", "--state-dir", str(tmp_path / "state")]) == 2
    assert "--audit needs the cluster: give --kubeconfig, --kube-context or --in-cluster" in capsys.readouterr().err
