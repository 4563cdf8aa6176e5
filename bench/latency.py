"""Per-request latency of /validate with ten CEL policies, over one keep-alive TLS connection.

    .venv/bin/python bench/latency.py [--requests 3000] [--cel-engine cel-expr-python]
    .venv/bin/python bench/latency.py --compare-subscribers

Starts `webhook serve` as a separate process (one worker) on a free loopback port with ten Pod policies
written to a temporary directory, warms up, then sends the requests one after another and prints the
median, p90 and p99 as measured by the client (TLS, HTTP and JSON included), plus a JSON line.

--compare-subscribers measures twice in one run: with no event subscribers, then with two (one healthy
receiver on loopback, one whose port refuses connections), and prints the ratio of the medians.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

POLICY = """\
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata:
  name: {name}
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["pods"]
  validations:
    - expression: >-
        {expression}
      message: {name} failed
---
"""

EXPRESSIONS = {
    "require-team-label": "has(object.metadata.labels) && 'team' in object.metadata.labels",
    "no-latest": "object.spec.containers.all(c, !c.image.endsWith(':latest'))",
    "no-node-name": "!has(object.spec.nodeName)",
    "no-host-network": "!has(object.spec.hostNetwork) || !object.spec.hostNetwork",
    "no-privileged": ("object.spec.containers.all(c, !has(c.securityContext) || "
                      "!has(c.securityContext.privileged) || !c.securityContext.privileged)"),
    "requests-set": "object.spec.containers.all(c, has(c.resources) && has(c.resources.requests))",
    "allowed-registries": "object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
    "max-containers": "size(object.spec.containers) <= 10",
    "name-length": "size(object.metadata.name) <= 63",
    "run-as-non-root": ("!has(object.spec.securityContext) || !has(object.spec.securityContext.runAsUser) || "
                        "object.spec.securityContext.runAsUser != 0"),
}


def sample_review() -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": f"registry.example.com/app{i}:1.{i}",
                   "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}} for i in range(3)]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "default", "labels": {"team": "a", "app": "web"}},
           "spec": {"containers": containers}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "default", "name": "web",
        "operation": "CREATE", "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
        "object": pod, "oldObject": None}}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Accept(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def write_subscribers(path: Path, healthy_url: str) -> None:
    down_url = f"http://127.0.0.1:{free_port()}/events"
    path.write_text(json.dumps({"subscribers": [
        {"name": "healthy", "sink": healthy_url, "filters": [{"prefix": {"type": "dev.webhook.admission."}}]},
        {"name": "down", "sink": down_url, "filters": [{"prefix": {"type": "dev.webhook.admission."}}]},
    ]}))


def measure(*, engine: str, requests: int, warmup: int, subscribers: bool, profile: str | None = None,
            all_down: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as temporary:
        base = Path(temporary)
        policies = base / "policies"
        policies.mkdir()
        (policies / "ten.yaml").write_text("".join(
            POLICY.format(name=name, expression=expression) for name, expression in EXPRESSIONS.items()))
        port = free_port()
        extra: list[str] = []
        receiver = None
        if subscribers:  # the healthy subscriber is a process of its own, so that it does not slow the client
            receiver_port = free_port()
            receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(receiver_port)])
            write_subscribers(base / "subscribers.yaml",
                              f"http://127.0.0.1:{free_port() if all_down else receiver_port}/events")
            extra = ["--subscribers", str(base / "subscribers.yaml")]
        log = (base / "serve.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--policies", str(policies),
             "--cert-dir", str(base / "certs"), "--state-dir", str(base / "state"), "--cel-engine", engine,
             "--log-level", "warning", "--no-watch", *extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            ca_file = str(base / "certs" / "ca.crt")
            body = json.dumps(sample_review()).encode()
            headers = {"content-type": "application/json"}
            deadline = time.monotonic() + 30
            connection = None
            while connection is None:
                try:
                    candidate = http.client.HTTPSConnection(
                        "127.0.0.1", port, context=ssl.create_default_context(cafile=ca_file), timeout=10)
                    candidate.request("GET", "/readyz")
                    if candidate.getresponse().read() and candidate.sock is not None:
                        connection = candidate
                except (OSError, http.client.HTTPException):
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit(f"server did not become ready:\n{(base / 'serve.log').read_text()}") from None
                    time.sleep(0.1)
            # http.client: the lightest keep-alive HTTPS client in the standard library, so that the figures
            # are mostly the server's (httpx adds several hundred microseconds per request here).
            connection.request("POST", "/validate", body=body, headers=headers)
            first = json.loads(connection.getresponse().read())["response"]
            assert first["allowed"] is True, first
            for _ in range(warmup):
                connection.request("POST", "/validate", body=body, headers=headers)
                connection.getresponse().read()
            profiler = None
            if profile:  # py-spy samples the server process while the measured requests run
                profiler = subprocess.Popen(["py-spy", "record", "--pid", str(server.pid), "--rate", "500",
                                             "--format", "speedscope" if profile.endswith(".json") else "flamegraph",
                                             "--output", profile, "--subprocesses"], stdout=subprocess.DEVNULL)
                time.sleep(1.0)
            latencies = []
            for _ in range(requests):
                started = time.perf_counter()
                connection.request("POST", "/validate", body=body, headers=headers)
                reply = connection.getresponse()
                reply.read()
                latencies.append((time.perf_counter() - started) * 1000)
                assert reply.status == 200
            connection.close()
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            log.close()
            if receiver is not None:
                receiver.terminate()
                receiver.wait(timeout=10)
    return {
        "engine": engine, "policies": len(EXPRESSIONS), "requests": requests,
        "subscribers": "two (one down)" if subscribers else "none",
        "p50_ms": round(statistics.median(latencies), 3), "p90_ms": round(percentile(latencies, 0.90), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3), "max_ms": round(max(latencies), 3),
    }


def report(figures: dict[str, Any]) -> None:
    print(f"/validate, {figures['policies']} CEL policies matching, engine {figures['engine']}, "
          f"subscribers: {figures['subscribers']}, {figures['requests']} sequential requests on one TLS "
          "keep-alive connection:")
    print(f"  median {figures['p50_ms']} ms   p90 {figures['p90_ms']} ms   p99 {figures['p99_ms']} ms   "
          f"max {figures['max_ms']} ms")
    print(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--cel-engine", default="cel-expr-python", choices=("cel-expr-python", "cel-python"))
    parser.add_argument("--compare-subscribers", action="store_true")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the server with py-spy during the last measurement (.svg, or .json speedscope)")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)  # internal: run the healthy subscriber
    arguments = parser.parse_args()
    if arguments.receiver:
        ThreadingHTTPServer(("127.0.0.1", arguments.receiver), _Accept).serve_forever()
        return 0
    plain = measure(engine=arguments.cel_engine, requests=arguments.requests, warmup=arguments.warmup,
                    subscribers=False, profile=None if arguments.compare_subscribers else arguments.profile)
    report(plain)
    if arguments.compare_subscribers:
        with_events = measure(engine=arguments.cel_engine, requests=arguments.requests, warmup=arguments.warmup,
                              subscribers=True, profile=arguments.profile)
        report(with_events)
        ratio = with_events["p50_ms"] / plain["p50_ms"]
        print(f"median with two subscribers (one down) / without: {ratio:.3f} "
              f"({(ratio - 1) * 100:+.1f}%; target: within +10%)")
        print(json.dumps({"subscriber_median_ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
