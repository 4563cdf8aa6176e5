"""URLs as the Kubernetes CEL library reads them: Go's net/url (ParseRequestURI to validate, then Parse), with its
escaping rules and error messages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from webhook.cel.kubernetes.gotext import go_quote
from webhook.cel.memo import short_text_cache
from webhook.cel.values import CelError, CelType

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")
_ALPHANUMERIC = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HOST_ALLOWED = frozenset(b"!$&'()*+,;=:[]<>\"")
_RESERVED = frozenset(b"$&+,/:;=?@")
_VALID_ENCODED = frozenset(b"!$&'()*+,;=:@[]%")
_USERINFO = frozenset(b"-._:~!$&'()*+,;=%@") | _ALPHANUMERIC


def _should_escape(byte: int, mode: str) -> bool:
    """net/url shouldEscape for one byte in a mode: host, zone, path, userinfo, query or fragment."""
    if byte in _ALPHANUMERIC:
        return False
    if mode in ("host", "zone") and byte in _HOST_ALLOWED:
        return False
    if byte in b"-_.~":
        return False
    if byte in _RESERVED:
        if mode == "path":
            return byte == ord("?")
        if mode == "userinfo":
            return byte in b"@/?:"
        if mode == "query":
            return True
        if mode == "fragment":
            return False
    return not (mode == "fragment" and byte in b"!()*")


def escape(data: bytes, mode: str) -> str:
    """net/url escape: each byte that `mode` does not allow as %XX (upper case); a space in a query as `+`."""
    out = []
    for byte in data:
        if not _should_escape(byte, mode):
            out.append(chr(byte))
        elif byte == 0x20 and mode == "query":
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _valid_encoded(text: str, mode: str) -> bool:
    return all(byte in _VALID_ENCODED or not _should_escape(byte, mode) for byte in text.encode())


def unescape(text: str, mode: str) -> bytes:
    """net/url unescape: the bytes the text stands for; raises ValueError with Go's message."""
    data = text.encode()
    for index, byte in enumerate(data):
        if byte == ord("%"):
            escaped = data[index:index + 3]
            if not _ESCAPE.fullmatch(escaped):
                raise ValueError(f"invalid URL escape {go_quote(escaped.decode(errors='replace'))}")
            value = int(escaped[1:], 16)
            if mode == "host" and value < 0x80 and escaped != b"%25":
                raise ValueError(f"invalid URL escape {go_quote(escaped.decode())}")
            if mode == "zone" and escaped != b"%25" and value != 0x20 and _should_escape(value, "host"):
                raise ValueError(f"invalid URL escape {go_quote(escaped.decode())}")
        elif mode in ("host", "zone") and byte < 0x80 and _should_escape(byte, mode):
            raise ValueError(f"invalid character {go_quote(chr(byte))} in host name")
    if mode == "query":
        data = data.replace(b"+", b" ")
    return _ESCAPE.sub(lambda match: bytes((int(match.group(0)[1:], 16),)), data)


def _valid_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all("0" <= char <= "9" for char in port[1:]))


def _parse_host(host: str) -> bytes:
    if host.startswith("["):
        close = host.rfind("]")
        if close < 0:
            raise ValueError("missing ']' in host")
        if not _valid_port(host[close + 1:]):
            raise ValueError(f"invalid port {go_quote(host[close + 1:])} after host")
        zone = host.find("%25", 0, close)
        if zone >= 0:
            return unescape(host[:zone], "host") + unescape(host[zone:close], "zone") + unescape(host[close:], "host")
    elif ":" in host and not _valid_port(host[host.rfind(":"):]):
        raise ValueError(f"invalid port {go_quote(host[host.rfind(':'):])} after host")
    return unescape(host, "host")


@dataclass(frozen=True, slots=True)
class _Parts:
    scheme: str = ""
    opaque: str = ""
    user: tuple[bytes, bytes | None] | None = None
    host: bytes = b""
    raw_path: str = ""
    omit_host: bool = False
    force_query: bool = False
    raw_query: str = ""


