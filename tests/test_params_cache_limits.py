"""The ConfigMap cache for params (webhook.cluster) against the fake API server (tests/fake_apiserver.py) with
the real `kubernetes` client: only what the bindings' paramRefs can pick is listed and watched, the watches
follow policy reloads, and the cached bytes stay under `--cluster-params-max-mb`, past which the bindings that
need what was left out fault with a message that says so (issue 15, finding 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import ServerProcess, review, wait_for
from webhook.cluster import LiveClusterState, api_client_for
from webhook.metrics import Metrics
from webhook.policies.cel import make_engine
from webhook.policies.compiled import PolicySet
from webhook.policies.loader import load_policy_set
from webhook.policies.params import Resolution

QUOTA = {"example.com/params": "quota"}
MIB = 1024 * 1024



@pytest.fixture
def live(api: FakeAPIServer, tmp_path: Path) -> Iterator[Callable[..., LiveClusterState]]:
    made: list[LiveClusterState] = []

    def make(**options: Any) -> LiveClusterState:
        state = LiveClusterState(api_client_for(kubeconfig=api.kubeconfig(tmp_path)), config_maps=True,
                                 backoff_seconds=(0.02, 0.2), **options)
        made.append(state)
        return state

    yield make
    for state in made:
        state.stop()


def config_map(name: str, namespace: str, *, data: dict[str, str] | None = None,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    return {"metadata": metadata, "data": data or {"maxReplicas": "3"}}


def large(name: str, namespace: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A ConfigMap of 1 MiB of data, as large as the API server allows."""
    return config_map(name, namespace, labels=labels, data={"blob": "x" * (MIB - 64)})


def write_policies(directory: Path, param_refs: dict[str, dict[str, Any]], *, failure_policy: str = "Fail") -> Path:
    """A ValidatingAdmissionPolicy with paramKind v1/ConfigMap, and a binding (named by key) per paramRef."""
    directory.mkdir(exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    documents: list[dict[str, Any]] = [{
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "max-replicas"},
        "spec": {"failurePolicy": failure_policy, "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                         "operations": ["CREATE", "UPDATE"],
                                                         "resources": ["deployments"]}]},
                 "validations": [{"expression": "object.spec.replicas <= int(params.data.maxReplicas)",
                                  "messageExpression": "'at most ' + params.data.maxReplicas + ' replicas'"}]}}]
    for name, param_ref in param_refs.items():
        documents.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                          "metadata": {"name": name},
                          "spec": {"policyName": "max-replicas", "validationActions": ["Deny"],
                                   "paramRef": {**param_ref, "parameterNotFoundAction": "Deny"}}})
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(documents))
    return directory


def load(directory: Path) -> PolicySet:
    return load_policy_set(directory, engine=make_engine("builtin"))


def resolve(state: LiveClusterState, policy_set: PolicySet, binding: str, namespace: str) -> Resolution:
    """What the binding's paramRef gives a request in `namespace`, through the live state."""
    overlay = state.with_params(policy_set)
    policy = next(policy for policy in overlay.policies if policy.binding == binding)
    return overlay.params.resolve(policy.param_kind, policy.param_ref, request_namespace=namespace)


def picked(resolution: Resolution) -> list[str]:
    assert resolution.fault is None, resolution.fault
    return [f"{item.namespace}/{item.name}" for item in resolution.objects]


def metric(rendered: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in rendered.splitlines() if line.startswith(f"{name} "))


def relisted(state: LiveClusterState, count: int) -> bool:
    """Whether the params caches have relisted `count` times after a 410 (FakeAPIServer.expire)."""
    metrics = Metrics()
    metrics.add_collector(state)
    return metric(metrics.render().decode(), 'webhook_cluster_lists_total{kind="ConfigMap",reason="expired"}') == count


def queries(api: FakeAPIServer) -> set[tuple[str, str, str, str]]:
    """What was asked of the configmaps collection: (list or watch, namespace, fieldSelector, labelSelector)."""
    return {("watch" if request["watch"] else "list", request["namespace"], request["fieldSelector"],
             request["labelSelector"]) for request in api.core_requests("configmaps")}


