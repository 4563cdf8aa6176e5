"""SIGTERM: readiness fails first, keep-alive connections are closed, in-flight reviews finish, exit 0."""

from __future__ import annotations

import json
import signal
import socket
import ssl
from collections.abc import Callable

from tests.helpers import TEST_POLICIES, ServerProcess, pod, review, wait_for


def _closed_by_server(connection: ssl.SSLSocket) -> bool:
    connection.settimeout(0.1)
    try:
        return connection.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except (ssl.SSLError, OSError):
        return True


def _refuses_new_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_sigterm_drains_then_finishes_in_flight_reviews(server_processes: Callable[..., ServerProcess]) -> None:
    server = server_processes("--policies", str(TEST_POLICIES), "--shutdown-delay-seconds", "1",
                              "--graceful-timeout-seconds", "20", "--log-level", "warning")
    server.wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(server.ca_file()))

    def connect() -> ssl.SSLSocket:
        return context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")

    body = json.dumps(review(pod(name="in-flight"))).encode()
    in_flight = connect()  # a review whose body is still arriving when SIGTERM comes
    in_flight.sendall(b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
    idle = connect()  # a keep-alive connection with nothing in flight, as the API server pools them
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: webhook\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")

    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        server.process.send_signal(signal.SIGTERM)
        draining = wait_for(lambda: (reply := client.get("/readyz")).status_code == 503 and reply,
                            what="readiness failing")
        assert draining.json()["draining"] is True
        assert draining.headers["connection"] == "close"  # pooled connections move to other replicas
        assert client.post("/validate", json=review(pod())).status_code == 200  # still answering meanwhile

    wait_for(lambda: _refuses_new_connections(port), what="the listener closed after the delay")
    wait_for(lambda: _closed_by_server(idle), what="the idle keep-alive connection closed")

    idle.close()  # as an HTTP client does once the server has closed its side
    in_flight.sendall(body[len(body) // 2:])
    in_flight.settimeout(20)
    answer = b""
    while chunk := in_flight.recv(65536):
        answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["response"]["allowed"] is True
    in_flight.close()  # the server's TLS close waits for ours (bounded by --graceful-timeout-seconds)
    assert server.process.wait(timeout=30) == 0
    assert "Traceback" not in server.output()


def test_past_restart_above_mb_the_server_drains_and_exits_to_be_started_again(
        server_processes: Callable[..., ServerProcess]) -> None:
    """--restart-above-mb: memory past it (here any: 64 MiB is below what a loaded server holds) means the same
    drain as SIGTERM (readiness fails while reviews are still answered), then exit 0 for Kubernetes to start the
    container again; the bound on cel-expr-python's leak (README, Performance)."""
    server = server_processes("--policies", str(TEST_POLICIES), "--restart-above-mb", "64",
                              "--shutdown-delay-seconds", "3", "--log-level", "info")
    with server.client() as client:
        wait_for(lambda: server.process.poll() is not None or (
            "--restart-above-mb 64: draining" in server.output()), what="the memory check")
        reply = client.get("/readyz")
        assert reply.status_code == 503
        assert reply.json()["draining"] is True
        assert client.post("/validate", json=review(pod(labels={"team": "a"}))).json()["response"]["allowed"]
    assert server.process.wait(timeout=30) == 0
    assert "resident memory" in server.output()
