"""IP addresses and CIDRs as the Kubernetes CEL library reads them: Go's net/netip parser and its messages, without
zones or IPv4-mapped IPv6 addresses."""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar

from webhook.cel.kubernetes.gotext import go_quote
from webhook.cel.memo import short_text_cache
from webhook.cel.values import INT64_MAX, CelError, CelType

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_HEX = "0123456789abcdefABCDEF"
_BITS = re.compile(r"[0-9]|[1-9][0-9]+")


class _AddrError(Exception):
    """netip's parseAddrError: the input, what is wrong, and the unparsed rest where it went wrong."""

    def __init__(self, text: str, message: str, at: str = "") -> None:
        super().__init__(message)
        self.text, self.message, self.at = text, message, at

    def __str__(self) -> str:
        at = f" (at {go_quote(self.at)})" if self.at else ""
        return f"ParseAddr({go_quote(self.text)}): {self.message}{at}"


def _ipv4_fields(text: str, start: int, end: int) -> list[int]:
    """parseIPv4Fields: the four octets of text[start:end]; errors name the whole of `text`."""
    part = text[start:end]
    fields: list[int] = []
    value, digits = 0, 0
    for index, char in enumerate(part):
        if "0" <= char <= "9":
            if digits == 1 and value == 0:
                raise _AddrError(text, "IPv4 field has octet with leading zero")
            value, digits = value * 10 + int(char), digits + 1
            if value > 255:
                raise _AddrError(text, "IPv4 field has value >255")
        elif char == ".":
            if index == 0 or index == len(part) - 1 or part[index - 1] == ".":
                raise _AddrError(text, "IPv4 field must have at least one digit", part[index:])
            if len(fields) == 3:
                raise _AddrError(text, "IPv4 address too long")
            fields.append(value)
            value, digits = 0, 0
        else:
            raise _AddrError(text, "unexpected character", part[index:])
    if len(fields) < 3:
        raise _AddrError(text, "IPv4 address too short")
    return [*fields, value]


def _ipv6(text: str) -> tuple[int, str]:
    """parseIPv6: the address as a 128-bit integer, and its zone."""
    rest, percent, zone = text.partition("%")
    if percent and not zone:
        raise _AddrError(text, "zone must be a non-empty string")
    groups: list[int] = []  # 16-bit groups
    ellipsis = -1
    if rest.startswith("::"):
        ellipsis, rest = 0, rest[2:]
        if not rest:
            return 0, zone
    while len(groups) < 8:
        offset, value = 0, 0
        while offset < len(rest) and rest[offset] in _HEX:
            value = value * 16 + int(rest[offset], 16)
            if offset > 3:
                raise _AddrError(text, "each colon-separated field must have at most 4 hex digits", rest)
            if value > 0xFFFF:
                raise _AddrError(text, "IPv6 field has value >=2^16", rest)
            offset += 1
        if offset == 0:
            raise _AddrError(text, "each colon-separated field must have at least one digit", rest)
        if offset < len(rest) and rest[offset] == ".":
            if ellipsis < 0 and len(groups) != 6:
                raise _AddrError(text, "embedded IPv4 address must replace the final 2 fields of the address", rest)
            if len(groups) + 2 > 8:
                raise _AddrError(text, "too many hex fields to fit an embedded IPv4 at the end of the address", rest)
            end = len(text) - (len(zone) + 1 if percent else 0)
            a, b, c, d = _ipv4_fields(text, end - len(rest), end)
            groups += [a << 8 | b, c << 8 | d]
            rest = ""
            break
        groups.append(value)
        rest = rest[offset:]
        if not rest:
            break
        if rest[0] != ":":
            raise _AddrError(text, "unexpected character, want colon", rest)
        if len(rest) == 1:
            raise _AddrError(text, "colon must be followed by more characters", rest)
        rest = rest[1:]
        if rest[0] == ":":
            if ellipsis >= 0:
                raise _AddrError(text, "multiple :: in address", rest)
            ellipsis, rest = len(groups), rest[1:]
            if not rest:
                break
    if rest:
        raise _AddrError(text, "trailing garbage after address", rest)
    if len(groups) < 8:
        if ellipsis < 0:
            raise _AddrError(text, "address string too short")
        groups = groups[:ellipsis] + [0] * (8 - len(groups)) + groups[ellipsis:]
    elif ellipsis >= 0:
        raise _AddrError(text, "the :: must expand to at least one field of zeros")
    number = 0
    for group in groups:
        number = number << 16 | group
    return number, zone


def _parse_addr(text: str) -> tuple[Address, str]:
    """netip.ParseAddr: the address and its zone; raises _AddrError."""
    for char in text:
        if char == ".":
            a, b, c, d = _ipv4_fields(text, 0, len(text))
            return ipaddress.IPv4Address(bytes((a, b, c, d))), ""
        if char == ":":
            number, zone = _ipv6(text)
            return ipaddress.IPv6Address(number), zone
        if char == "%":
            raise _AddrError(text, "missing IPv6 address")
    raise _AddrError(text, "unable to parse IP")