REFS: dict[str, dict[str, Any]] = {
    "by-name-in-a-namespace": {"name": "limits", "namespace": "policy-params"},
    "by-name-in-the-request-namespace": {"name": "replica-limits"},
    "by-labels-in-the-request-namespace": {"selector": {"matchLabels": QUOTA}},
    "by-expression-in-a-namespace": {"namespace": "policy-params", "selector": {
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["silver", "gold"]}]}},
}
NARROWED = {("policy-params", "metadata.name=limits", ""), ("", "metadata.name=replica-limits", ""),
            ("", "", "example.com/params=quota"), ("policy-params", "", "tier in (gold,silver)")}


def test_a_tenants_configmaps_that_no_binding_refers_to_are_never_listed(
        api: FakeAPIServer, live: Callable[..., LiveClusterState], tmp_path: Path) -> None:
    api.put("configmaps", config_map("limits", "policy-params"))
    api.put("configmaps", config_map("tiers", "policy-params", labels={"tier": "gold"}))
    api.put("configmaps", config_map("replica-limits", "team-a"))
    api.put("configmaps", config_map("quota", "team-a", labels=QUOTA))
    for index in range(16):  # 16 MiB in a tenant's namespace: other names, other labels
        api.put("configmaps", large(f"junk-{index}", "tenant", labels={"example.com/params": "junk"}))
    policy_set = load(write_policies(tmp_path / "policies", REFS))
    state = live()
    state.with_params(policy_set)  # what the server does with the set it serves
    state.start()
    wait_for(lambda: state.synced, what="synced")
    wait_for(lambda: resolve(state, policy_set, "by-labels-in-the-request-namespace", "team-a").fault is None,
             what="params lookups answered")

    assert picked(resolve(state, policy_set, "by-name-in-a-namespace", "team-a")) == ["policy-params/limits"]
    assert picked(resolve(state, policy_set, "by-name-in-the-request-namespace", "team-a")) == \
        ["team-a/replica-limits"]
    assert picked(resolve(state, policy_set, "by-labels-in-the-request-namespace", "team-a")) == ["team-a/quota"]
    assert picked(resolve(state, policy_set, "by-expression-in-a-namespace", "team-a")) == ["policy-params/tiers"]
    assert resolve(state, policy_set, "by-name-in-the-request-namespace", "tenant").fault == \
        "no params found for policy binding with `Deny` parameterNotFoundAction"
    # One list and one watch per paramRef, each as narrow as the API allows; never all ConfigMaps.
    wait_for(lambda: len(queries(api)) == 8, what="the watches")
    assert queries(api) == {(verb, *query) for verb in ("list", "watch") for query in NARROWED}
    assert 0 < state.param_bytes < 4 * 2048  # four small objects, not 16 MiB

    # More of the tenant's large ConfigMaps while the watches are open: no event reaches the cache.
    for index in range(16, 24):
        api.put("configmaps", large(f"junk-{index}", "tenant"))
    api.put("configmaps", config_map("replica-limits", "team-a", data={"maxReplicas": "9"}))  # comes after them
    wait_for(lambda: resolve(state, policy_set, "by-name-in-the-request-namespace", "team-a").objects[0]
             .value["data"] == {"maxReplicas": "9"}, what="the change after the tenant's")
    assert 0 < state.param_bytes < 4 * 2048
    metrics = Metrics()
    metrics.add_collector(state)
    rendered = metrics.render().decode()
    assert 'webhook_cluster_objects{kind="ConfigMap"} 4.0' in rendered
    assert "webhook_cluster_params_watches 4.0" in rendered
    assert metric(rendered, "webhook_cluster_params_max_bytes") == 64 * MIB  # the default
    counted = state.param_bytes
    api.expire()  # a relist of every paramRef: the same objects, counted once
    wait_for(lambda: relisted(state, 4), what="the relists")
    assert state.param_bytes == counted


