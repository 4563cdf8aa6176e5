"""Connections of `webhook serve`: TLS started by us with a timed handshake, a connection limit, the HTTP
protocol with the limits uvicorn lacks, and timers that count the client's time only.

- `TLSConnectionGate` is the protocol `webhook serve` listens with (uvicorn's `http=`): it counts a connection
  from its accept, closes it at once past `--max-connections`, runs the TLS handshake under
  `--tls-handshake-timeout-seconds`, then hands the connection to `TLSHttpToolsProtocol`. uvicorn's listener
  would start counting and timing only after the handshake (asyncio's handshake timeout is 60 s), so
  `ServingConfig` keeps the TLS context away from it.
- `TLSHttpToolsProtocol` puts the ASGI TLS extension (`scope["extensions"]["tls"]`, with the verified client
  certificate chain) into every request's scope, so the app can require a client certificate on the admission
  endpoints while probes reach `/healthz` without one; it caps request headers and the time a request may take
  to arrive.
- `ClientTimer` (handshake, request read) and the keep-alive timer give back the seconds the event loop
  stalled (`LoopStalls`): a request that arrived whole while the server was busy is answered, not cut.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("webhook.connections")


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

STALL_TICK_SECONDS = 0.1
STALL_TOLERANCE_SECONDS = 0.1  # a client timer gives back stalls longer than this (a busy loop is late by ms)


class LoopStalls:
    """How long an event loop could not run its callbacks (a long synchronous evaluation, SIGSTOP, a starved CPU):
    a tick every 100 ms adds its own lateness.

    Client timers give those seconds back: bytes a client sent during a stall wait unread in the socket, and
    after a stall the loop runs the timers that fell due before it reads any socket, so a request that arrived
    whole would otherwise be cut as if its client had been slow."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stalled = 0.0
        self._due = loop.time() + STALL_TICK_SECONDS
        loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._stalled += max(0.0, now - self._due)
        self._due = now + STALL_TICK_SECONDS
        loop.call_at(self._due, self._tick)

    def total(self) -> float:
        """Seconds stalled so far, with a stall that is ending now (its tick may not have run yet)."""
        return self._stalled + max(0.0, asyncio.get_running_loop().time() - self._due)


_LOOP_STALLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopStalls] = weakref.WeakKeyDictionary()


def loop_stalls(loop: asyncio.AbstractEventLoop) -> LoopStalls:
    stalls = _LOOP_STALLS.get(loop)
    if stalls is None:
        stalls = _LOOP_STALLS[loop] = LoopStalls(loop)
    return stalls


