"""Running the app under uvicorn: draining on SIGTERM, client authentication, the serving metrics.

The connections (TLS, limits, the HTTP protocol) are webhook.connections, the memory guard webhook.memory.

- `DrainingServer`: on the first SIGTERM it sets `DRAINING` (readiness fails, responses say
  `Connection: close` so the API server's pooled connections move to other replicas) and only after
  `shutdown_delay` starts uvicorn's graceful shutdown (stop accepting, close idle connections, let in-flight
  reviews finish within `timeout_graceful_shutdown`). A second SIGTERM or SIGINT shuts down at once.
  With several workers `DrainingSupervisor` does the same: it sends the workers `DRAIN_SIGNAL` (the app
  sets `DRAINING` on it), waits `shutdown_delay`, then stops them as uvicorn does.
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from uvicorn.supervisors import Multiprocess

from webhook.connections import CONNECTIONS
from webhook.connections import TLSHttpToolsProtocol as TLSHttpToolsProtocol  # where tests and older code look
from webhook.errors import ConfigError
from webhook.memory import MemoryGuard

log = logging.getLogger("webhook.serving")

# Set in a serving process when SIGTERM arrived: /readyz answers 503 and responses close their connection.
DRAINING = threading.Event()
DRAIN_SIGNAL = signal.SIGUSR1  # supervisor -> worker: start draining (the app's lifespan handles it)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, shutdown_delay: float) -> None:
        super().__init__(config)
        self.shutdown_delay = shutdown_delay

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.shutdown_delay > 0 and not DRAINING.is_set():
            DRAINING.set()
            log.info("SIGTERM: readiness fails now, shutting down in %.1fs", self.shutdown_delay)
            timer = threading.Timer(self.shutdown_delay, self._shut_down)
            timer.daemon = True
            timer.start()
            return
        DRAINING.set()
        super().handle_exit(sig, frame)

    def _shut_down(self) -> None:
        self.should_exit = True  # uvicorn's main loop looks at it every 0.1 s

    def _log_started_message(self, listeners: Sequence[socket.SocketType]) -> None:
        # uvicorn names the scheme after config.ssl, which a ServingConfig hands to TLSConnectionGate instead.
        listening_ssl = self.config.ssl
        self.config.ssl = getattr(self.config, "tls_context", None) or listening_ssl
        try:
            super()._log_started_message(listeners)
        finally:
            self.config.ssl = listening_ssl


class DrainingSupervisor(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets: list[Any], *, shutdown_delay: float) -> None:
        super().__init__(config, sockets=sockets)
        self.shutdown_delay = shutdown_delay
        self._draining = False

    def handle_term(self) -> None:
        if self.shutdown_delay <= 0 or self._draining:
            super().handle_term()
            return
        self._draining = True
        log.info("SIGTERM: workers drain now, shutting down in %.1fs", self.shutdown_delay)
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, DRAIN_SIGNAL)
        timer = threading.Timer(self.shutdown_delay, self.should_exit.set)
        timer.daemon = True
        timer.start()


def run(config: uvicorn.Config, *, shutdown_delay: float) -> None:
    """What `uvicorn.run` does, with draining on SIGTERM (one worker in this process, or a supervisor)."""
    if config.workers > 1:
        socket = config.bind_socket()
        DrainingSupervisor(config, [socket], shutdown_delay=shutdown_delay).run()
    else:
        DrainingServer(config, shutdown_delay=shutdown_delay).run()


class CloseWhileDraining:
    """ASGI middleware: while draining, every response says `Connection: close`, so that clients holding
    keep-alive connections (the API server pools them) reconnect to a replica that is not going away."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not DRAINING.is_set():
            await self.app(scope, receive, send)
            return

        async def send_closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


Handler = Callable[[Request], Awaitable[Response]]


