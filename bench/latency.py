"""Per-request latency of /validate with ten CEL policies, over one keep-alive TLS connection.

    .venv/bin/python bench/latency.py [--requests 3000] [--cel-engine cel-expr-python]

Starts `webhook serve` as a separate process (one worker) on a free loopback port with ten Pod policies
written to a temporary directory, warms up, then sends the requests one after another and prints the
median, p90 and p99 as measured by the client (TLS, HTTP and JSON included), plus a JSON line.
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
from pathlib import Path

import httpx

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


def sample_review() -> dict:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--cel-engine", default="cel-expr-python", choices=("cel-expr-python", "cel-python"))
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        policies = Path(temporary) / "policies"
        policies.mkdir()
        (policies / "ten.yaml").write_text("".join(
            POLICY.format(name=name, expression=expression) for name, expression in EXPRESSIONS.items()))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--policies", str(policies),
             "--cert-dir", str(Path(temporary) / "certs"), "--cel-engine", arguments.cel_engine,
             "--log-level", "warning", "--no-watch"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert server.stdout is not None
            ca_file = server.stdout.readline().removeprefix("CA certificate: ").strip()
            body = json.dumps(sample_review()).encode()
            headers = {"content-type": "application/json"}
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca_file, timeout=10) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        server.kill()
                        raise SystemExit(f"server did not become ready:\n{server.communicate()[0]}")
                    time.sleep(0.1)
                first = client.post("/validate", content=body, headers=headers).json()["response"]
                assert first["allowed"] is True, first
            # http.client: the lightest keep-alive HTTPS client in the standard library, so that the figures
            # are mostly the server's (httpx adds several hundred microseconds per request here).
            connection = http.client.HTTPSConnection(
                "127.0.0.1", port, context=ssl.create_default_context(cafile=ca_file), timeout=10)
            for _ in range(arguments.warmup):
                connection.request("POST", "/validate", body=body, headers=headers)
                connection.getresponse().read()
            latencies = []
            for _ in range(arguments.requests):
                started = time.perf_counter()
                connection.request("POST", "/validate", body=body, headers=headers)
                reply = connection.getresponse()
                reply.read()
                latencies.append((time.perf_counter() - started) * 1000)
                assert reply.status == 200
            connection.close()
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=30)
    figures = {
        "engine": arguments.cel_engine, "policies": len(EXPRESSIONS), "requests": arguments.requests,
        "p50_ms": round(statistics.median(latencies), 3), "p90_ms": round(percentile(latencies, 0.90), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3), "max_ms": round(max(latencies), 3),
    }
    print(f"/validate, {figures['policies']} CEL policies matching, engine {figures['engine']}, "
          f"{figures['requests']} sequential requests on one TLS keep-alive connection:")
    print(f"  median {figures['p50_ms']} ms   p90 {figures['p90_ms']} ms   p99 {figures['p99_ms']} ms   "
          f"max {figures['max_ms']} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