def _parse(text: str, *, request: bool) -> _Parts:
    """net/url parse (without the fragment); raises ValueError with Go's message."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise ValueError("net/url: invalid control character in URL")
    if request and not text:
        raise ValueError("empty url")
    if text == "*":
        return _Parts(raw_path="*")
    if text.startswith(":"):
        raise ValueError("missing protocol scheme")
    match = _SCHEME.match(text)
    scheme, rest = (match.group(0)[:-1].lower(), text[match.end():]) if match else ("", text)
    force_query = rest.endswith("?") and rest.count("?") == 1
    rest, _, query = (rest[:-1], "", "") if force_query else rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return _Parts(scheme=scheme, opaque=rest, force_query=force_query, raw_query=query)
        if request:
            raise ValueError("invalid URI for request")
        if ":" in rest.partition("/")[0]:
            raise ValueError("first path segment in URL cannot contain colon")
    user: tuple[bytes, bytes | None] | None = None
    host, omit_host = b"", False
    if (scheme or (not request and not rest.startswith("///"))) and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        userinfo, at, hostport = authority.rpartition("@")
        host = _parse_host(hostport)
        if at:
            if not all(byte in _USERINFO for byte in userinfo.encode()):
                raise ValueError("net/url: invalid userinfo")
            name, colon, password = userinfo.partition(":")
            user = (unescape(name, "userinfo"), unescape(password, "userinfo") if colon else None)
    elif scheme and rest.startswith("/"):
        omit_host = True
    unescape(rest, "path")
    return _Parts(scheme=scheme, user=user, host=host, raw_path=rest, omit_host=omit_host, force_query=force_query,
                  raw_query=query)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class URL:
    """A URL (CEL type `kubernetes.URL`), as url(<string>) accepts it; equal when Go's URL.String() is."""

    __slots__ = ("_fragment", "_parts", "text")
    cel_type: ClassVar[CelType] = CelType("kubernetes.URL")

    def __init__(self, text: str, parts: _Parts, fragment: str) -> None:
        self.text, self._parts, self._fragment = text, parts, fragment

    def __eq__(self, other: object) -> bool:
        return isinstance(other, URL) and other.go_string() == self.go_string()

    def __hash__(self) -> int:
        return hash(("url", self.go_string()))

    def __repr__(self) -> str:
        return f"url({self.text!r})"

    @property
    def scheme(self) -> str:
        return self._parts.scheme

    @property
    def host(self) -> str:
        return _text(self._parts.host)

    def _split_host(self) -> tuple[str, str]:
        """splitHostPort: (hostname without IPv6 brackets, port)."""
        host, port = self.host, ""
        colon = host.rfind(":")
        if colon >= 0 and _valid_port(host[colon:]):
            host, port = host[:colon], host[colon + 1:]
        return (host[1:-1] if host.startswith("[") and host.endswith("]") else host), port

    @property
    def hostname(self) -> str:
        return self._split_host()[0]

    @property
    def port(self) -> str:
        return self._split_host()[1]

    def escaped_path(self) -> str:
        """URL.EscapedPath: the path as written where that is validly escaped, else Go's escaping of it."""
        raw = self._parts.raw_path
        if raw == "*" or _valid_encoded(raw, "path"):
            return raw
        return escape(unescape(raw, "path"), "path")

    def query(self) -> dict[str, list[str]]:
        """URL.Query: values by key, in order; pairs with a `;` or a bad escape are skipped, as Go does."""
        values: dict[str, list[str]] = {}
        for pair in self._parts.raw_query.split("&"):
            if not pair or ";" in pair:
                continue
            key, _, value = pair.partition("=")
            try:
                values.setdefault(_text(unescape(key, "query")), []).append(_text(unescape(value, "query")))
            except ValueError:
                continue
        return values

    def go_string(self) -> str:
        """URL.String: the URL reassembled from its parsed parts."""
        parts, out = self._parts, ""
        if parts.scheme:
            out += parts.scheme + ":"
        if parts.opaque:
            out += parts.opaque
        else:
            if (parts.scheme or parts.host or parts.user is not None) and not (
                    parts.omit_host and not parts.host and parts.user is None):
                if parts.host or parts.raw_path or parts.user is not None:
                    out += "//"
                if parts.user is not None:
                    name, password = parts.user
                    out += escape(name, "userinfo")
                    out += (":" + escape(password, "userinfo") if password is not None else "") + "@"
                out += escape(parts.host, "host")
            path = self.escaped_path()
            if path and path[0] != "/" and parts.host:
                out += "/"
            if not out and ":" in path.partition("/")[0]:
                out += "./"
            out += path
        if parts.force_query or parts.raw_query:
            out += "?" + parts.raw_query
        if self._fragment:
            fragment = self._fragment
            out += "#" + (fragment if _valid_encoded(fragment, "fragment") else
                          escape(unescape(fragment, "fragment"), "fragment"))
        return out


_PREFIX = "URL parse error during conversion from string: "


def request_uri_error(text: str) -> str | None:
    """The error of url.ParseRequestURI(text) as Go prints it (`parse "x": invalid URI for request`), or None."""
    try:
        _parse(text, request=True)
    except ValueError as error:
        return f"parse {go_quote(text)}: {error}"
    return None


def is_url(text: str) -> bool:
    """isURL(<string>): url.ParseRequestURI accepts it."""
    return request_uri_error(text) is None


@short_text_cache(1024)
def parse_url(text: str) -> URL:
    """url(<string>): checked with url.ParseRequestURI, then read with url.Parse; raises CelError."""
    error_text = request_uri_error(text)
    if error_text is not None:
        raise CelError(_PREFIX + error_text)
    try:
        return parse_reference(text)
    except ValueError as error:
        raise CelError(_PREFIX + str(error)) from None


def parse_reference(text: str) -> URL:
    """url.Parse: a URL or a relative reference; raises ValueError with Go's message (`parse "x": ...`)."""
    before, hash_sign, fragment = text.partition("#")
    try:
        parts = _parse(before, request=False)
    except ValueError as error:
        raise ValueError(f"parse {go_quote(before)}: {error}") from None
    try:
        unescape(fragment, "fragment")
    except ValueError as error:
        raise ValueError(f"parse {go_quote(text)}: {error}") from None
    return URL(text, parts, fragment if hash_sign else "")