class IP:
    """An IP address (CEL type `net.IP`): IPv4 or IPv6, never zoned, never IPv4-mapped."""

    __slots__ = ("address",)
    cel_type: ClassVar[CelType] = CelType("net.IP")

    def __init__(self, address: Address) -> None:
        self.address = address

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IP) and other.address == self.address

    def __hash__(self) -> int:
        return hash(("ip", self.address))

    def __str__(self) -> str:
        return str(self.address)

    def __repr__(self) -> str:
        return f"ip({str(self)!r})"

    @property
    def family(self) -> int:
        return self.address.version

    def is_link_local_multicast(self) -> bool:
        if self.address.version == 4:
            return self.address.packed[:3] == b"\xe0\x00\x00"
        return int(self.address) >> 112 & 0xFF0F == 0xFF02

    def is_link_local_unicast(self) -> bool:
        if self.address.version == 4:
            return self.address.packed[:2] == b"\xa9\xfe"
        return int(self.address) >> 112 & 0xFFC0 == 0xFE80

    def is_global_unicast(self) -> bool:
        """Addr.IsGlobalUnicast: private ranges count; unspecified, broadcast, loopback, multicast, link-local don't."""
        if self.address.version == 4 and int(self.address) in (0, 0xFFFFFFFF):
            return False
        return not (self.address.is_unspecified or self.address.is_loopback or self.address.is_multicast
                    or self.is_link_local_unicast())


class CIDR:
    """A network prefix (CEL type `net.CIDR`): an address with its prefix length, host bits kept as written."""

    __slots__ = ("address", "bits")
    cel_type: ClassVar[CelType] = CelType("net.CIDR")

    def __init__(self, address: Address, bits: int) -> None:
        self.address, self.bits = address, bits

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CIDR) and (other.address, other.bits) == (self.address, self.bits)

    def __hash__(self) -> int:
        return hash(("cidr", self.address, self.bits))

    def __str__(self) -> str:
        return f"{self.address}/{self.bits}"

    def __repr__(self) -> str:
        return f"cidr({str(self)!r})"

    def masked(self) -> CIDR:
        """Prefix.Masked: the host bits cleared."""
        return CIDR(ipaddress.ip_network(f"{self.address}/{self.bits}", strict=False).network_address, self.bits)

    def contains_ip(self, ip: IP) -> bool:
        """Prefix.Contains: same family, same leading `bits` bits."""
        shift = self.address.max_prefixlen - self.bits
        return ip.address.version == self.address.version and (
            int(ip.address) >> shift == int(self.address) >> shift)

    def contains_cidr(self, other: CIDR) -> bool:
        """The other prefix lies within this one (the fixed containsCIDR of Kubernetes 1.33)."""
        return other.bits >= self.bits and self.contains_ip(IP(other.address))


@short_text_cache(1024)
def parse_ip(text: str) -> IP:
    """The library's parseIPAddr; raises CelError with the library's message."""
    try:
        address, zone = _parse_addr(text)
    except _AddrError as error:
        raise CelError(f"IP Address {go_quote(text)} parse error during conversion from string: {error}") from None
    if zone:
        raise CelError(f"IP address {go_quote(text)} with zone value is not allowed")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise CelError(f"IPv4-mapped IPv6 address {go_quote(text)} is not allowed")
    return IP(address)


_CIDR_PREFIX = "network address parse error during conversion from string: "


def _parse_prefix(text: str) -> CIDR:
    """netip.ParsePrefix; raises ValueError with its message."""
    slash = text.rfind("/")
    if slash < 0:
        raise ValueError(f"netip.ParsePrefix({go_quote(text)}): no '/'")
    try:
        address, zone = _parse_addr(text[:slash])
    except _AddrError as error:
        raise ValueError(f"netip.ParsePrefix({go_quote(text)}): {error}") from None
    if zone:
        raise ValueError(f"netip.ParsePrefix({go_quote(text)}): IPv6 zones cannot be present in a prefix")
    bits = text[slash + 1:]
    # strconv.Atoi's range, after netip has refused a leading 0, + or -
    if not _BITS.fullmatch(bits) or len(bits) > 19 or int(bits) > INT64_MAX:
        raise ValueError(f"netip.ParsePrefix({go_quote(text)}): bad bits after slash: {go_quote(bits)}")
    if not 0 <= int(bits) <= address.max_prefixlen:
        raise ValueError(f"netip.ParsePrefix({go_quote(text)}): prefix length out of range")
    return CIDR(address, int(bits))


@short_text_cache(1024)
def parse_cidr(text: str) -> CIDR:
    """cidr(<string>): the library's parseCIDR, its message prefixed once more by stringToCIDR, as Kubernetes does."""
    try:
        cidr = _parse_prefix(text)
    except ValueError as error:
        raise CelError(_CIDR_PREFIX + _CIDR_PREFIX + str(error)) from None
    if isinstance(cidr.address, ipaddress.IPv6Address) and cidr.address.ipv4_mapped is not None:
        raise CelError(f"{_CIDR_PREFIX}IPv4-mapped IPv6 address {go_quote(text)} is not allowed")
    return cidr