class ClientTimer:
    """Calls `expire` once a client has had `seconds` of the server's attention: when it falls due, the seconds
    the event loop stalled since it was armed are added first (see LoopStalls)."""

    __slots__ = ("_expire", "_handle", "_loop", "_stalled", "_stalls")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, expire: Callable[[], object]) -> None:
        self._loop, self._expire = loop, expire
        self._stalls = loop_stalls(loop)
        self._stalled = self._stalls.total()
        self._handle: asyncio.TimerHandle | None = loop.call_later(seconds, self._fall_due)

    def _fall_due(self) -> None:
        stalled = self._stalls.total()
        owed = stalled - self._stalled
        if owed > STALL_TOLERANCE_SECONDS:
            self._stalled = stalled
            self._handle = self._loop.call_later(owed, self._fall_due)
            return
        self._handle = None
        self._expire()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class TLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the ASGI TLS extension in each request scope, and two limits uvicorn
    does not have: request headers are capped (431 past MAX_HEADER_BYTES), and a request must arrive whole
    within REQUEST_READ_SECONDS, so that slow or idle clients cannot hold connections (uvicorn's keep-alive
    timeout only runs after a response). Both that timer and the keep-alive one count the client's time only
    (ClientTimer): a stall of the server is not the client's."""

    _tls: dict[str, Any] | None = None
    _header_bytes = 0
    _refused = False
    _read_timer: ClientTimer | None = None
    _keep_alive_stalled = 0.0
    # Set by TLSConnectionGate: called once when the connection is gone (it counts open connections).
    on_connection_lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = _tls_extension(transport)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)
        if self.on_connection_lost is not None:
            self.on_connection_lost()
            self.on_connection_lost = None

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = ClientTimer(self.loop, REQUEST_READ_SECONDS, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.flow is not None and self.flow.read_paused:
            # uvicorn stopped reading (a body the app has not taken yet, a pipelined request): not the client.
            self._arm_read_timer()
            return
        if not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        self._keep_alive_stalled = loop_stalls(self.loop).total()  # uvicorn arms its keep-alive timer now
        super().on_response_complete()

    def timeout_keep_alive_handler(self) -> None:
        stalled = loop_stalls(self.loop).total()
        owed = stalled - self._keep_alive_stalled
        if owed > STALL_TOLERANCE_SECONDS:  # the next request may be waiting unread: give the stall back
            self._keep_alive_stalled = stalled
            self.timeout_keep_alive_task = self.loop.call_later(owed, self.timeout_keep_alive_handler)
            return
        super().timeout_keep_alive_handler()

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


FILES_KEPT_FREE = 128  # open files a serving process keeps for itself (policies, outbox, spool, logs, pipes)
_HANDSHAKE_BACKSTOP_SECONDS = 120.0  # asyncio's own handshake timer, behind the gate's (which knows stalls)


class ConnectionCounts:
    """The connections of this serving process that came through TLSConnectionGate (one server a process)."""

    def __init__(self) -> None:
        self.open = 0
        self.refused = 0
        self.handshake_failures = 0
        self._refused_unlogged = 0
        self._logged_at = -math.inf

    def refuse(self, limit: int) -> None:
        self.refused += 1
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= 10.0:
            log.warning("%d open connections, the limit (--max-connections): %d new connections closed at once "
                        "since the last warning (repeats within 10 s are not logged)", limit,
                        self._refused_unlogged)
            self._logged_at, self._refused_unlogged = now, 0


CONNECTIONS = ConnectionCounts()


class ServingConfig(uvicorn.Config):
    """uvicorn's configuration for `webhook serve`: its TLS context goes to TLSConnectionGate (the `http`
    protocol) instead of to the listening server, with the handshake timeout and the connection limit."""

    def __init__(self, app: Any, *, tls_handshake_timeout: float, max_connections: int, **options: Any) -> None:
        super().__init__(app, **options)
        self.tls_handshake_timeout = tls_handshake_timeout
        self.max_connections = max_connections
        self.tls_context: ssl.SSLContext | None = None
        self._connection_limit: int | None = None

    def load(self) -> None:
        super().load()
        if self.ssl is not None:  # the gate starts TLS itself, after counting the connection and with a timer
            self.tls_context, self.ssl = self.ssl, None

    def connection_limit(self) -> int:
        """--max-connections, lowered to what the open files limit allows (read once, after the app raised it)."""
        if self._connection_limit is None:
            limit = self.max_connections
            files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            if files != resource.RLIM_INFINITY and files - FILES_KEPT_FREE < limit:
                limit = max(1, files - FILES_KEPT_FREE)
                log.warning("--max-connections %d lowered to %d: the open files limit is %d", self.max_connections,
                            limit, files)
            self._connection_limit = limit
        return self._connection_limit


_HANDSHAKES: set[asyncio.Task[None]] = set()


class TLSConnectionGate(asyncio.Protocol):
    """The protocol `webhook serve` listens with (uvicorn's `http=`): a connection is counted from its accept and
    closed at once past the connection limit, before any TLS work; otherwise its TLS handshake runs under a
    ClientTimer of `tls_handshake_timeout` and the connection then goes to TLSHttpToolsProtocol."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not isinstance(config, ServingConfig):
            raise TypeError("TLSConnectionGate needs a ServingConfig")
        if not config.loaded:
            config.load()
        self.config, self.server_state, self.app_state = config, server_state, app_state
        self.loop = _loop or asyncio.get_event_loop()
        self._counted = False
        self._lost = False
        self._tls_started = False
        self._raw: list[bytes] = []  # read before start_tls took the connection over: the start of the ClientHello
        self._early: list[bytes] = []  # decrypted before start_tls returned (asyncio's own TLS does that)
        self._tcp: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)
        limit = self.config.connection_limit()
        if CONNECTIONS.open >= limit:
            CONNECTIONS.refuse(limit)
            tcp.abort()
            return
        CONNECTIONS.open += 1
        self._counted = True
        self._tcp = tcp
        timer = ClientTimer(self.loop, self.config.tls_handshake_timeout, tcp.abort)
        task = self.loop.create_task(self._hand_over(tcp, timer))
        _HANDSHAKES.add(task)
        task.add_done_callback(_HANDSHAKES.discard)

    async def _hand_over(self, tcp: asyncio.Transport, timer: ClientTimer) -> None:
        assert self.config.tls_context is not None
        if self._raw:  # runs right after start_tls has put its TLS protocol in, before the socket is read again
            self.loop.call_soon(self._pass_on_raw, tcp)
        self._tls_started = True
        try:
            tls = await self.loop.start_tls(tcp, self, self.config.tls_context, server_side=True,
                                            ssl_handshake_timeout=max(_HANDSHAKE_BACKSTOP_SECONDS,
                                                                      2 * self.config.tls_handshake_timeout))
        except Exception:  # timed out, not TLS, a failed handshake, a reset: start_tls has closed the connection
            tls = None
        except BaseException:
            self.release()
            raise
        finally:
            timer.cancel()
        if tls is None or self._lost or tls.is_closing():
            CONNECTIONS.handshake_failures += 1
            if not tcp.is_closing():
                tcp.abort()
            self.release()
            return
        protocol = TLSHttpToolsProtocol(config=self.config, server_state=self.server_state, app_state=self.app_state,
                                        _loop=self.loop)
        protocol.on_connection_lost = self.release
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        if self._early:
            protocol.data_received(b"".join(self._early))
            self._early.clear()

    def _pass_on_raw(self, tcp: asyncio.Transport) -> None:
        """The bytes read before start_tls, to its TLS protocol (a buffered protocol in uvloop and asyncio)."""
        data = b"".join(self._raw)
        self._raw.clear()
        tls_protocol: Any = tcp.get_protocol()
        if not hasattr(tls_protocol, "get_buffer"):
            tls_protocol.data_received(data)
            return
        while data:
            buffer = tls_protocol.get_buffer(len(data))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            tls_protocol.buffer_updated(size)
            data = data[size:]

    def release(self) -> None:
        if self._counted:
            self._counted = False
            CONNECTIONS.open -= 1

    def data_received(self, data: bytes) -> None:
        if self._tls_started:
            self._early.append(data)
            return
        # The loop may read the socket before the handshake task has run: keep the bytes for start_tls's protocol.
        self._raw.append(data)
        if self._tcp is not None:
            self._tcp.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.release()
