"""The Kubernetes CEL library over plain values, part 3: regular expressions (RE2) and URLs as tagged maps, over
webhook.cel.kubernetes (text and urls: Go's net/url parser and messages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webhook.cel.kubernetes import text
from webhook.cel.kubernetes.text import compile_regex
from webhook.cel.kubernetes.urls import URL, is_url, parse_url
from webhook.policies.k8s_values import _int, _string, _tagged, _untag


def find(value: Any, pattern: Any) -> str:
    return text.find(_string(value), _string(pattern))


def find_all(value: Any, pattern: Any, limit: Any = -1) -> list[str]:
    return text.find_all(_string(value), _string(pattern), _int(limit))


def matches(value: Any, pattern: Any) -> bool:
    return text.matches(_string(value), _string(pattern))


def _url(value: Any) -> URL:
    return parse_url(_untag(value, "url")[1])


def url(value: Any) -> dict[str, str]:
    parse_url(_string(value))
    return _tagged("url", value)


def is_url_text(value: Any) -> bool:
    return is_url(_string(value))


def url_part(name: str) -> Callable[[Any], str]:
    """A getter of a tagged URL: getScheme, getHost, getHostname, getPort."""
    return lambda value: str(getattr(_url(value), name))


def url_escaped_path(value: Any) -> str:
    return _url(value).escaped_path()


def url_query(value: Any) -> dict[str, list[str]]:
    return _url(value).query()


__all__ = ["compile_regex", "find", "find_all", "is_url_text", "matches", "url", "url_escaped_path", "url_part",
           "url_query"]
