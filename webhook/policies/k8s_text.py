"""The Kubernetes CEL library, part 3: regular expressions and URLs."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes

from webhook.policies.k8s_values import K8sError, _int, _string, _tagged, _untag

# --- Regex: Go's RE2 syntax on Python's re, refusing what RE2 has not and what Python cannot do ---------------

_RE2_ESCAPES = set("afnrtvdDsSwWbBAzx") | {chr(c) for c in range(128) if not chr(c).isalnum()}
_REPEAT = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")
_POSIX = {"alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ", "cntrl": "\\x00-\\x1f\\x7f",
          "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
          "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f"}


def _illegal(detail: str) -> K8sError:
    return K8sError(f"Illegal regex: error parsing regexp: {detail}")


def _unsupported(construct: str) -> K8sError:
    return K8sError(f"Illegal regex: {construct} is RE2 syntax that this webhook's regex engine does not support")


def _translate_regex(pattern: str) -> str:
    out: list[str] = []
    multiline = bool(re.search(r"\(\?[a-zA-Z-]*m", pattern))
    i, in_class, repeated = 0, False, False
    while i < len(pattern):
        c, following = pattern[i], pattern[i + 1] if i + 1 < len(pattern) else ""
        piece, was_repeat = c, False
        if c == "\\":
            if not following:
                raise _illegal("trailing backslash at end of expression: ``")
            if following in "pPQEC" or pattern.startswith("x{", i + 1):
                raise _unsupported(f"`\\{following}`")
            if following not in _RE2_ESCAPES:
                raise _illegal(f"invalid escape sequence: `\\{following}`")
            piece = "\\Z" if following == "z" else c + following
            i += 1
        elif in_class:
            if c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2:end] if end > 0 else ""
                if name not in _POSIX:
                    raise _illegal(f"invalid character class range: `{pattern[i:end + 2]}`")
                piece, i = _POSIX[name], end + 1
            elif c == "]" and out[-1] not in ("[", "[^"):
                in_class = False
            elif c in "[&~|" or (c == "-" and following == "-"):
                piece = "\\" + c
        elif c == "[":
            in_class, piece = True, "[^" if following == "^" else "["
            i += 1 if following == "^" else 0
        elif c == "(" and following == "?":
            group = re.match(r"\(\?(P?<[A-Za-z0-9_]+>|[imsU-]*[:)])", pattern[i:])
            if group is None:
                raise _illegal(f"invalid or unsupported Perl syntax: `{pattern[i:i + 3]}`")
            if "U" in group.group(1):
                raise _unsupported("the U (ungreedy) flag")
            piece = "(?P" + group.group(1).removeprefix("P") if "<" in group.group(1) else group.group(0)
            i += len(group.group(0)) - 1
        elif c in "*+?" or (c == "{" and _REPEAT.match(pattern, i)):
            if repeated and c != "?":
                raise _illegal(f"invalid nested repetition operator: `{pattern[i - 1:i + 1]}`")
            repeat = _REPEAT.match(pattern, i) if c == "{" else None
            if repeat and not repeat.group(1):
                piece = "\\{"
            elif repeat:
                if any(int(n or 0) > 1000 for n in (repeat.group(1), repeat.group(3))):
                    raise _illegal(f"invalid repeat count: `{repeat.group(0)}`")
                piece, i = repeat.group(0), repeat.end() - 1
            was_repeat = piece != "\\{" and not (c == "?" and repeated)
        elif c == "$" and not multiline:
            piece = "\\Z"
        out.append(piece)
        repeated = was_repeat
        i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def compile_regex(pattern: str) -> re.Pattern[str]:
    """A pattern in RE2 syntax as a Python regex with RE2's meaning; raises K8sError for what cannot be matched."""
    try:
        return re.compile(_translate_regex(pattern), re.ASCII)
    except re.error as error:
        raise _illegal(str(error)) from None


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


