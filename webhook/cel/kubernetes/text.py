"""The library's string functions: find and findAll on RE2 (Go's regexp is RE2), and jsonpatch.escapeKey.

Linear-time matching matters here: a backtracking engine would let an object's author stall the server with a crafted
string against an innocent-looking pattern, in C code that no deadline can interrupt.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

from webhook.cel.memo import short_text_cache
from webhook.cel.values import CelError


@functools.lru_cache(maxsize=1)
def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


@short_text_cache(512)
def compile_regex(pattern: str) -> Any:
    """A compiled RE2 pattern; raises CelError `Illegal regex: ...` with RE2's complaint for what RE2 refuses."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as error:
        detail = error.args[0] if error.args else error
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        raise CelError(f"Illegal regex: error parsing regexp: {text}") from None


def find(text: str, pattern: str) -> str:
    """Regexp.FindString: the leftmost match, or ""."""
    found = compile_regex(pattern).search(text)
    return str(found.group(0)) if found else ""


def find_all(text: str, pattern: str, limit: int = -1) -> list[str]:
    """Regexp.FindAllString: at most `limit` matches (all when negative); an empty match right after the previous
    match is skipped, as Go does."""
    regex = compile_regex(pattern)
    found: list[str] = []
    position, previous_end = 0, -1
    while position <= len(text) and (limit < 0 or len(found) < limit):
        match = regex.search(text, position)
        if match is None:
            break
        if match.end() == position:
            if match.start() != previous_end:
                found.append("")
            position += 1
        else:
            found.append(match.group(0))
            position = match.end()
        previous_end = match.end()
    return found


def matches(text: str, pattern: str) -> bool:
    """CEL's matches() on RE2: the pattern matches somewhere in the text."""
    return compile_regex(pattern).search(text) is not None


def escape_key(key: str) -> str:
    """jsonpatch.escapeKey: a map key as a JSON Pointer (RFC 6901) path segment (`~` as `~0`, `/` as `~1`)."""
    return key.replace("~", "~0").replace("/", "~1")