class AdmissionApp(FastAPI):
    """The FastAPI app, with the admission endpoints (`direct`: POST path -> handler) taken before its middleware
    stack: a review goes straight to its handler, everything else through FastAPI. Starlette's and FastAPI's seven
    middleware layers (error pages, telemetry, body limits, exception routing, exit stacks, routing) cost ~10% of a
    review's time and do nothing a review needs: its handler reads the body itself (with its own limit), and what
    it raises is answered by the app's own exception handlers, as on the usual path (a 500 for anything else)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.direct: dict[str, Handler] = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.direct.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                await _DIRECT(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def answer(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        try:
            response = await self.direct[scope["path"]](request)
        except Exception as error:  # answered as the app answers it, as FastAPI would
            response = await self._handled(request, error)
        await response(scope, receive, send)

    async def _handled(self, request: Request, error: Exception) -> Response:
        for kind in type(error).__mro__:
            handler = self.exception_handlers.get(kind)
            if handler is not None and kind is not Exception:
                answered = handler(request, error)
                return await answered if inspect.isawaitable(answered) else answered
        log.exception("admission handler failed on %s", request.url.path)
        return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
                             "reason": "InternalError", "message": "internal error"}, status_code=500)


async def _answer(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await scope["app"].answer(scope, receive, send)


_DIRECT = CloseWhileDraining(_answer)  # while draining, direct answers say `Connection: close` too


class ClientAuthentication:
    """Who may call the admission endpoints: a client certificate verified against `--client-ca-file`
    (the TLS layer verified it; here we require that there was one) and/or `Authorization: Bearer` with the
    token in `--client-token-file` (re-read when the file changes). Every configured method must pass."""

    def __init__(self, *, require_client_certificate: bool, token_file: Path | None) -> None:
        self.require_client_certificate = require_client_certificate
        self.token_file = token_file
        self._token: bytes | None = None
        self._token_stamp: tuple[float, int] | None = None
        self._checked = 0.0
        if token_file is not None:
            self._reload_token()

    @property
    def enabled(self) -> bool:
        return self.require_client_certificate or self.token_file is not None

    def _reload_token(self) -> None:
        assert self.token_file is not None
        try:
            stat = self.token_file.stat()
            stamp = (stat.st_mtime, stat.st_size)
            if stamp != self._token_stamp:
                token = self.token_file.read_bytes().strip()
                if not token:
                    raise ValueError("the file is empty")
                self._token, self._token_stamp = token, stamp
        except (OSError, ValueError) as error:
            if self._token is None:
                raise ConfigError(f"cannot read client token file {self.token_file}: {error}") from error
            log.error("client token file %s unreadable, keeping the last token: %s", self.token_file, error)

    def problem(self, scope: MutableMapping[str, Any]) -> str | None:
        """Why this request may not call an admission endpoint, or None when it may."""
        if self.require_client_certificate:
            tls = scope.get("extensions", {}).get("tls") or {}
            if not tls.get("client_cert_chain"):
                return "a client certificate signed by the configured client CA is required"
        if self.token_file is not None:
            now = time.monotonic()
            if now - self._checked > 1.0:
                self._checked = now
                self._reload_token()
            header = dict(scope.get("headers", ())).get(b"authorization", b"")
            scheme, _, presented = header.partition(b" ")
            if scheme.lower() != b"bearer" or self._token is None or not hmac.compare_digest(
                    presented.strip(), self._token):
                return "a valid bearer token is required"
        return None


class ServingCollector:
    """Prometheus metrics of this process's connections and memory guard."""

    def __init__(self, guard: MemoryGuard | None) -> None:
        self.guard = guard

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("webhook_connections_open", "Open connections of this process, TLS handshakes "
                                "included.", value=CONNECTIONS.open)
        yield CounterMetricFamily("webhook_connections_refused", "Connections closed at once because "
                                  "--max-connections were open.", value=CONNECTIONS.refused)
        yield CounterMetricFamily("webhook_tls_handshake_failures", "TLS handshakes that did not complete: timed "
                                  "out, failed, or given up by the client.",
                                  value=CONNECTIONS.handshake_failures)
        guard = self.guard
        if guard is None:
            return
        yield GaugeMetricFamily("webhook_memory_resident_bytes", "Resident memory of this process at the memory "
                                "guard's last sample.", value=guard.resident)
        for name, limit in (("soft", guard.soft), ("hard", guard.hard)):
            if limit is not None:
                yield GaugeMetricFamily(f"webhook_memory_{name}_limit_bytes", f"The memory guard's {name} limit.",
                                        value=limit)
        yield CounterMetricFamily("webhook_memory_refused_requests", "Admission requests answered 503 because "
                                  "resident memory was past the soft limit.", value=guard.refused)
