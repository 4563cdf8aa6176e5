"""The live cluster state (webhook.cluster) with the real `kubernetes` client against a small real API server
(tests/fake_apiserver.py): list and watch, trimming, 410 relists, outages, the Pod cap, stop; then a real
`webhook serve` process watching it, whose verdicts follow the cluster."""

from __future__ import annotations

import copy
import gc
import json
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import DATA, ServerProcess, client_context, pod, review, wait_for
from webhook.cli import main
from webhook.cluster import LiveClusterState, _trim_pod, api_client_for
from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.policies.cel import make_engine
from webhook.policies.loader import load_policy_set
from webhook.reflector import Reflector, backoff
from webhook.state import ClusterUnavailable

CLUSTER_POLICIES = DATA / "cluster"


def namespace(name: str, *, labels: dict[str, str] | None = None,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def running_pod(name: str, namespace: str, *, cpu: str = "100m", phase: str = "Running",
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Pod as the API server returns it: much more than the cache keeps."""
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": "web"},
                     "annotations": {"note": "x" * 200}, "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}],
                     "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {}}}]},
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}],
                            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "initContainers": [{"name": "setup", "image": "busybox", "restartPolicy": "Always",
                                "resources": {"requests": {"cpu": "10m"}}}],
            "overhead": {"cpu": "5m"},
            "volumes": [{"name": "data", "emptyDir": {}}], "nodeName": "node-1",
        },
        "status": {"phase": phase, "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def names(pods: Any) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods)


def raises_unavailable(call: Callable[[], Any]) -> str | None:
    try:
        call()
    except ClusterUnavailable as error:
        return str(error)
    return None


def cluster_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("webhook-cluster-")]



@pytest.fixture
def live(api: FakeAPIServer, tmp_path: Path) -> Iterator[Callable[..., LiveClusterState]]:
    """Make (not start) LiveClusterStates on the fake API server, with short backoff; all stopped at the end."""
    made: list[LiveClusterState] = []

    def make(**options: Any) -> LiveClusterState:
        options.setdefault("backoff_seconds", (0.02, 0.2))
        state = LiveClusterState(api_client_for(kubeconfig=api.kubeconfig(tmp_path)), **options)
        made.append(state)
        return state

    yield make
    for state in made:
        state.stop()


def synced(state: LiveClusterState, api: FakeAPIServer, *also: str) -> LiveClusterState:
    """Start `state` and wait until it has synced and watches namespaces, pods and `also`."""
    state.start()
    wait_for(lambda: state.synced, what="cluster state synced")
    wait_for(lambda: api.watching("namespaces", "pods", *also), what="watches open")
    return state


def test_lookups_raise_until_the_first_list_completes(api: FakeAPIServer, live: Callable[..., LiveClusterState]
                                                      ) -> None:
    api.put("namespaces", namespace("team-a"))
    api.fail(500)
    state = live()
    assert raises_unavailable(lambda: state.namespace("team-a")) == "the cluster's namespaces are not synced yet"
    state.start()
    refused = wait_for(lambda: "500" in (error := raises_unavailable(lambda: state.pods("team-a")) or "") and error,
                       what="a failed list of pods")
    assert refused == "the cluster's pods are not synced yet (last error: pods: 500 Internal Server Error)"
    assert not state.synced
    assert not state.healthy
    assert (state.problem or "").startswith("not synced: waiting for the first list of ")
    api.fail(None)
    wait_for(lambda: state.synced and state.healthy, what="synced after the API answers")
    assert state.namespace("team-a") is not None
    assert state.pods("team-a") == ()
    assert state.problem is None


def test_synced_state_is_trimmed_and_leaves_finished_pods_out(api: FakeAPIServer,
                                                              live: Callable[..., LiveClusterState]) -> None:
    api.put("namespaces", namespace("team-a", labels={"tier": "gold"}, annotations={
        "example.com/cpu-budget": "2", "kubectl.kubernetes.io/last-applied-configuration": "{...}"}))
    api.put("namespaces", namespace("team-b"))
    for index in range(5):
        api.put("pods", running_pod(f"web-{index}", "team-a"))
    api.put("pods", running_pod("done", "team-a", phase="Succeeded"))
    api.put("pods", running_pod("crashed", "team-a", phase="Failed"))
    api.put("pods", running_pod("starting", "team-b", phase="Pending"))
    state = synced(live(page_size=2), api)  # lists in pages
    assert api.list_requests("pods") == 4

    assert state.namespace("team-a") == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "team-a", "labels": {"tier": "gold"}, "annotations": {"example.com/cpu-budget": "2"}}}
    assert state.namespace("nowhere") is None
    assert names(state.pods("team-a")) == [f"web-{index}" for index in range(5)]
    assert names(state.pods("team-b")) == ["starting"]
    assert state.pods("nowhere") == ()
    web = next(p for p in state.pods("team-a") if p["metadata"]["name"] == "web-0")
    assert json.loads(json.dumps(web)) == {  # lists are kept as tuples
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "team-a", "uid": "uid-pods-team-a-web-0", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                              "limits": {"memory": "128Mi"}}}],
                 "initContainers": [{"name": "setup", "resources": {"requests": {"cpu": "10m"}},
                                     "restartPolicy": "Always"}],
                 "overhead": {"cpu": "5m"}},
        "status": {"phase": "Running"}}

    # Cached objects are shared by every request: they refuse changes; copies are plain and mutable.
    with pytest.raises(TypeError, match="read-only"):
        web["metadata"]["labels"]["app"] = "changed"  # type: ignore[index]
    with pytest.raises(TypeError):
        web["spec"]["containers"][0]["resources"].pop("requests")
    mutable = copy.deepcopy(web)
    mutable["metadata"]["labels"]["app"] = "changed"
    assert web["metadata"]["labels"]["app"] == "web"
    # The namespace is a fresh copy each time (it becomes the request's namespaceObject).
    found = state.namespace("team-a")
    assert found is not None
    found["metadata"]["labels"]["tier"] = "changed"
    assert state.namespace("team-a")["metadata"]["labels"]["tier"] == "gold"  # type: ignore[index]


def test_replicas_share_what_is_equal_and_the_cache_stays_small(api: FakeAPIServer,
                                                               live: Callable[..., LiveClusterState]) -> None:
    api.put("pods", running_pod("web-a", "team-a", cpu="250m"))
    api.put("pods", running_pod("web-b", "team-a", cpu="250m"))
    api.put("pods", running_pod("other", "team-a", cpu="999m", labels={"app": "other"}))
    state = synced(live(), api)
    a, b, other = sorted(state.pods("team-a"), key=lambda p: p["metadata"]["name"])[::-1]
    assert a["spec"] is b["spec"]
    assert a["metadata"]["labels"] is b["metadata"]["labels"]
    assert a["status"] is b["status"] is other["status"]
    assert other["spec"] is not a["spec"]
    assert other["metadata"]["labels"] is not a["metadata"]["labels"]

    # Measured: 2,000 replicas of 20 workloads in 10 namespaces (the JSON of each is over 1 KiB).
    pods = [orjson.dumps(running_pod(f"web-{index}", f"team-{index % 10}", cpu=f"{index % 20}m",
                                     labels={"app": f"app-{index % 20}", "pod-template-hash": "5d8f7c9b6"}))
            for index in range(2000)]
    cache = Reflector(state, "pods", "Pod", lambda **_: None, _trim_pod)
    gc.collect()
    tracemalloc.start()
    try:
        for raw in pods:
            cache._put(cache.store, orjson.loads(raw))
        gc.collect()
        per_pod = tracemalloc.get_traced_memory()[0] / len(pods)
    finally:
        tracemalloc.stop()
    assert cache.store.count == 2000
    assert per_pod < 1000  # about 500 bytes


def test_watch_events_are_reflected(api: FakeAPIServer, live: Callable[..., LiveClusterState]) -> None:
    api.put("namespaces", namespace("team-a", labels={"tier": "gold"}))
    api.put("pods", running_pod("web-0", "team-a"))
    api.put("pods", running_pod("web-1", "team-a"))
    state = synced(live(), api)

    api.put("pods", running_pod("web-2", "team-a", cpu="300m"))  # ADDED
    api.put("pods", running_pod("web-0", "team-a", cpu="700m"))  # MODIFIED
    api.delete("pods", "web-1", "team-a")  # DELETED
    api.put("namespaces", namespace("team-a", labels={"tier": "silver"}))
    api.put("namespaces", namespace("team-c"))

    def cpu_requests() -> dict[str, str]:
        return {p["metadata"]["name"]: p["spec"]["containers"][0]["resources"]["requests"]["cpu"]
                for p in state.pods("team-a")}

    wait_for(lambda: cpu_requests() == {"web-0": "700m", "web-2": "300m"}, what="pod events")
    wait_for(lambda: (state.namespace("team-a") or {})["metadata"]["labels"] == {"tier": "silver"},
             what="namespace MODIFIED")
    wait_for(lambda: state.namespace("team-c") is not None, what="namespace ADDED")
    api.put("pods", running_pod("web-2", "team-a", phase="Succeeded"))  # finished: no longer counts
    wait_for(lambda: names(state.pods("team-a")) == ["web-0"], what="a finished pod dropped")
    api.delete("namespaces", "team-c")
    wait_for(lambda: state.namespace("team-c") is None, what="namespace DELETED")

    # A bookmark moves the watch's resourceVersion on without any Pod change: the next watch starts there.
    api.put("namespaces", namespace("team-d"))
    api.bookmark()
    version = api.core["namespaces"][("", "team-d")]["metadata"]["resourceVersion"]
    wait_for(lambda: state.namespace("team-d") is not None, what="namespace ADDED")
    api.end_watches()
    wait_for(lambda: any(path.startswith("/api/v1/pods?") and "watch=true" in path
                         and f"resourceVersion={version}&" in path for _, path, _ in api.requests),
             what="the pods watch resumed from the bookmark")
    assert api.list_requests("pods") == 1  # watches resumed: no relist


def test_410_gone_relists_and_the_state_stays_right(api: FakeAPIServer,
                                                    live: Callable[..., LiveClusterState]) -> None:
    api.put("namespaces", namespace("team-a"))
    api.put("pods", running_pod("web-0", "team-a"))
    state = synced(live(), api)
    metrics = Metrics()
    metrics.add_collector(state)

    api.expire()  # open watches get an ERROR event with a 410 Status
    wait_for(lambda: api.list_requests("pods") == 2 and api.list_requests("namespaces") == 2, what="relists")
    api.put("pods", running_pod("web-1", "team-a"))
    wait_for(lambda: names(state.pods("team-a")) == ["web-0", "web-1"], what="watching after the relist")
    rendered = metrics.render().decode()
    assert 'webhook_cluster_lists_total{kind="Pod",reason="expired"} 1.0' in rendered
    assert 'webhook_cluster_lists_total{kind="Pod",reason="initial"} 1.0' in rendered
    assert state.healthy


def test_api_server_lost_then_back(api: FakeAPIServer, live: Callable[..., LiveClusterState]) -> None:
    api.put("namespaces", namespace("team-a", labels={"tier": "gold"}))
    api.put("pods", running_pod("web-0", "team-a"))
    api.put("pods", running_pod("web-1", "team-a"))
    state = synced(live(stale_after_seconds=0.2), api)
    metrics = Metrics()
    metrics.add_collector(state)

    api.go_down()  # connections reset, then refused
    wait_for(lambda: not state.healthy, what="watch failures noticed")
    assert state.synced  # stays synced: readiness stays
    assert (state.problem or "").startswith("unhealthy: failing (")
    stale = wait_for(lambda: raises_unavailable(lambda: state.pods("team-a")), what="stale lookups")
    assert stale.startswith("the pods watch has been failing for ")
    wait_for(lambda: raises_unavailable(lambda: state.namespace("team-a")), what="stale namespace lookups")
    wait_for(lambda: "Connection refused" in (state.last_error or ""), what="connections refused")
    assert 'webhook_cluster_healthy 0.0' in metrics.render().decode()

    # Changed while the server was away; compacted too, so watching on from the old version gets 410.
    api.delete("pods", "web-0", "team-a")
    api.put("pods", running_pod("web-2", "team-a"))
    api.put("namespaces", namespace("team-a", labels={"tier": "silver"}))
    api.expire()
    api.come_back()
    wait_for(lambda: state.healthy, what="recovered")
    wait_for(lambda: names(state.pods("team-a")) == ["web-1", "web-2"], what="the state caught up")
    assert (state.namespace("team-a") or {})["metadata"]["labels"] == {"tier": "silver"}
    assert state.problem is None
    rendered = metrics.render().decode()
    assert 'webhook_cluster_healthy 1.0' in rendered
    errors = next(line for line in rendered.splitlines()
                  if line.startswith('webhook_cluster_watch_errors_total{kind="Pod"}'))
    assert float(errors.split()[-1]) >= 1


def test_server_errors_are_retried_and_reported(api: FakeAPIServer, live: Callable[..., LiveClusterState]) -> None:
    api.put("pods", running_pod("web-0", "team-a"))
    state = synced(live(), api)
    api.fail(500)  # open watches end; every new request gets 500
    wait_for(lambda: not state.healthy, what="500 noticed")
    problem = state.problem or ""
    assert problem.startswith("unhealthy: failing (")
    assert problem.endswith(": 500 Internal Server Error")
    assert names(state.pods("team-a")) == ["web-0"]  # not stale yet: the cache still answers
    api.put("pods", running_pod("web-1", "team-a"))
    api.fail(None)
    wait_for(lambda: state.healthy and names(state.pods("team-a")) == ["web-0", "web-1"], what="recovered")


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    for attempt in range(12):
        delay = min(30.0, 0.5 * 2 ** attempt)
        samples = [backoff(attempt, 0.5, 30.0) for _ in range(50)]
        assert all(delay / 2 <= sample <= delay for sample in samples)
        assert len(set(samples)) > 1  # jittered
    assert backoff(10_000, 0.5, 30.0) <= 30.0


def test_pods_past_the_cap_make_their_namespace_unavailable(api: FakeAPIServer,
                                                            live: Callable[..., LiveClusterState]) -> None:
    api.put("pods", running_pod("a-0", "team-a"))
    api.put("pods", running_pod("a-1", "team-a"))
    api.put("pods", running_pod("b-0", "team-b"))
    state = synced(live(max_pods=2), api)
    metrics = Metrics()
    metrics.add_collector(state)
    assert names(state.pods("team-a")) == ["a-0", "a-1"]
    assert "incomplete" in (raises_unavailable(lambda: state.pods("team-b")) or "")
    rendered = metrics.render().decode()
    assert 'webhook_cluster_objects{kind="Pod"} 2.0' in rendered
    assert 'webhook_cluster_capped_namespaces{kind="Pod"} 1.0' in rendered
    assert 'webhook_cluster_objects_dropped_total{kind="Pod"} 1.0' in rendered

    api.put("pods", running_pod("c-0", "team-c"))  # a watch event past the cap: left out too
    wait_for(lambda: raises_unavailable(lambda: state.pods("team-c")), what="team-c incomplete")
    api.delete("pods", "a-0", "team-a")
    api.delete("pods", "c-0", "team-c")
    api.expire()  # a relist finds room again
    wait_for(lambda: raises_unavailable(lambda: state.pods("team-b")) is None, what="complete after the relist")
    assert names(state.pods("team-b")) == ["b-0"]
    assert names(state.pods("team-a")) == ["a-1"]


def test_stop_ends_the_threads(api: FakeAPIServer, live: Callable[..., LiveClusterState]) -> None:
    state = live(config_maps=True)
    state.follow(load_policy_set(CLUSTER_POLICIES, engine=make_engine("builtin")))  # one paramRef: one watch
    synced(state, api, "configmaps")
    other = live()
    api.fail(500)
    other.start()  # one state in its backoff wait, one with open watches... then the API fails
    wait_for(lambda: other.last_error is not None, what="a failure")
    assert len(cluster_threads()) == 5
    state.stop()
    other.stop()
    assert cluster_threads() == []


def test_settings_refuse_an_unusable_cluster_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="not both"):
        Settings(in_cluster=True, kube_context="x")
    with pytest.raises(ValueError, match="is not a file"):
        Settings(kubeconfig=tmp_path / "missing")
    assert not Settings().cluster_configured
    assert Settings(in_cluster=True).cluster_configured
    assert main(["serve", "--kubeconfig", str(tmp_path / "missing"), "--cert-dir", str(tmp_path)]) == 2
    assert "is not a file" in capsys.readouterr().err


# --- a real `webhook serve` process watching the fake cluster -------------------------------------------------


def cpu_pod(name: str, namespace: str, cpu: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return pod(name, namespace=namespace, labels=labels,
               containers=[{"name": "app", "image": "nginx:1.27", "resources": {"requests": {"cpu": cpu}}}])


def test_server_follows_the_live_cluster(api: FakeAPIServer, tmp_path: Path,
                                         server_processes: Callable[..., ServerProcess]) -> None:
    api.put("namespaces", namespace("team-a", annotations={"example.com/cpu-budget": "1"}))
    api.put("namespaces", namespace("team-b"))
    api.put("pods", running_pod("web-0", "team-a", cpu="400m"))
    api.put("pods", running_pod("web-1", "team-a", cpu="0.2"))
    api.put("pods", running_pod("old", "team-a", cpu="2", phase="Succeeded"))  # does not count
    api.put("configmaps", {"metadata": {"name": "replica-limits", "namespace": "team-b"}, "data": {"maxReplicas": "3"}})
    api.fail(500)  # not synced yet
    server = server_processes("--kubeconfig", str(api.kubeconfig(tmp_path)), "--policies", str(CLUSTER_POLICIES),
                              "--cluster-stale-after-seconds", "0.5")
    with httpx.Client(base_url=server.url, verify=client_context(server.ca_file()), timeout=10) as client:
        def readiness() -> httpx.Response | None:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited:\n{server.output()}")
            try:
                return client.get("/readyz")
            except httpx.TransportError:
                return None

        waiting = wait_for(lambda: (reply := readiness()) is not None and "last error" in reply.text and reply,
                           what="readiness with the cluster's error")
        assert waiting.status_code == 503
        assert waiting.json()["ready"] is False
        assert waiting.json()["cluster"].startswith("not synced: waiting for the first list of ")
        api.fail(None)
        wait_for(lambda: (reply := readiness()) is not None and reply.status_code == 200, timeout=60,
                 what="ready once synced")
        assert readiness().json()["cluster"] == "synced"  # type: ignore[union-attr]

        def verdict(obj: dict[str, Any], **arguments: Any) -> dict[str, Any]:
            reply = client.post("/validate", json=review(obj, **arguments))
            assert reply.status_code == 200, reply.text
            response: dict[str, Any] = reply.json()["response"]
            return response

        # (a) the Python budget policy: 600m used of 1000m in team-a
        assert verdict(cpu_pod("small", "team-a", "300m"))["allowed"] is True
        denied = verdict(cpu_pod("big", "team-a", "500m"))
        assert denied["allowed"] is False
        assert "CPU budget of 1000m: 600m is requested already, this Pod asks for 500m more" in \
            denied["status"]["message"]
        api.put("pods", running_pod("web-2", "team-a", cpu="200m"))  # now 800m
        wait_for(lambda: not verdict(cpu_pod("small", "team-a", "300m"))["allowed"], what="budget after a new pod")
        api.put("namespaces", namespace("team-a", annotations={"example.com/cpu-budget": "2"}))
        wait_for(lambda: verdict(cpu_pod("big", "team-a", "500m"))["allowed"], what="a bigger budget")

        # (b) the CEL policy selects namespaces by a label only the cluster has
        untagged = cpu_pod("web", "team-b", "10m")
        assert verdict(untagged)["allowed"] is True
        api.put("namespaces", namespace("team-b", labels={"example.com/restricted": "true"}))
        wait_for(lambda: not verdict(untagged)["allowed"], what="the label from the cluster")
        assert "Pods in restricted namespace team-b need a team label" in verdict(untagged)["status"]["message"]
        assert verdict(cpu_pod("web", "team-b", "10m", labels={"team": "x"}))["allowed"] is True

        # params from a live ConfigMap (the binding selects namespaces labelled example.com/limits=true)
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "team-b"},
                      "spec": {"replicas": 5}}
        kind = {"kind": ("apps", "v1", "Deployment"), "resource": ("apps", "v1", "deployments")}
        assert verdict(deployment, **kind)["allowed"] is True
        api.put("namespaces", namespace("team-b", labels={"example.com/limits": "true"}))
        wait_for(lambda: not verdict(deployment, **kind)["allowed"], what="bound by the namespace label")
        assert "at most 3 replicas" in verdict(deployment, **kind)["status"]["message"]
        api.put("configmaps", {"metadata": {"name": "replica-limits", "namespace": "team-b"},
                               "data": {"maxReplicas": "10"}})
        wait_for(lambda: verdict(deployment, **kind)["allowed"], what="the ConfigMap changed")

        metrics = client.get("/metrics").text
        assert "webhook_cluster_synced 1.0" in metrics
        assert 'webhook_cluster_objects{kind="Pod"} 3.0' in metrics
        assert 'webhook_cluster_objects{kind="ConfigMap"} 1.0' in metrics

        # The API server lost: still ready (reported), lookups fail after the stale time: a fault under Fail.
        api.go_down()
        wait_for(lambda: "unhealthy" in readiness().text, what="unhealthy reported")  # type: ignore[union-attr]
        assert readiness().status_code == 200  # type: ignore[union-attr]
        denied = wait_for(lambda: (answer := verdict(cpu_pod("small", "team-a", "1m")))["allowed"] is False and answer,
                          what="a fault once stale")
        assert "policy fault" in denied["status"]["message"]
        assert "ClusterUnavailable" in denied["status"]["message"]
        # A namespaceSelector cannot be decided on made-up labels: that policy is a fault too (under Fail).
        unknown = verdict(untagged)
        assert unknown["allowed"] is False
        assert "restricted-needs-team: policy fault: the labels of namespace team-b are unknown" in \
            unknown["status"]["message"]
        api.come_back()
        wait_for(lambda: verdict(cpu_pod("small", "team-a", "1m"))["allowed"], timeout=60, what="back")
