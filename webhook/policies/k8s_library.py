"""The Kubernetes CEL library (k8s.io/apiserver/pkg/cel/library and cel-go's ext.Sets), once, over plain values.

Both engines call these functions with plain Python values (str, int, float, bool, list, dict, None) and get plain
values back. Values of the library's own types are tagged maps, `{"__k8s": KIND, "v": CANONICAL}`, so that either
engine can carry them and CEL `==` compares them as Kubernetes does: `quantity("1000m") == quantity("1")`.
Errors are raised as `K8sError` with the message the API server gives. docs/cel-library.md describes the differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webhook.policies.k8s_network import (
    _cidr,
    _contains,
    _ip,
    _ip_prefix_is,
    _is_global_unicast,
    _network,
    _validates,
    escape_key,
    ip,
    parse_cidr,
    parse_ip,
    to_string,
)
from webhook.policies.k8s_quantity import (
    _q,
    _q_add,
    _q_int,
    _semver_part,
    compare_to,
    parse_quantity,
    quantity,
    quantity_as_float,
    quantity_as_integer,
    semver,
)
from webhook.policies.k8s_text import (
    _split_host,
    _url,
    compile_regex,
    find,
    find_all,
    matches,
    parse_url,
    url,
    url_escaped_path,
    url_query,
)
from webhook.policies.k8s_values import (
    TAG,
    K8sError,
    _extreme,
    _index,
    _list,
    _string,
    _tagged,
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
    "sign": (lambda q: (_q(q)[0] > 0) - (_q(q)[0] < 0), ((True, (M,), I), (False, (M,), I))),
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
    "major": (_semver_part(0), ((True, (M,), I),)),
    "minor": (_semver_part(1), ((True, (M,), I),)),
    "patch": (_semver_part(2), ((True, (M,), I),)),
    "find": (find, ((True, (S, S), S),)),
    "findAll": (find_all, ((True, (S, S), L), (True, (S, S, I), L))),
    "url": (url, ((False, (S,), M),)),
    "isURL": (_validates(parse_url), ((False, (S,), B),)),
    "getScheme": (lambda u: _url(u)[0], _M1),
    "getHost": (lambda u: _url(u)[1], _M1),
    "getHostname": (lambda u: _split_host(_url(u)[1])[0], _M1),
    "getPort": (lambda u: _split_host(_url(u)[1])[1], _M1),
    "getEscapedPath": (url_escaped_path, _M1),
    "getQuery": (url_query, ((True, (M,), Y),)),
    "ip": (ip, ((False, (S,), M), (True, (M,), M))),
    "isIP": (_validates(parse_ip), ((False, (S,), B),)),
    "ip.isCanonical": (lambda text: str(parse_ip(_string(text))) == text, ((False, (S,), B),)),
    "family": (lambda value: _ip(value).version, ((True, (M,), I),)),
    "isUnspecified": (lambda value: _ip(value).is_unspecified, ((True, (M,), B),)),
    "isLoopback": (lambda value: _ip(value).is_loopback, ((True, (M,), B),)),
    "isLinkLocalMulticast": (lambda value: _ip_prefix_is(value, "224.0.0.0/24", 0xFF0F, 0xFF02), ((True, (M,), B),)),
    "isLinkLocalUnicast": (lambda value: _ip_prefix_is(value, "169.254.0.0/16", 0xFFC0, 0xFE80), ((True, (M,), B),)),
    "isGlobalUnicast": (lambda value: _is_global_unicast(_ip(value)), ((True, (M,), B),)),
    "cidr": (lambda text: _tagged("cidr", "{}/{}".format(*parse_cidr(_string(text)))), ((False, (S,), M),)),
    "isCIDR": (_validates(parse_cidr), ((False, (S,), B),)),
    "containsIP": (lambda c, other: _contains(c, other, lambda t: (parse_ip(t), 128), "ip"),
                   ((True, (M, S), B), (True, (M, M), B))),
    "containsCIDR": (lambda c, other: _contains(c, other, parse_cidr, "cidr"), ((True, (M, S), B), (True, (M, M), B))),
    "masked": (lambda value: _tagged("cidr", str(_network(value))), ((True, (M,), M),)),
    "prefixLength": (lambda value: _cidr(value)[1], ((True, (M,), I),)),
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
