"""The Kubernetes CEL library over plain values, part 4: IP addresses and CIDRs as tagged maps, over
webhook.cel.kubernetes.network (Go's net/netip parser and messages); string(), jsonpatch.escapeKey."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from webhook.cel.kubernetes.network import CIDR, IP, parse_cidr, parse_ip
from webhook.cel.kubernetes.text import escape_key as escape_json_pointer
from webhook.policies.k8s_values import K8sError, _string, _tagged, _untag

T = TypeVar("T")


def _ip(value: Any) -> IP:
    return parse_ip(_untag(value, "ip")[1])


def _cidr(value: Any) -> CIDR:
    return parse_cidr(_untag(value, "cidr")[1])


def ip(value: Any) -> dict[str, str]:
    """ip(string), or the address of a CIDR: cidr(...).ip()."""
    return _tagged("ip", str(IP(_cidr(value).address) if isinstance(value, dict) else parse_ip(_string(value))))


def cidr(text: Any) -> dict[str, str]:
    return _tagged("cidr", str(parse_cidr(_string(text))))


def masked(value: Any) -> dict[str, str]:
    return _tagged("cidr", str(_cidr(value).masked()))


def contains_ip(value: Any, other: Any) -> bool:
    return _cidr(value).contains_ip(parse_ip(other) if isinstance(other, str) else _ip(other))


def contains_cidr(value: Any, other: Any) -> bool:
    return _cidr(value).contains_cidr(parse_cidr(other) if isinstance(other, str) else _cidr(other))


def ip_test(test: Callable[[IP], T]) -> Callable[[Any], T]:
    """A property of an IP (family, isLoopback, ...) of a tagged IP."""
    return lambda value: test(_ip(value))


def ip_is_canonical(text: Any) -> bool:
    return str(parse_ip(_string(text))) == str(text)


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
    return escape_json_pointer(_string(key))
