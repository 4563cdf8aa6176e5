"""`webhook serve` as a user runs it: a real process, generated certificates, the printed caBundle."""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import TEST_POLICIES, client_context, pod, review, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    processes: list[subprocess.Popen[str]] = []

    def start(*arguments: str) -> tuple[subprocess.Popen[str], str, list[str]]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--cert-dir", str(tmp_path / "certs"),
             "--policies", str(TEST_POLICIES), "--state-dir", str(tmp_path / "state"), *arguments],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        processes.append(process)
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        return process, f"https://127.0.0.1:{port}", lines

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)  # also closes the pipe
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-worker", "two-workers"])
def test_serve_generates_certificates_and_answers_reviews(serve, tmp_path: Path, workers: str) -> None:  # type: ignore[no-untyped-def]
    process, url, lines = serve("--workers", workers)
    ca_line, bundle_line = lines
    assert ca_line.startswith("CA certificate: ")
    ca_file = Path(ca_line.removeprefix("CA certificate: ").strip())
    assert ca_file == (tmp_path / "certs" / "ca.crt").resolve()
    bundle = bundle_line.removeprefix("caBundle: ").strip()
    assert base64.b64decode(bundle) == ca_file.read_bytes()
    for key in ("ca.key", "tls.key"):
        assert stat.S_IMODE((tmp_path / "certs" / key).stat().st_mode) == 0o600
    with httpx.Client(base_url=url, verify=client_context(ca_file), timeout=10) as client:
        wait_for(lambda: _ready(client) or process.poll() is not None, what="server ready")
        assert process.poll() is None
        for _ in range(4):  # several connections, so that both workers answer when there are two
            with httpx.Client(base_url=url, verify=client_context(ca_file), timeout=10) as fresh:
                reply = fresh.post("/validate", json=review(pod(namespace="deny-ns")))
                assert reply.status_code == 200
                assert reply.json()["response"]["status"]["message"].startswith("require-team-label:")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal so that the exit status says SIGTERM (143)
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in output


def test_second_start_reuses_the_ca(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first, _, first_lines = serve()
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    _, _, second_lines = serve()
    assert first_lines[1] == second_lines[1]


def test_half_a_tls_pair_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "webhook", "serve", "--tls-cert-file", str(tmp_path / "x.crt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "give both --tls-cert-file and --tls-key-file" in result.stderr
