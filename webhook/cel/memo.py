"""Caches of the Kubernetes library's parsed arguments, bounded in bytes and not only in entries."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

Parsed = TypeVar("Parsed")
SHORT_TEXT = 256  # quantities, IPs, CIDRs, URLs, semvers and image references of real objects are shorter


def short_text_cache(maxsize: int) -> Callable[[Callable[[str], Parsed]], Callable[[str], Parsed]]:
    """`functools.lru_cache(maxsize)` for texts up to SHORT_TEXT characters. A longer text, which request data
    can make as long as the body allows, is parsed each time instead of kept: a cache keyed by request strings
    and bounded by count held ~7.9 MiB per 4 MB review of 500 KB quantity strings."""

    def decorate(function: Callable[[str], Parsed]) -> Callable[[str], Parsed]:
        cached = functools.lru_cache(maxsize=maxsize)(function)

        @functools.wraps(function)
        def call(text: str) -> Parsed:
            if len(text) <= SHORT_TEXT:
                return cached(text)
            return function(text)

        call.cache_info = cached.cache_info  # type: ignore[attr-defined]
        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call

    return decorate
