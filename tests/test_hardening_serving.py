"""Issue 15, findings 2, 5 and 9, against real `webhook serve` processes over TLS on loopback: TLS handshakes are
timed and connections limited (5), a flood of large reviews meets a memory guard that holds (2), and a request
that arrived whole while the server was stalled is answered rather than cut by a timer meant for slow clients (9).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import TEST_POLICIES, ServerProcess, client_context, pod, review, wait_for

Start = Callable[..., ServerProcess]


def _address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("https://").split(":")
    return host, int(port)


def _tls_connection(server: ServerProcess) -> ssl.SSLSocket:
    raw = socket.create_connection(_address(server), timeout=30)
    return client_context(server.ca_file()).wrap_socket(raw, server_hostname="localhost")


def _closed_by_server(connection: socket.socket, *, wait: float = 0.2) -> bool:
    """True once the server has closed the connection (EOF or reset); False while it is still open."""
    connection.settimeout(wait)
    try:
        return connection.recv(4096) == b""
    except (TimeoutError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


def _http(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def _response(connection: ssl.SSLSocket, *, timeout: float = 30) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length framed) read from `connection`; (0, b"") if it closed."""
    connection.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return 0, b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return 0, b""
            body += chunk
        return int(head.split(b" ", 2)[1]), body
    return 0, b""


def _metric(server: ServerProcess, name: str) -> float:
    with server.client() as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


# Finding 5: TLS handshakes are timed, connections are limited.

def test_silent_tcp_connections_are_closed_after_the_handshake_timeout(server_processes: Start) -> None:
    """Was a bug: a connection that never finished its TLS handshake stayed open 60 s (asyncio's default; the
    request timer starts after the handshake), so silent TCP connections held file descriptors at will."""
    server = server_processes("--policies", str(TEST_POLICIES), "--no-watch", "--log-level", "warning",
                              "--tls-handshake-timeout-seconds", "1")
    server.wait_ready()
    silent = [socket.create_connection(_address(server), timeout=10) for _ in range(40)]
    half_hello = socket.create_connection(_address(server), timeout=10)
    half_hello.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello, no more
    connections = [*silent, half_hello]
    started = time.monotonic()
    try:
        wait_for(lambda: all(_closed_by_server(connection, wait=0.01) for connection in connections), timeout=20,
                 interval=0.2, what="the server closing connections without a TLS handshake")
        print(f"{len(connections)} connections without a handshake closed after {time.monotonic() - started:.1f} s")
        with server.client() as client:  # and the server answers as before
            assert client.post("/validate", json=review(pod())).json()["response"]["allowed"] is True
        assert _metric(server, "webhook_tls_handshake_failures_total") >= len(connections)
        assert _metric(server, "webhook_connections_open") <= 2  # the scrape's own, at most one more
    finally:
        for connection in connections:
            connection.close()


def test_past_the_connection_limit_new_connections_are_closed_while_healthz_answers(
        server_processes: Start) -> None:
    """Was a bug: no connection limit, so (under `ulimit -n 1024`) 1,100 idle connections made /healthz fail and
    the event spool log `Too many open files`. Past --max-connections a new connection is closed at once, before
    any TLS work, and the connections already open go on being answered."""
    limit = 20
    server = server_processes("--policies", str(TEST_POLICIES), "--no-watch", "--log-level", "warning",
                              "--max-connections", str(limit), "--tls-handshake-timeout-seconds", "60")
    server.wait_ready()
    wait_for(lambda: _metric(server, "webhook_connections_open") == 1,  # the scrape's own
             what="the readiness checks' connections gone")
    kept = _tls_connection(server)  # an API server's pooled connection
    kept.sendall(_http("GET", "/healthz"))
    assert _response(kept)[0] == 200
    holding = [socket.create_connection(_address(server), timeout=10) for _ in range(limit - 1)]
    wait_for(lambda: not _closed_by_server(holding[-1]), what="the last connection under the limit accepted")
    past = [socket.create_connection(_address(server), timeout=10) for _ in range(10)]
    try:
        wait_for(lambda: all(_closed_by_server(connection, wait=0.01) for connection in past), timeout=10,
                 what="the connections past the limit closed")
        assert not any(_closed_by_server(connection, wait=0.01) for connection in holding)
        kept.sendall(_http("GET", "/healthz"))
        status, body = _response(kept)
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        for connection in holding:
            connection.close()
        with server.client() as client:  # room again
            reply = wait_for(lambda: _reachable(client), what="new connections accepted again")
            assert reply.json()["response"]["allowed"] is True
        assert _metric(server, "webhook_connections_refused_total") >= len(past)
        assert "new connections closed at once" in server.output()
    finally:
        for connection in [kept, *holding, *past]:
            connection.close()


