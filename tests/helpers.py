"""Builders for AdmissionReviews and a real TLS server for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from webhook.certs import ensure_self_signed, uvicorn_tls_context
from webhook.config import Settings
from webhook.server import create_app
from webhook.serving import TLSHttpToolsProtocol

DATA = Path(__file__).parent / "data"
TEST_POLICIES = DATA / "policies"


def pod(name: str = "web", *, namespace: str = "default", labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, images: tuple[str, ...] = ("nginx:1.27",),
        **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": containers, **spec}}


def deployment(name: str = "web", *, namespace: str = "default", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}},
    }


def review(obj: dict[str, Any] | None, *, operation: str = "CREATE", namespace: str | None = None,
           old: dict[str, Any] | None = None, kind: tuple[str, str, str] = ("", "v1", "Pod"),
           resource: tuple[str, str, str] = ("", "v1", "pods"), sub_resource: str = "", name: str | None = None,
           user: str = "alice", groups: tuple[str, ...] = ("system:authenticated",),
           api_version: str = "admission.k8s.io/v1", dry_run: bool = False) -> dict[str, Any]:
    source = obj if obj is not None else old
    metadata = (source or {}).get("metadata", {})
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": kind[0], "version": kind[1], "kind": kind[2]},
        "resource": {"group": resource[0], "version": resource[1], "resource": resource[2]},
        "requestKind": {"group": kind[0], "version": kind[1], "kind": kind[2]},
        "requestResource": {"group": resource[0], "version": resource[1], "resource": resource[2]},
        "name": name if name is not None else metadata.get("name", ""),
        "namespace": namespace if namespace is not None else metadata.get("namespace", ""),
        "operation": operation,
        "userInfo": {"username": user, "uid": "u-1", "groups": list(groups)},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def deployment_review(obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return review(obj, kind=("apps", "v1", "Deployment"), resource=("apps", "v1", "deployments"), **kwargs)


@dataclass
class RunningServer:
    base_url: str
    ca_file: Path
    client: httpx.Client
    app: Any

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.client.post(path, json=body)
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()
        assert data["kind"] == "AdmissionReview"
        assert data["response"]["uid"] == body["request"]["uid"]
        return data

    def validate(self, body: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.post("/validate", body)["response"]
        return response

    def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.post("/mutate", body)["response"]
        return response


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def wait_for(condition: Any, *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; a deadline, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def running_server(settings: Settings, cert_dir: Path) -> Iterator[RunningServer]:
    """A real uvicorn server over TLS on a free loopback port, in a thread of this process."""
    if settings.state_dir == Settings().state_dir:  # never the working directory's state
        settings = settings.model_copy(update={"state_dir": Path(tempfile.mkdtemp(prefix="webhook-state-"))})
    ca_file = cert_dir / "ca.crt"  # with given TLS files: the CA bundle that signed them, next to them
    if settings.tls_cert_file is None:
        ca_file = ensure_self_signed(cert_dir, dns_names=[]).ca_cert
        settings = settings.model_copy(update={"cert_dir": cert_dir})
    cert_file, key_file = settings.serving_files
    app = create_app(settings)
    config = uvicorn.Config(app, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file),
                            ssl_ca_certs=str(settings.client_ca_file) if settings.client_ca_file else None,
                            ssl_context_factory=uvicorn_tls_context, http=TLSHttpToolsProtocol,
                            log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), what="server start")
    assert server.started, "server did not start"
    base_url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, verify=client_context(ca_file), timeout=30.0) as client:
            yield RunningServer(base_url, ca_file, client, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """`webhook serve` in a process of its own; output goes to a file so that it never blocks on a pipe."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def header_lines(self) -> list[str]:
        """The two lines `webhook serve` prints first: the CA path and the caBundle."""
        lines = wait_for(lambda: (self.output().splitlines()[:2] if self.output().count("\n") >= 2
                                  or self.process.poll() is not None else None), what="server output")
        return list(lines)

    def ca_file(self) -> Path:
        return Path(self.header_lines()[0].removeprefix("CA certificate: ").strip())

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=client_context(self.ca_file()), timeout=10)

    def wait_ready(self) -> None:
        with self.client() as client:
            def ready() -> bool:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited:\n{self.output()}")
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False
            wait_for(ready, what="server ready")

    def stop(self, signal_number: int = signal.SIGTERM, *, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server_process(directory: Path, *arguments: str) -> ServerProcess:
    """Start `python -m webhook serve` on a free port with certificates and state under `directory`."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"serve-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--cert-dir", str(directory / "certs"),
             "--state-dir", str(directory / "state"), *arguments],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return ServerProcess(process, f"https://127.0.0.1:{port}", log)
