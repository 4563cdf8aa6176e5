"""Real HTTP event subscribers on loopback, with scripted behaviour (healthy, slow, flapping, 429, 410, ...)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

# (status, extra headers, seconds to wait before answering)
Answer = tuple[int, dict[str, str], float]
Behaviour = Callable[[int], Answer]


def healthy(_: int) -> Answer:
    return 200, {}, 0.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # what the receiver answered

    def event(self) -> Any:
        """Parsed by the CloudEvents SDK, binary or structured, as an independent receiver would."""
        return from_http(HTTPMessage(headers=self.headers, body=self.body), JSONFormat())


class Receiver:
    def __init__(self, behaviour: Behaviour = healthy) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    record = Received({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                    receiver.received.append(record)
                    number = len(receiver.received)
                status, headers, delay = receiver.behaviour(number)
                record.status = status
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # a sender killed mid-request resets its connection: expected here

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def events(self, type_prefix: str = "dev.webhook.", *, acknowledged: bool = False) -> list[Any]:
        """Events received (only those answered with 2xx when `acknowledged`), parsed by the SDK."""
        with self._lock:
            items = [r for r in self.received if not acknowledged or 200 <= r.status < 300]
        return [event for event in (r.event() for r in items) if event.get_type().startswith(type_prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    """A loopback URL where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/events"