def test_the_watches_follow_a_policy_reload(api: FakeAPIServer, live: Callable[..., LiveClusterState],
                                           tmp_path: Path) -> None:
    api.put("configmaps", config_map("limits", "policy-params"))
    api.put("configmaps", config_map("replica-limits", "team-a"))
    first = load(write_policies(tmp_path / "policies", {"old": {"name": "limits", "namespace": "policy-params"}}))
    state = live()
    first_overlay = state.with_params(first)
    state.start()
    wait_for(lambda: resolve(state, first, "old", "team-a").fault is None, what="the first set's params")
    assert queries(api) >= {("list", "policy-params", "metadata.name=limits", "")}

    second = load(write_policies(tmp_path / "policies", {"new": {"name": "replica-limits"}}))
    wait_for(lambda: resolve(state, second, "new", "team-a").fault is None, what="the reloaded set's params")
    assert picked(resolve(state, second, "new", "team-a")) == ["team-a/replica-limits"]
    assert queries(api) >= {("list", "", "metadata.name=replica-limits", "")}
    # The first set's watch is stopped and its bytes are given back: only the new object is counted.
    wait_for(lambda: state.param_bytes < 2048, what="the old cache released")
    metrics = Metrics()
    metrics.add_collector(state)
    assert metric(metrics.render().decode(), "webhook_cluster_params_watches") == 1
    old = next(policy for policy in first_overlay.policies if policy.binding == "old")
    # A request that started with the old set: its paramRef is no longer watched, a fault (not a stale answer).
    stale = first_overlay.params.resolve(old.param_kind, old.param_ref, request_namespace="team-a")
    assert stale.fault == ("params from the cluster: the ConfigMaps for paramRef (namespace policy-params, name "
                           "limits) are not watched: the policy set that refers to them is not followed yet")


def test_a_server_watches_the_params_of_each_policy_set_as_it_loads_it(
        api: FakeAPIServer, tmp_path: Path, server_processes: Callable[..., ServerProcess]) -> None:
    """At start (readiness waits for the first list) and at each reload, before any review."""
    api.put("configmaps", config_map("limits", "policy-params"))
    api.put("configmaps", config_map("replica-limits", "team-a"))
    policies = write_policies(tmp_path / "policies", {"old": {"name": "limits", "namespace": "policy-params"}})
    server = server_processes("--kubeconfig", str(api.kubeconfig(tmp_path)), "--policies", str(policies))
    with server.client() as client:
        def ready() -> bool:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited:\n{server.output()}")
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60, what="ready (a loaded machine starts slowly)")
        assert ("list", "policy-params", "metadata.name=limits", "") in queries(api)
        write_policies(policies, {"new": {"name": "replica-limits"}})
        wait_for(lambda: ("list", "", "metadata.name=replica-limits", "") in queries(api),
                 what="the reloaded set's paramRef listed")
        assert metric(client.get("/metrics").text, "webhook_cluster_params_watches") == 1


def test_the_byte_bound_holds_for_configmaps_that_bindings_refer_to(
        api: FakeAPIServer, live: Callable[..., LiveClusterState], tmp_path: Path) -> None:
    bound = 3 * MIB
    api.put("configmaps", config_map("quota", "team-b", labels=QUOTA))
    for index in range(5):  # a tenant makes ConfigMaps that the selector picks: 5 MiB, past the bound
        api.put("configmaps", large(f"quota-{index}", "tenant-a", labels=QUOTA))
    policy_set = load(write_policies(tmp_path / "policies", {"quota": {"selector": {"matchLabels": QUOTA}}}))
    state = live(max_param_bytes=bound)
    state.with_params(policy_set)
    state.start()
    wait_for(lambda: state.synced, what="synced")  # synced and ready: the bound is not a reason to wait
    wait_for(lambda: resolve(state, policy_set, "quota", "team-b").fault is None, what="params listed")

    assert state.param_bytes <= bound
    assert picked(resolve(state, policy_set, "quota", "team-b")) == ["team-b/quota"]  # listed first: complete
    incomplete = ("params from the cluster: the ConfigMaps for paramRef (all namespaces, labels "
                  "example.com/params=quota) of namespace '{}' are incomplete: the bound of 3 MiB of cached params "
                  "data (--cluster-params-max-mb) is reached")
    assert resolve(state, policy_set, "quota", "tenant-a").fault == incomplete.format("tenant-a")
    assert "ConfigMaps for paramRef (all namespaces, labels example.com/params=quota) are incomplete in " \
        "namespace(s) tenant-a: the bound of 3 MiB" in (state.problem or "")
    metrics = Metrics()
    metrics.add_collector(state)
    assert 'webhook_cluster_objects_dropped_total{kind="ConfigMap"} 3.0' in metrics.render().decode()
    # A relist with nothing changed keeps what it held (not a second copy next to the first): the same fit.
    counted = state.param_bytes
    assert counted > 2 * MIB > bound / 2
    api.expire()
    wait_for(lambda: relisted(state, 1), what="the relist")
    assert state.param_bytes == counted
    assert resolve(state, policy_set, "quota", "tenant-a").fault == incomplete.format("tenant-a")
    assert picked(resolve(state, policy_set, "quota", "team-b")) == ["team-b/quota"]

    # Watch events past the bound are left out too; the namespaces that lost one fault, the others do not.
    for index in range(3):
        api.put("configmaps", large(f"quota-{index}", "tenant-z", labels=QUOTA))
    wait_for(lambda: resolve(state, policy_set, "quota", "tenant-z").fault == incomplete.format("tenant-z"),
             what="tenant-z incomplete")
    assert state.param_bytes <= bound
    assert picked(resolve(state, policy_set, "quota", "team-b")) == ["team-b/quota"]

    # Room again (the tenants' objects deleted), and a relist: complete, and the bytes counted right.
    for namespace, count in (("tenant-a", 5), ("tenant-z", 3)):
        for index in range(count):
            api.delete("configmaps", f"quota-{index}", namespace)
    api.put("configmaps", config_map("quota", "tenant-a", labels=QUOTA))
    api.expire()
    wait_for(lambda: relisted(state, 2), what="the second relist")
    assert picked(resolve(state, policy_set, "quota", "tenant-a")) == ["tenant-a/quota"]
    assert resolve(state, policy_set, "quota", "tenant-z").fault == \
        "no params found for policy binding with `Deny` parameterNotFoundAction"
    assert state.problem is None
    assert 0 < state.param_bytes < 2 * 2048