def _reachable(client: httpx.Client) -> httpx.Response | None:
    try:
        return client.post("/validate", json=review(pod()))
    except httpx.TransportError:
        return None


# Finding 9: a stall of the server is not the client's.

def test_whole_requests_that_arrive_while_the_server_is_stalled_are_answered(server_processes: Start) -> None:
    """Was a bug: after a stall longer than the 5 s request timer (a slow policy, a starved CPU; here SIGSTOP),
    the event loop ran its due timers before reading the sockets, so requests that had arrived whole meanwhile
    were cut (`ClientDisconnect` tracebacks), and so were requests on idle keep-alive connections (uvicorn's
    keep-alive timer). The timers now give the stalled seconds back."""
    server = server_processes("--policies", str(TEST_POLICIES), "--no-watch", "--log-level", "info")
    server.wait_ready()
    body = json.dumps(review(pod(name="during-a-stall"))).encode()
    request = _http("POST", "/validate", body)
    fresh = _tls_connection(server)  # handshake done, no request yet: the request timer runs
    kept_alive = _tls_connection(server)  # one request answered: the keep-alive timer runs
    kept_alive.sendall(_http("GET", "/healthz"))
    assert _response(kept_alive)[0] == 200
    halfway = _tls_connection(server)  # half a request before the stall, the rest during it
    halfway.sendall(request[: len(request) // 2])
    connections = {"fresh": fresh, "kept alive": kept_alive, "halfway": halfway}
    server.process.send_signal(signal.SIGSTOP)
    try:
        fresh.sendall(request)
        kept_alive.sendall(request)
        halfway.sendall(request[len(request) // 2:])
        time.sleep(7)  # past the 5 s request and keep-alive timers
    finally:
        server.process.send_signal(signal.SIGCONT)
    answers = {name: _response(connection) for name, connection in connections.items()}
    for connection in connections.values():
        connection.close()
    assert {name: status for name, (status, _) in answers.items()} == dict.fromkeys(connections, 200)
    assert all(json.loads(payload)["response"]["allowed"] is True for _, payload in answers.values())
    assert "Traceback" not in server.output()
    with server.client() as client:
        assert client.get("/healthz").status_code == 200


def test_a_client_that_is_slow_itself_is_still_cut(server_processes: Start) -> None:
    """The other side of the stall allowance: a client that sends half a request and stops is cut after the
    5 s request timer while the server is not stalled."""
    server = server_processes("--policies", str(TEST_POLICIES), "--no-watch", "--log-level", "warning")
    server.wait_ready()
    connection = _tls_connection(server)
    body = json.dumps(review(pod())).encode()
    connection.sendall(_http("POST", "/validate", body)[:-10])
    started = time.monotonic()
    try:
        wait_for(lambda: _closed_by_server(connection), timeout=20, what="the slow client cut")
        assert time.monotonic() - started > 2  # not at once: the client had its 5 s
    finally:
        connection.close()


# Finding 2: a memory guard that holds under a flood of large reviews.

def _resident_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def _large_review(index: int = 0) -> bytes:
    """About 4.8 MB: strings of 200-500 KB in fields the shipped policies read (quantities, annotations)."""
    big = "1" * 500_000
    obj = pod(name=f"large-{index}")
    obj["metadata"]["annotations"] = {f"note-{number}": "x" * 200_000 for number in range(4)}
    obj["spec"]["containers"] = [{"name": f"c{number}", "image": "nginx:1.27", "resources": {
        "limits": {"nvidia.com/gpu": big + str(number), "memory": "1Gi"}, "requests": {"cpu": big}}}
        for number in range(4)]
    return json.dumps(review(obj, namespace="default")).encode()


def _post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/validate", content=body, headers={"content-type": "application/json"})


SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"


def test_a_flood_of_large_reviews_meets_503s_past_the_soft_limit_and_stays_under_the_hard_one(
        server_processes: Start, tmp_path: Path) -> None:
    """Was a bug: `--restart-above-mb` was checked every 2 s while the server went on accepting, so a flood of
    large reviews took it from the chart's 400 MiB to 1,232 MiB (an OOM kill in the chart), and `serve` had no
    guard by default. Now, past the soft limit, reviews with bodies over 64 KiB are answered 503 (Retry-After, a
    Status body) before their body is read, while small reviews go on being answered; resident memory stays
    under the hard limit, and comes back under the soft one afterwards (malloc_trim). Without the guard the same
    flood grew the server by ~125 MiB here."""
    arguments = ("--policies", str(SHIPPED_POLICIES), "--no-watch", "--log-level", "warning")
    large = _large_review()
    probe = server_processes(*arguments, "--memory-hard-limit-mb", "0", directory=tmp_path / "probe")
    probe.wait_ready()
    with probe.client() as client:  # what a server holds once it has answered a large review
        assert _post(client, large).status_code == 200
    baseline = _resident_mib(probe.process.pid)
    probe.stop()
    soft, hard = int(baseline) + 20, int(baseline) + 100
    server = server_processes(*arguments, "--memory-soft-limit-mb", str(soft), "--memory-hard-limit-mb", str(hard),
                              directory=tmp_path / "guarded")
    server.wait_ready()
    statuses: list[int] = []
    small: list[int] = []
    refusals: list[httpx.Response] = []
    stop = threading.Event()

    def flood() -> None:
        with server.client() as client:
            while not stop.is_set():
                try:
                    reply = _post(client, large)
                except httpx.TransportError:  # closed while sending the body: as good as a 503
                    continue
                statuses.append(reply.status_code)
                if reply.status_code == 503 and not refusals:
                    refusals.append(reply)

    def ordinary() -> None:
        with server.client() as client:
            while not stop.wait(0.05):
                small.append(client.post("/validate", json=review(pod(name="ordinary"))).status_code)

    threads = [threading.Thread(target=flood) for _ in range(16)] + [threading.Thread(target=ordinary)]
    for thread in threads:
        thread.start()
    time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    peak = _resident_mib(server.process.pid, "VmHWM")
    print(f"baseline {baseline:.0f} MiB, soft {soft}, hard {hard}: peak {peak:.0f} MiB; large reviews "
          f"{statuses.count(200)} answered, {statuses.count(503)} refused; ordinary ones {len(small)}")
    assert server.process.poll() is None
    assert peak < hard
    assert statuses.count(503) > 0
    refusal = refusals[0]
    assert refusal.headers["retry-after"] == "1"
    assert refusal.json()["code"] == 503
    assert refusal.json()["reason"] == "ServiceUnavailable"
    assert small
    assert set(small) == {200}
    with server.client() as client:  # back under the soft limit once the flood is over
        wait_for(lambda: _post(client, large).status_code == 200, timeout=30, interval=0.5,
                 what="large reviews answered again")
        assert _metric(server, "webhook_memory_refused_requests_total") >= statuses.count(503)
    assert "past the soft limit" in server.output()
    assert "Traceback" not in server.output()


def test_past_the_hard_limit_the_server_refuses_drains_and_exits(server_processes: Start) -> None:
    """Past --memory-hard-limit-mb (here any: 64 MiB is below what a loaded server holds) the server drains as
    on SIGTERM, refusing every admission request meanwhile rather than growing further, and exits 0 for
    Kubernetes to start it again."""
    server = server_processes("--policies", str(TEST_POLICIES), "--no-watch", "--memory-soft-limit-mb", "0",
                              "--memory-hard-limit-mb", "64", "--shutdown-delay-seconds", "3")
    with server.client() as client:
        wait_for(lambda: server.process.poll() is not None or "past the hard limit" in server.output(),
                 what="the memory check")
        reply = client.get("/readyz")
        assert reply.status_code == 503
        assert reply.json()["draining"] is True
        refused = client.post("/validate", json=review(pod()))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
    assert server.process.wait(timeout=30) == 0


def test_the_chart_memory_limit_and_the_guard_agree() -> None:
    """The chart passes no memory flags: the guard derives its limits from the container's memory limit
    (resources.limits.memory), so they agree with whatever the chart is given."""
    import yaml

    from webhook.memory import DELIVERER_MB, container_memory_limit_mb, memory_limits

    chart = Path(__file__).resolve().parent.parent / "charts" / "webhook"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    limit = values["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    container = int(limit.removesuffix("Mi"))
    for deliverer in (False, True):
        limits = memory_limits(soft_mb=None, hard_mb=None, workers=1, deliverer_process=deliverer,
                               container_mb=container)
        reserved = DELIVERER_MB if deliverer else 0
        assert 0 < limits.soft_mb < limits.hard_mb <= container - reserved, limits
        assert limits.hard_mb - limits.soft_mb >= 100, limits  # room for what admitted reviews still allocate
    deployment = (chart / "templates" / "deployment.yaml").read_text()
    assert "- --memory-hard-limit-mb={{ .Values.server.memoryGuard.hardLimitMb }}" in deployment  # when given
    assert values["server"]["memoryGuard"] == {"enabled": True, "softLimitMb": 0, "hardLimitMb": 0}
    assert container_memory_limit_mb() is None or container_memory_limit_mb() > 0
