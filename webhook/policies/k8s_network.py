"""The Kubernetes CEL library, part 4: IP addresses and CIDRs, string(), jsonpatch.escapeKey."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from webhook.policies.k8s_values import K8sError, _string, _tagged, _untag

# --- IP and CIDR (Go's net/netip, without zones or IPv4-mapped IPv6 addresses) ----------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=1024)
def parse_ip(text: str) -> Address:
    address, zone, _ = text.partition("%")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise K8sError(f'IP Address "{text}" parse error during conversion from string: '
                       f'ParseAddr("{text}"): unable to parse IP') from None
    if zone:
        raise K8sError(f'IP address "{text}" with zone value is not allowed')
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        raise K8sError(f'IPv4-mapped IPv6 address "{text}" is not allowed')
    return parsed


@lru_cache(maxsize=1024)
def parse_cidr(text: str) -> tuple[Address, int]:
    prefix = "network address parse error during conversion from string: "
    address, slash, bits = text.rpartition("/")
    try:
        ip = parse_ip(address) if slash else None
    except K8sError as error:
        raise K8sError(prefix + str(error)) from None
    if ip is None or not re.fullmatch(r"0|[1-9][0-9]{0,2}", bits) or int(bits) > ip.max_prefixlen:
        raise K8sError(f'{prefix}{prefix}netip.ParsePrefix("{text}"): bad prefix')
    return ip, int(bits)


def _ip(value: Any) -> Address:
    return parse_ip(_untag(value, "ip")[1])


def _cidr(value: Any) -> tuple[Address, int]:
    return parse_cidr(_untag(value, "cidr")[1])


def ip(value: Any) -> dict[str, str]:
    """ip(string), or the address of a CIDR: cidr(...).ip()."""
    return _tagged("ip", str(_cidr(value)[0] if isinstance(value, dict) else parse_ip(_string(value))))


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address, bits = _cidr(value)
    return ipaddress.ip_network(f"{address}/{bits}", strict=False)


def _contains(value: Any, other: Any, parse: Callable[[str], Any], kind: str) -> bool:
    address, bits = parse(other) if isinstance(other, str) else parse(_untag(other, kind)[1])
    network = _network(value)
    return address.version == network.version and bits >= network.prefixlen and address in network


def _validates(parse: Callable[..., Any]) -> Callable[..., bool]:
    """is<Type>(string): true when <type>(string) would not fail; a non-string is still no such overload."""
    def check(text: Any, *options: Any) -> bool:
        try:
            parse(_string(text), *options)
        except K8sError as error:
            if str(error) == "no such overload":
                raise
            return False
        return True
    return check


def to_string(value: Any) -> str:
    """string(ip) and string(cidr); other tagged values have no string form in Kubernetes."""
    return _untag(value, "ip", "cidr")[1]


def escape_key(key: Any) -> str:
    """jsonpatch.escapeKey: a map key as a JSON Pointer (RFC 6901) path segment."""
    return _string(key).replace("~", "~0").replace("/", "~1")



def _ip_prefix_is(value: Any, ipv4: str, mask: int, ipv6: int) -> bool:
    address = _ip(value)
    if address.version == 4:
        return address in ipaddress.ip_network(ipv4)
    return int(address) >> 112 & mask == ipv6


def _is_global_unicast(address: Address) -> bool:
    if address.version == 4 and str(address) in ("0.0.0.0", "255.255.255.255"):  # noqa: S104 - not a bind address
        return False
    return not (address.is_unspecified or address.is_loopback or address.is_multicast
                or (address.version == 4 and address in ipaddress.ip_network("169.254.0.0/16"))
                or (address.version == 6 and int(address) >> 118 == 0xFE80 >> 6))