def test_a_server_past_the_bound_stays_ready_and_faults_the_binding_that_lost_its_params(
        api: FakeAPIServer, tmp_path: Path, server_processes: Callable[..., ServerProcess]) -> None:
    for name in ("replica-limits", "other"):
        api.put("configmaps", config_map(name, "team-b", labels=QUOTA))
    for index in range(3):  # 3 MiB that the binding's selector picks, past a bound of 2 MiB
        api.put("configmaps", large(f"quota-{index}", "tenant-a", labels=QUOTA))
    for index in range(8):  # and 8 MiB that no binding refers to
        api.put("configmaps", large(f"junk-{index}", "tenant-a"))
    policies = write_policies(tmp_path / "policies", {"quota": {"selector": {"matchLabels": QUOTA}}})
    server = server_processes("--kubeconfig", str(api.kubeconfig(tmp_path)), "--policies", str(policies),
                              "--cluster-params-max-mb", "2")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 5}}
    kind = {"kind": ("apps", "v1", "Deployment"), "resource": ("apps", "v1", "deployments")}
    with server.client() as client:
        def ready() -> bool:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited:\n{server.output()}")
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60, what="ready (a loaded machine starts slowly)")

        def verdict(namespace: str) -> dict[str, Any]:
            obj = {**deployment, "metadata": {"name": "d", "namespace": namespace}}
            reply = client.post("/validate", json=review(obj, namespace=namespace, **kind))
            assert reply.status_code == 200, reply.text
            response: dict[str, Any] = reply.json()["response"]
            return response

        denied = wait_for(lambda: "incomplete" in (answer := verdict("tenant-a")).get("status", {}).get(
            "message", "") and answer, what="the fault past the bound")
        assert denied["allowed"] is False  # failurePolicy Fail
        assert "failed to configure binding: params from the cluster: the ConfigMaps for paramRef (all namespaces, " \
            "labels example.com/params=quota) of namespace 'tenant-a' are incomplete: the bound of 2 MiB of cached " \
            "params data (--cluster-params-max-mb) is reached" in denied["status"]["message"]
        assert "at most 3 replicas" in verdict("team-b")["status"]["message"]  # complete: evaluated
        readiness = client.get("/readyz")
        assert readiness.status_code == 200
        assert "are incomplete in namespace(s) tenant-a: the bound of 2 MiB" in readiness.json()["cluster"]
        metrics = client.get("/metrics").text
        assert 0 < metric(metrics, "webhook_cluster_params_bytes") <= 2 * MIB
        assert not any(request["fieldSelector"] == request["labelSelector"] == ""
                       for request in api.core_requests("configmaps"))  # never every ConfigMap
    assert "cluster state: the ConfigMaps for paramRef (all namespaces, labels example.com/params=quota): the " \
        "bound of 2 MiB" in server.output()
