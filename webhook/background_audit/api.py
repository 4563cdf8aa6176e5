"""Requests to the Kubernetes API for the audit, through the `kubernetes` client's ApiClient (its configuration,
authentication and TLS) with plain JSON bodies: objects stay the dicts policies see (the typed models would
rename fields to snake_case and cost a conversion per object).

Lists go in pages (`limit`/`continue`); a transient error (429, 5xx, a lost connection) is retried with backoff
on the same page, so a pass resumes where it was; 410 Gone on a `continue` token (expired) is `Expired`, for the
caller to list that resource again from the start. Every request waits for a token bucket (`qps`, `burst`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from webhook.reflector import backoff

TRANSIENT = frozenset({0, 429, 500, 502, 503, 504})  # 0: no answer (connection refused, reset, timeout)


class ApiError(Exception):
    """The API server refused a request (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status


class Expired(ApiError):
    """410 Gone: a list's `continue` token expired (compaction); list again from the start."""


class Stopped(Exception):
    """The caller asked to stop (shutdown, or leadership lost) while a request waited."""


class RateLimiter:
    """A token bucket: at most `burst` requests at once, then `qps` per second."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps, self.burst = qps, max(1, burst)
        self.tokens, self.last = float(self.burst), time.monotonic()
        self.lock = threading.Lock()

    def delay(self, cost: int = 1) -> float:
        """Take `cost` tokens; how long to wait before using them."""
        if self.qps <= 0:
            return 0.0
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.qps)
            self.last = now
            self.tokens -= cost
            return 0.0 if self.tokens >= 0 else -self.tokens / self.qps


class KubeApi:
    """JSON requests with retries and a rate limit; `requests` counts what was sent (retries included)."""

    def __init__(self, api_client: Any, *, qps: float = 10.0, burst: int = 20, attempts: int = 5,
                 backoff_seconds: tuple[float, float] = (0.1, 5.0), timeout: float = 60.0,
                 stop: threading.Event | None = None) -> None:
        self.api_client = api_client
        self.limiter = RateLimiter(qps, burst)
        self.attempts, self.backoff_seconds, self.timeout = attempts, backoff_seconds, timeout
        self.stop = stop or threading.Event()
        self.requests = 0

    def pause(self, seconds: float) -> None:
        """Sleep, or raise Stopped as soon as `stop` is set."""
        if seconds > 0 and self.stop.wait(seconds):
            raise Stopped

    def _send(self, method: str, path: str, query: Sequence[tuple[str, Any]], body: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.pause(self.limiter.delay())
        self.requests += 1
        try:
            serialized = self.api_client.param_serialize(method, path, query_params=list(query),
                                                         header_params=headers, body=body,
                                                         auth_settings=["BearerToken"])
            response = self.api_client.call_api(*serialized, _request_timeout=self.timeout)
            response.read()
        except ApiException as error:
            raise ApiError(int(error.status or 0), str(error.reason)) from error
        except (HTTPError, OSError) as error:
            raise ApiError(0, f"{type(error).__name__}: {error}") from error
        data = response.data or b"{}"
        if not 200 <= response.status <= 299:
            raise _refusal(int(response.status), data)
        return orjson.loads(data)

    def request(self, method: str, path: str, *, query: Sequence[tuple[str, Any]] = (), body: Any = None,
                retry: bool = True) -> Any:
        """The decoded answer; transient errors are retried `attempts` times with backoff, then raised."""
        attempt = 0
        while True:
            try:
                return self._send(method, path, query, body)
            except ApiError as error:
                attempt += 1
                if not retry or error.status not in TRANSIENT or attempt >= self.attempts:
                    raise
                self.pause(backoff(attempt - 1, *self.backoff_seconds))

    def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when there is none (404)."""
        try:
            found: dict[str, Any] = self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return found

    def pages(self, path: str, *, limit: int, label_selector: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """The items of a list, one page at a time (never the whole list in memory)."""
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", limit)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            try:
                page = self.request("GET", path, query=query)
            except ApiError as error:
                if error.status == 410:
                    raise Expired(410, f"the list of {path} expired: {error}") from error
                raise
            yield list(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return


def _refusal(status: int, data: bytes) -> ApiError:
    try:
        message = str(orjson.loads(data).get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        message = data[:200].decode(errors="replace")
    return (Expired if status == 410 else ApiError)(status, message)
