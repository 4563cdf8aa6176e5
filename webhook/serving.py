"""Running the app under uvicorn: the ASGI TLS extension, and draining on SIGTERM.

uvicorn gives an application neither the client certificate nor a say in how shutdown starts. Two small
extensions, both through uvicorn's public configuration (`http=` protocol class, `Server` subclass):

- `TLSHttpToolsProtocol` puts the ASGI TLS extension (`scope["extensions"]["tls"]`, with the verified
  client certificate chain) into every request's scope, so the app can require a client certificate on the
  admission endpoints while probes reach `/healthz` without one.
- `DrainingServer`: on the first SIGTERM it sets `DRAINING` (readiness fails, responses say
  `Connection: close` so the API server's pooled connections move to other replicas) and only after
  `shutdown_delay` starts uvicorn's graceful shutdown (stop accepting, close idle connections, let in-flight
  reviews finish within `timeout_graceful_shutdown`). A second SIGTERM or SIGINT shuts down at once.
  With several workers `DrainingSupervisor` does the same: it sends the workers `DRAIN_SIGNAL` (the app
  sets `DRAINING` on it), waits `shutdown_delay`, then stops them as uvicorn does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import ssl
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from webhook.errors import ConfigError

log = logging.getLogger("webhook.serving")

# Set in a serving process when SIGTERM arrived: /readyz answers 503 and responses close their connection.
DRAINING = threading.Event()
DRAIN_SIGNAL = signal.SIGUSR1  # supervisor -> worker: start draining (the app's lifespan handles it)


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    chain: list[str] = []
    name = None
    der = ssl_object.getpeercert(binary_form=True)  # only a certificate that verified against the client CA
    if der:
        chain.append(ssl.DER_cert_to_PEM_cert(der))
        subject = ssl_object.getpeercert().get("subject", ())
        name = ",".join(f"{key}={value}" for rdn in reversed(subject) for key, value in rdn)
    return {"server_cert": None, "client_cert_chain": chain, "client_cert_name": name, "client_cert_error": None,
            "tls_version": None, "cipher_suite": None}


MAX_HEADER_BYTES = 64 * 1024  # the API server's headers are a few hundred bytes
REQUEST_READ_SECONDS = 5.0  # from the connection (or the first byte of a request) to its last byte
_HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                      b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


class TLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the ASGI TLS extension in each request scope, and two limits uvicorn
    does not have: request headers are capped (431 past MAX_HEADER_BYTES), and a request must arrive whole
    within REQUEST_READ_SECONDS, so that slow or idle clients cannot hold connections (uvicorn's keep-alive
    timeout only runs after a response)."""

    _tls: dict[str, Any] | None = None
    _header_bytes = 0
    _refused = False
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = _tls_extension(transport)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(REQUEST_READ_SECONDS, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._read_timer is None:
            self._arm_read_timer()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": cast(dict[object, object], self._tls)}

    def _count(self, size: int) -> bool:
        """False (and the connection answered 431 and closed) once the headers pass MAX_HEADER_BYTES."""
        if self._refused:
            return False
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refused = True
            body = (b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":431,'
                    b'"reason":"RequestHeaderFieldsTooLarge","message":"request headers are over %d bytes"}'
                    % MAX_HEADER_BYTES)
            self.transport.write(_HEADERS_TOO_LARGE % (len(body), body))
            self.transport.close()
            return False
        return True

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value)):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        if not self._refused:
            super().on_message_complete()


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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not DRAINING.is_set():
            await self.app(scope, receive, send)
            return

        async def send_closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


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
