"""The Kubernetes CEL library (k8s.io/apiserver/pkg/cel/library and cel-go's ext.Sets) for the two external engines,
over plain values; the parsing and arithmetic are webhook.cel.kubernetes's (the builtin engine's library).

Both engines call these functions with plain Python values (str, int, float, bool, list, dict, None) and get plain
values back. Values of the library's own types are tagged maps, `{"__k8s": KIND, "v": CANONICAL}`, so that either
engine can carry them and CEL `==` compares them as Kubernetes does: `quantity("1000m") == quantity("1")`.
Errors are raised as `K8sError` with the message the API server gives. docs/cel-library.md describes the differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webhook.cel.kubernetes.network import IP, parse_cidr, parse_ip
from webhook.cel.kubernetes.quantity import parse_quantity
from webhook.policies.k8s_network import _cidr as _tagged_cidr
from webhook.policies.k8s_network import (
    _validates,
    cidr,
    contains_cidr,
    contains_ip,
    escape_key,
    ip,
    ip_is_canonical,
    ip_test,
    masked,
    to_string,
)
from webhook.policies.k8s_quantity import (
    _q_add,
    _q_int,
    _semver_part,
    compare_to,
    quantity,
    quantity_as_float,
    quantity_as_integer,
    quantity_sign,
    semver,
)
from webhook.policies.k8s_text import (
    compile_regex,
    find,
    find_all,
    is_url_text,
    matches,
    url,
    url_escaped_path,
    url_part,
    url_query,
)
from webhook.policies.k8s_values import (
    TAG,
    K8sError,
    _extreme,
    _index,
    _list,
    is_sorted,
    list_sum,
    sets_contains,
    substring,
)

# --- The declarations: name -> (implementation, overloads as (member?, parameter kinds, result kind)) ----------

S, I, B, D, M, L, Y = "string", "int", "bool", "double", "map", "list", "dyn"  # noqa: E741
Overloads = tuple[tuple[bool, tuple[str, ...], str], ...]
_M1: Overloads = ((True, (M,), S),)
LIBRARY: dict[str, tuple[Callable[..., Any], Overloads]] = {
    "quantity": (quantity, ((False, (S,), M),)),
    "isQuantity": (_validates(parse_quantity), ((False, (S,), B),)),
    "sign": (quantity_sign, ((True, (M,), I), (False, (M,), I))),
    "asInteger": (quantity_as_integer, ((True, (M,), I),)),
    "isInteger": (lambda q: _q_int(q) is not None, ((True, (M,), B),)),
    "asApproximateFloat": (quantity_as_float, ((True, (M,), D),)),
    "add": (_q_add, ((True, (M, M), M), (True, (M, I), M))),
    "sub": (lambda q, other: _q_add(q, other, -1), ((True, (M, M), M), (True, (M, I), M))),
    "compareTo": (compare_to, ((True, (M, M), I),)),
    "isGreaterThan": (lambda a, b: compare_to(a, b) == 1, ((True, (M, M), B),)),
    "isLessThan": (lambda a, b: compare_to(a, b) == -1, ((True, (M, M), B),)),
    "semver": (semver, ((False, (S,), M), (False, (S, B), M))),
    "isSemver": (_validates(semver), ((False, (S,), B), (False, (S, B), B))),
    "major": (_semver_part("semver_major"), ((True, (M,), I),)),
    "minor": (_semver_part("semver_minor"), ((True, (M,), I),)),
    "patch": (_semver_part("semver_patch"), ((True, (M,), I),)),
    "find": (find, ((True, (S, S), S),)),
    "findAll": (find_all, ((True, (S, S), L), (True, (S, S, I), L))),
    "url": (url, ((False, (S,), M),)),
    "isURL": (is_url_text, ((False, (S,), B),)),
    "getScheme": (url_part("scheme"), _M1),
    "getHost": (url_part("host"), _M1),
    "getHostname": (url_part("hostname"), _M1),
    "getPort": (url_part("port"), _M1),
    "getEscapedPath": (url_escaped_path, _M1),
    "getQuery": (url_query, ((True, (M,), Y),)),
    "ip": (ip, ((False, (S,), M), (True, (M,), M))),
    "isIP": (_validates(parse_ip), ((False, (S,), B),)),
    "ip.isCanonical": (ip_is_canonical, ((False, (S,), B),)),
    "family": (ip_test(lambda value: value.family), ((True, (M,), I),)),
    "isUnspecified": (ip_test(lambda value: value.address.is_unspecified), ((True, (M,), B),)),
    "isLoopback": (ip_test(lambda value: value.address.is_loopback), ((True, (M,), B),)),
    "isLinkLocalMulticast": (ip_test(IP.is_link_local_multicast), ((True, (M,), B),)),
    "isLinkLocalUnicast": (ip_test(IP.is_link_local_unicast), ((True, (M,), B),)),
    "isGlobalUnicast": (ip_test(IP.is_global_unicast), ((True, (M,), B),)),
    "cidr": (cidr, ((False, (S,), M),)),
    "isCIDR": (_validates(parse_cidr), ((False, (S,), B),)),
    "containsIP": (contains_ip, ((True, (M, S), B), (True, (M, M), B))),
    "containsCIDR": (contains_cidr, ((True, (M, S), B), (True, (M, M), B))),
    "masked": (masked, ((True, (M,), M),)),
    "prefixLength": (lambda value: _tagged_cidr(value).bits, ((True, (M,), I),)),
    "string": (to_string, ((False, (M,), S),)),
    "isSorted": (is_sorted, ((True, (L,), B),)),
    "sum": (list_sum, ((True, (L,), Y),)),
    "min": (lambda items: _extreme("min", items, 1), ((True, (L,), Y),)),
    "max": (lambda items: _extreme("max", items, -1), ((True, (L,), Y),)),
    "indexOf": (_index, ((True, (L, Y), I),)),
    "lastIndexOf": (lambda items, item: _index(items, item, last=True), ((True, (L, Y), I),)),
    "sets.contains": (sets_contains, ((False, (L, L), B),)),
    "sets.equivalent": (lambda a, b: sets_contains(a, b) and sets_contains(b, a), ((False, (L, L), B),)),
    "sets.intersects": (lambda a, b: any(sets_contains(b, [x]) for x in _list(a)), ((False, (L, L), B),)),
    "jsonpatch.escapeKey": (escape_key, ((False, (S,), S),)),
    # cel-expr-python's own substring(start, end) refuses end == size(); its engine rewrites `.substring(`
    # to this (same length, so error columns stay put).
    "subString": (substring, ((True, (S, I), S), (True, (S, I, I), S))),
}



def cel_expr_extension(cel: Any) -> Any:
    """The library as a cel-expr-python extension; `cel` is the cel_expr_python.cel module."""
    kinds = {S: cel.Type.STRING, I: cel.Type.INT, B: cel.Type.BOOL, D: cel.Type.DOUBLE, Y: cel.Type.DYN,
             M: cel.Type.Map(cel.Type.STRING, cel.Type.DYN), L: cel.Type.List(cel.Type.DYN)}
    declarations = [
        cel.FunctionDecl(name, [
            cel.Overload(f"k8s_{name.replace('.', '_')}_{n}", kinds[result], [kinds[kind] for kind in parameters],
                         is_member=member, impl=impl)
            for n, (member, parameters, result) in enumerate(overloads)])
        for name, (impl, overloads) in LIBRARY.items()]
    return cel.CelExtension("kubernetes", declarations)


__all__ = ["LIBRARY", "TAG", "K8sError", "cel_expr_extension", "compile_regex", "matches", "substring", "to_string"]
