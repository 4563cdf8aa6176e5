"""`webhook serve` as a user runs it: a real process, generated certificates, the printed caBundle."""

from __future__ import annotations

import base64
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import TEST_POLICIES, ServerProcess, pod, review

Start = Callable[..., ServerProcess]


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-worker", "two-workers"])
def test_serve_generates_certificates_and_answers_reviews(server_processes: Start, tmp_path: Path,
                                                          workers: str) -> None:
    server = server_processes("--policies", str(TEST_POLICIES), "--workers", workers)
    ca_line, bundle_line = server.header_lines()
    assert ca_line.startswith("CA certificate: ")
    ca_file = server.ca_file()
    assert ca_file == (tmp_path / "certs" / "ca.crt").resolve()
    assert bundle_line.startswith("caBundle: ")
    assert base64.b64decode(bundle_line.removeprefix("caBundle: ").strip()) == ca_file.read_bytes()
    for key in ("ca.key", "tls.key"):
        assert stat.S_IMODE((tmp_path / "certs" / key).stat().st_mode) == 0o600
    server.wait_ready()
    for _ in range(4):  # several connections, so that both workers answer when there are two
        with server.client() as client:
            reply = client.post("/validate", json=review(pod(namespace="deny-ns")))
            assert reply.status_code == 200
            assert reply.json()["response"]["status"]["message"].startswith("require-team-label:")
    # uvicorn shuts down cleanly, then re-raises the signal so that the exit status says SIGTERM (143)
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in server.output()


def test_second_start_reuses_the_ca(server_processes: Start) -> None:
    first = server_processes("--policies", str(TEST_POLICIES))
    bundle = first.header_lines()[1]
    first.stop()
    second = server_processes("--policies", str(TEST_POLICIES))
    assert second.header_lines()[1] == bundle


def test_half_a_tls_pair_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "webhook", "serve", "--tls-cert-file", str(tmp_path / "x.crt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "give both --tls-cert-file and --tls-key-file" in result.stderr


def test_serve_raises_its_soft_open_files_limit_to_the_hard_one(server_processes: Start) -> None:
    """Issue 15, finding 5 (in part): at a soft limit of 1,024, 1,100 idle connections made /healthz fail."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 256) if hard == resource.RLIM_INFINITY else min(soft, hard, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the server process inherits it
    try:
        server = server_processes("--policies", str(TEST_POLICIES))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server.wait_ready()
    limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    served_soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
    assert int(served_soft) == (hard if hard != resource.RLIM_INFINITY else max(low, 1 << 20))
