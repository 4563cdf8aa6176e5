"""Adversarial reviews against a real `webhook serve` with the shipped policies and every limit switched on.

Hypothesis builds Pods and Deployments that the shipped library judges, and puts something hostile in a field those
policies read (images, resource quantities, the GPU limit, labels and annotations, node selectors, tolerations,
affinity terms, names, namespaces): strings up to half a megabyte, near-limit bodies (just under and just over
`--max-body-bytes`), many containers, long lists, odd types. Each review goes to /validate or /mutate.

Asserted for every reply: an AdmissionReview for the request's uid (200), or a JSON Status with a 4xx code, or the
memory guard's 503 (a JSON Status with Retry-After); never another 5xx, never a hang (a 30 s client timeout, far
past the 1 s evaluation deadline); after each one a normal review is still answered allowed. At the end the
server's resident memory is under its hard limit and the process never restarted.

CI runs WEBHOOK_ADVERSARIAL_EXAMPLES examples (default 40, the same ones each run); set it higher for a long run:
`WEBHOOK_ADVERSARIAL_EXAMPLES=2000 .venv/bin/pytest -q -s tests/test_adversarial.py`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    ServerProcess,
    client_context,
    deployment,
    deployment_review,
    pod,
    review,
    start_server_process,
)

EXAMPLES = int(os.environ.get("WEBHOOK_ADVERSARIAL_EXAMPLES", "40"))
SHIPPED = Path(__file__).resolve().parent.parent / "policies"
MAX_BODY = 2 * 1024 * 1024
HARD_LIMIT_OVER_IDLE_MB = 160  # the guard's hard limit: the idle server's RSS plus this
ADVERSARIAL = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                       derandomize="WEBHOOK_ADVERSARIAL_EXAMPLES" not in os.environ,
                       suppress_health_check=list(HealthCheck))
REPLIES: Counter[str] = Counter()

# Where the shipped policies read: (path from the object root, with "$c" for a container), per kind.
FIELDS = [
    ("image", ("$c", "image")),
    ("cpu request", ("$c", "resources", "requests", "cpu")),
    ("memory limit", ("$c", "resources", "limits", "memory")),
    ("gpu limit", ("$c", "resources", "limits", "nvidia.com/gpu")),
    ("container name", ("$c", "name")),
    ("labels", ("metadata", "labels")),
    ("annotations", ("metadata", "annotations")),
    ("name", ("metadata", "name")),
    ("node selector", ("$spec", "nodeSelector")),
    ("tolerations", ("$spec", "tolerations")),
    ("affinity", ("$spec", "affinity")),
    ("priority class", ("$spec", "priorityClassName")),
    ("node name", ("$spec", "nodeName")),
    ("volumes", ("$spec", "volumes")),
    ("replicas", ("spec", "replicas")),
    ("strategy", ("spec", "strategy")),
]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _big_text(size: int, kind: str) -> str:
    unit = {"digits": "9", "quantity": "9", "dots": "a.", "unicode": "é", "colons": "a:"}[kind]
    text = (unit * (size // len(unit) + 1))[:size]
    return text + ("Mi" if kind == "quantity" else "")


hostile_values = st.one_of(
    st.builds(_big_text, st.sampled_from([1_000, 65_536, 300_000, 600_000]),
              st.sampled_from(["digits", "quantity", "dots", "unicode", "colons"])),
    st.sampled_from([None, -1, 2**63, 1e308, True, [], {}, "", "1e999", "0x10", "-1", "NaN", "∞"]),
    st.builds(lambda n, v: [v] * n, st.sampled_from([1_000, 20_000]),
              st.sampled_from(["x", {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z"]}])),
    st.builds(lambda n: {f"k{i}": "v" * 64 for i in range(n)}, st.sampled_from([1_000, 10_000])),
)


def _place(obj: dict[str, Any], path: tuple[str, ...], value: Any, containers: int) -> None:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    targets: list[tuple[dict[str, Any], tuple[str, ...]]]
    if path[0] == "$c":
        targets = [(container, path[1:]) for container in spec["containers"][:containers]]
    elif path[0] == "$spec":
        targets = [(spec, path[1:])]
    else:
        targets = [(obj, path)]
    for node, rest in targets:
        for step in rest[:-1]:
            node = node.setdefault(step, {}) if isinstance(node.get(step), dict) or step not in node else node[step]
            if not isinstance(node, dict):
                return
        node[rest[-1]] = value


@st.composite
def adversarial_reviews(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["Pod", "Deployment"]))
    containers = draw(st.sampled_from([1, 3, 200]))
    images = tuple(f"registry.example.com/app{i}:1.{i}" for i in range(containers))
    namespace = draw(st.sampled_from(["default", "production", "kube-system", "x" * 63]))
    if kind == "Pod":
        obj = pod(namespace=namespace, images=images)
    else:
        obj = deployment(namespace=namespace)
        obj["spec"]["template"]["spec"]["containers"] = [{"name": f"c{i}", "image": image}
                                                        for i, image in enumerate(images)]
    for _ in range(draw(st.integers(1, 3))):
        _, path = draw(st.sampled_from(FIELDS))
        _place(obj, path, draw(hostile_values), draw(st.sampled_from([1, containers])))
    operation = draw(st.sampled_from(["CREATE", "UPDATE"]))
    old = obj if operation == "UPDATE" and draw(st.booleans()) else None
    body = review(obj, operation=operation, old=old) if kind == "Pod" else \
        deployment_review(obj, operation=operation, old=old)
    padding = draw(st.sampled_from([0, 0, 0, "under", "over"]))
    if padding:  # a body just under or just over the limit
        size = len(orjson.dumps(body))
        target = MAX_BODY - 512 if padding == "under" else MAX_BODY + 1
        if size < target:
            metadata = obj.setdefault("metadata", {})
            annotations = metadata.get("annotations")
            if not isinstance(annotations, dict):
                annotations = metadata["annotations"] = {}
            annotations["padding"] = "p" * (target - size - 20)
    return draw(st.sampled_from(["/validate", "/mutate"])), body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client, int]]:
    directory = tmp_path_factory.mktemp("adversarial")
    probe = start_server_process(directory / "probe", "--policies", str(SHIPPED), "--no-watch",
                                 "--memory-hard-limit-mb", "0")
    probe.wait_ready()
    idle_mb = _rss_kib(probe.process.pid) // 1024
    probe.stop()
    hard = idle_mb + HARD_LIMIT_OVER_IDLE_MB
    process = start_server_process(directory / "server", "--policies", str(SHIPPED), "--no-watch",
                                   "--max-body-bytes", str(MAX_BODY), "--evaluation-deadline-seconds", "1",
                                   "--memory-soft-limit-mb", str(idle_mb + 100), "--memory-hard-limit-mb", str(hard))
    process.wait_ready()
    client = httpx.Client(base_url=process.url, verify=client_context(process.ca_file()), timeout=30)
    try:
        yield process, client, hard
    finally:
        client.close()
        process.stop()
        print(f"adversarial replies: {dict(REPLIES)}")


def _check(reply: httpx.Response, uid: str) -> str:
    assert reply.status_code < 500 or reply.status_code == 503, f"{reply.status_code}: {reply.text[:300]}"
    if reply.status_code == 200:
        data = reply.json()
        assert data["kind"] == "AdmissionReview"
        assert data["response"]["uid"] == uid
        return "200 " + ("allowed" if data["response"]["allowed"] else "denied")
    status = reply.json()
    assert status["kind"] == "Status"
    assert status["code"] == reply.status_code
    if reply.status_code == 503:
        assert reply.headers.get("retry-after")
    return f"{reply.status_code} {status['reason']}"


def test_hostile_fields_get_verdicts_or_4xx_and_the_server_stays_bounded(
        server: tuple[ServerProcess, httpx.Client, int]) -> None:
    process, client, hard_mb = server
    normal = review(pod(images=("registry.example.com/app:1.0",)))
    normal["request"]["object"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}

    @ADVERSARIAL
    @given(case=adversarial_reviews())
    def run(case: tuple[str, dict[str, Any]]) -> None:
        path, body = case
        reply = client.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
        REPLIES[_check(reply, body["request"]["uid"])] += 1
        after = client.post("/validate", content=orjson.dumps(normal), headers={"content-type": "application/json"})
        if after.status_code == 503:  # the guard still refusing: it answers, which is what is asserted here
            REPLIES["normal review 503 (guard)"] += 1
            return
        assert after.status_code == 200, after.text[:300]
        assert after.json()["response"]["allowed"] is True, after.text[:300]

    run()
    assert process.process.poll() is None, process.output()[-2000:]
    assert _rss_kib(process.process.pid) < hard_mb * 1024
    assert "Traceback" not in process.output(), process.output()[-3000:]
    assert sum(count for reply, count in REPLIES.items() if reply.startswith("200")) > EXAMPLES // 4
