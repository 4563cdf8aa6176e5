"""The Kubernetes CEL library, part 3: regular expressions and URLs."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes

import re2

from webhook.policies.k8s_values import K8sError, _int, _string, _tagged, _untag

# --- Regex: RE2 itself (google-re2), as Kubernetes' Go regexp is RE2 -------------------------------------------
# Linear-time matching matters here: a backtracking engine would let an object's author stall the server with
# a crafted string against an innocent-looking pattern, in C code that no deadline can interrupt.


def _illegal(detail: str) -> K8sError:
    return K8sError(f"Illegal regex: error parsing regexp: {detail}")


@lru_cache(maxsize=1)
def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


@lru_cache(maxsize=512)
def compile_regex(pattern: str) -> Any:
    """A compiled RE2 pattern; raises K8sError with RE2's complaint for what RE2 refuses."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as error:
        detail = error.args[0] if error.args else error
        raise _illegal(detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)) from None


def find(text: Any, pattern: Any) -> str:
    found = compile_regex(_string(pattern)).search(_string(text))
    return found.group(0) if found else ""


def find_all(text: Any, pattern: Any, limit: Any = -1) -> list[str]:
    """Go's Regexp.FindAllString: an empty match right after the previous match is skipped."""
    regex, text, limit = compile_regex(_string(pattern)), _string(text), _int(limit)
    found: list[str] = []
    pos, previous_end = 0, -1
    while pos <= len(text) and (limit < 0 or len(found) < limit):
        match = regex.search(text, pos)
        if match is None:
            break
        if match.end() == pos:
            if match.start() != previous_end:
                found.append("")
            pos += 1
        else:
            found.append(match.group(0))
            pos = match.end()
        previous_end = match.end()
    return found


def matches(text: Any, pattern: Any) -> bool:
    return compile_regex(_string(pattern)).search(_string(text)) is not None


# --- URL (Go's net/url ParseRequestURI, then Parse) -------------------------------------------------------------

_HOST_OK = set("!$&'()*+,;=:[]<>\"-_.~")
_PATH_OK = set("-_.~$&+,/:;=@")
_VALID_ENCODED = set("!$&'()*+,;=:@[]%-_.~/")
_USERINFO_OK = set("-._:~!$&'()*+,;=%@")


def _unescape(text: str, host: bool = False) -> str:
    for index in [i for i, c in enumerate(text) if c == "%"]:
        escape = text[index:index + 3]
        if not re.fullmatch(r"%[0-9A-Fa-f]{2}", escape) or (host and escape[1] < "8" and escape != "%25"):
            raise K8sError(f'invalid URL escape "{escape}"')
    if host and any(ord(c) < 0x80 and not c.isalnum() and c not in _HOST_OK and c != "%" for c in text):
        bad = next(c for c in text if ord(c) < 0x80 and not c.isalnum() and c not in _HOST_OK and c != "%")
        raise K8sError(f'invalid character "{bad}" in host name')
    return unquote_to_bytes(text).decode("utf-8", "replace")


def _escape_path(path: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in _PATH_OK) else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in path)


def _valid_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all("0" <= c <= "9" for c in port[1:]))


@lru_cache(maxsize=1024)
def parse_url(text: str, request: bool = True) -> tuple[str, str, str, str]:
    """(scheme, host, raw path, raw query) as net/url parses it; raises K8sError with the parse error."""
    try:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise K8sError("net/url: invalid control character in URL")
        rest = text if request else text.partition("#")[0]
        if request and not rest:
            raise K8sError("empty url")
        if rest == "*":
            return "", "", "*", ""
        scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", rest)
        if rest.startswith(":"):
            raise K8sError("missing protocol scheme")
        scheme_text = scheme.group(0)[:-1].lower() if scheme else ""
        rest = rest[scheme.end():] if scheme else rest
        if rest.endswith("?") and rest.count("?") == 1:
            rest, query = rest[:-1], ""
        else:
            rest, _, query = rest.partition("?")
        if not rest.startswith("/"):
            if scheme_text:
                return scheme_text, "", "", query
            if request:
                raise K8sError("invalid URI for request")
            if ":" in rest.partition("/")[0]:
                raise K8sError("first path segment in URL cannot contain colon")
        host = ""
        if (scheme_text or (not request and not rest.startswith("///"))) and rest.startswith("//"):
            authority, slash, path = rest[2:].partition("/")
            rest = slash + path
            userinfo, at, hostport = authority.rpartition("@")
            if hostport.startswith("["):
                close = hostport.rfind("]")
                if close < 0:
                    raise K8sError("missing ']' in host")
                if not _valid_port(hostport[close + 1:]):
                    raise K8sError(f'invalid port "{hostport[close + 1:]}" after host')
            elif ":" in hostport and not _valid_port(hostport[hostport.rfind(":"):]):
                raise K8sError(f'invalid port "{hostport[hostport.rfind(":"):]}" after host')
            host = _unescape(hostport, host=True)
            if at and not all(c.isascii() and (c.isalnum() or c in _USERINFO_OK) for c in userinfo):
                raise K8sError("net/url: invalid userinfo")
            _unescape(userinfo)
        _unescape(rest)
        if not request:
            _unescape(text.partition("#")[2])
        return scheme_text, host, rest, query
    except K8sError as error:
        raise K8sError(f'URL parse error during conversion from string: parse "{text}": {error}') from None


def _url(value: Any) -> tuple[str, str, str, str]:
    return parse_url(_untag(value, "url")[1], request=False)


def url(text: Any) -> dict[str, str]:
    parse_url(_string(text))
    parse_url(text, request=False)
    return _tagged("url", text)


def _split_host(host: str) -> tuple[str, str]:
    colon = host.rfind(":")
    name, port = (host[:colon], host[colon + 1:]) if colon >= 0 and _valid_port(host[colon:]) else (host, "")
    return (name[1:-1] if name.startswith("[") and name.endswith("]") else name), port


def url_escaped_path(value: Any) -> str:
    raw = _url(value)[2]
    if raw == "*" or all(c.isascii() and (c.isalnum() or c in _VALID_ENCODED) for c in raw):
        return raw
    return _escape_path(_unescape(raw))


def url_query(value: Any) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for part in _url(value)[3].split("&"):
        if not part or ";" in part:
            continue
        key, _, item = part.partition("=")
        try:
            key, item = (_unescape(s.replace("+", " ")) for s in (key, item))
        except K8sError:
            continue
        query.setdefault(key, []).append(item)
    return query


