"""The Kubernetes CEL library (k8s.io/apiserver/pkg/cel/library, and cel-go's sets extension that Kubernetes turns
on) as overloads with Kubernetes' own ids: one table that gives both the runtime's `FunctionTable` and the type
checker's declarations (webhook.cel.kubernetes.declarations)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import webhook.cel.kubernetes.authz as authz
from webhook.cel import functions
from webhook.cel.functions import FunctionTable, Kind
from webhook.cel.kubernetes.formats import FORMATS, Format, named_format, validate
from webhook.cel.kubernetes.images import Image, is_image, parse_image
from webhook.cel.kubernetes.lists import (
    index_of,
    is_sorted,
    last_index_of,
    list_max,
    list_min,
    list_sum,
    sets_contains,
    sets_equivalent,
    sets_intersects,
)
from webhook.cel.kubernetes.network import CIDR, IP, parse_cidr, parse_ip
from webhook.cel.kubernetes.quantity import Quantity, parse_quantity
from webhook.cel.kubernetes.semver import Semver, semver
from webhook.cel.kubernetes.text import escape_key, find, find_all
from webhook.cel.kubernetes.urls import URL, is_url, parse_url
from webhook.cel.values import CelError, CelType, Duration, UInt


@dataclass(frozen=True, slots=True)
class Declared:
    """One overload: the function's name, Kubernetes' overload id, the call style, the CEL types of the parameters
    (receiver first) and of the result, and the implementation over the runtime's values."""

    function: str
    id: str
    member: bool
    parameters: tuple[str, ...]
    result: str
    impl: Callable[..., Any]


# The opaque types, by the CEL name Kubernetes gives them, and the type values those names denote (`net.IP` in
# `type(x) == net.IP`).
OPAQUE_TYPES: dict[str, type] = {cls.cel_type.name: cls for cls in (Quantity, Semver, URL, IP, CIDR, Format, Image,
                                                                    *authz.OPAQUE_TYPES)}
TYPE_NAMES: dict[str, CelType] = {name: CelType(name) for name in OPAQUE_TYPES}
_SCALAR_KINDS: dict[str, Kind] = {
    "string": functions.STRING, "int": functions.INT, "uint": functions.UINT, "double": functions.DOUBLE,
    "bool": functions.BOOL, "bytes": functions.BYTES, "duration": functions.DURATION,
    "timestamp": functions.TIMESTAMP, "dyn": functions.ANY,
}


def kind_of(type_name: str) -> Kind:
    """The runtime Kind that a declared parameter type admits."""
    if type_name in _SCALAR_KINDS:
        return _SCALAR_KINDS[type_name]
    if type_name.startswith("list("):
        return functions.LIST
    if type_name.startswith("map("):
        return functions.MAP
    if type_name.startswith("optional_type("):
        return functions.OPTIONAL
    return (OPAQUE_TYPES[type_name],)


def _function(name: str, *overloads: tuple[str, bool, tuple[str, ...], str, Callable[..., Any]]) -> list[Declared]:
    return [Declared(name, overload_id, member, parameters, result, impl)
            for overload_id, member, parameters, result, impl in overloads]


def _valid(parse: Callable[..., Any]) -> Callable[..., bool]:
    """is<Type>(...): true when parsing does not fail."""
    def check(*args: Any) -> bool:
        try:
            parse(*args)
        except CelError:
            return False
        return True
    return check


def _as_integer(quantity: Quantity) -> int:
    value = quantity.as_int64()
    if value is None:
        raise CelError("cannot convert value to integer")
    return value


def _ip_is_canonical(value: str) -> bool:
    return str(parse_ip(value)) == value


Q, SV, B, I, S = "kubernetes.Quantity", "kubernetes.Semver", "bool", "int", "string"  # noqa: E741

QUANTITY = [
    *_function("quantity", ("string_to_quantity", False, (S,), Q, parse_quantity)),
    *_function("isQuantity", ("is_quantity_string", False, (S,), B, _valid(parse_quantity))),
    *_function("sign", ("quantity_sign", False, (Q,), I, Quantity.sign)),
    *_function("isGreaterThan", ("quantity_is_greater_than", True, (Q, Q), B, lambda a, b: a.compare(b) == 1)),
    *_function("isLessThan", ("quantity_is_less_than", True, (Q, Q), B, lambda a, b: a.compare(b) == -1)),
    *_function("compareTo", ("quantity_compare_to", True, (Q, Q), I, Quantity.compare)),
    *_function("asApproximateFloat", ("quantity_get_float", True, (Q,), "double", Quantity.approximate_float)),
    *_function("asInteger", ("quantity_get_int", True, (Q,), I, _as_integer)),
    *_function("isInteger", ("quantity_is_integer", True, (Q,), B, lambda q: q.as_int64() is not None)),
    *_function("add", ("quantity_add", True, (Q, Q), Q, Quantity.add),
               ("quantity_add_int", True, (Q, I), Q, lambda q, n: q.add(Quantity.from_int64(n, 0)))),
    *_function("sub", ("quantity_sub", True, (Q, Q), Q, Quantity.sub),
               ("quantity_sub_int", True, (Q, I), Q, lambda q, n: q.sub(Quantity.from_int64(n, 0)))),
]

SEMVER = [
    *_function("semver", ("string_to_semver", False, (S,), SV, semver),
               ("string_bool_to_semver", False, (S, B), SV, semver)),
    *_function("isSemver", ("is_semver_string", False, (S,), B, _valid(semver)),
               ("is_semver_string_bool", False, (S, B), B, _valid(semver))),
    *_function("isGreaterThan", ("semver_is_greater_than", True, (SV, SV), B, lambda a, b: a.compare(b) == 1)),
    *_function("isLessThan", ("semver_is_less_than", True, (SV, SV), B, lambda a, b: a.compare(b) == -1)),
    *_function("compareTo", ("semver_compare_to", True, (SV, SV), I, Semver.compare)),
    # Go converts the uint64 to int64: a number past 2^63-1 comes out negative.
    *_function("major", ("semver_major", True, (SV,), I, lambda v: _wrap(v.major))),
    *_function("minor", ("semver_minor", True, (SV,), I, lambda v: _wrap(v.minor))),
    *_function("patch", ("semver_patch", True, (SV,), I, lambda v: _wrap(v.patch))),
]


def _wrap(number: int) -> int:
    return number - 2**64 if number >= 2**63 else number


REGEX = [
    *_function("find", ("string_find_string", True, (S, S), S, find)),
    *_function("findAll", ("string_find_all_string", True, (S, S), "list(string)", find_all),
               ("string_find_all_string_int", True, (S, S, I), "list(string)", find_all)),
]

U = "kubernetes.URL"
URLS = [
    *_function("url", ("string_to_url", False, (S,), U, parse_url)),
    *_function("isURL", ("is_url_string", False, (S,), B, is_url)),
    *_function("getScheme", ("url_get_scheme", True, (U,), S, lambda u: u.scheme)),
    *_function("getHost", ("url_get_host", True, (U,), S, lambda u: u.host)),
    *_function("getHostname", ("url_get_hostname", True, (U,), S, lambda u: u.hostname)),
    *_function("getPort", ("url_get_port", True, (U,), S, lambda u: u.port)),
    *_function("getEscapedPath", ("url_get_escaped_path", True, (U,), S, URL.escaped_path)),
    *_function("getQuery", ("url_get_query", True, (U,), "map(string, list(string))", URL.query)),
]

IPT, CT = "net.IP", "net.CIDR"
NETWORK = [
    *_function("ip", ("string_to_ip", False, (S,), IPT, parse_ip),
               ("cidr_ip", True, (CT,), IPT, lambda c: IP(c.address))),
    *_function("isIP", ("is_ip", False, (S,), B, _valid(parse_ip))),
    *_function("ip.isCanonical", ("ip_is_canonical", False, (S,), B, _ip_is_canonical)),
    *_function("family", ("ip_family", True, (IPT,), I, lambda ip: ip.family)),
    *_function("isUnspecified", ("ip_is_unspecified", True, (IPT,), B, lambda ip: ip.address.is_unspecified)),
    *_function("isLoopback", ("ip_is_loopback", True, (IPT,), B, lambda ip: ip.address.is_loopback)),
    *_function("isLinkLocalMulticast", ("ip_is_link_local_multicast", True, (IPT,), B, IP.is_link_local_multicast)),
    *_function("isLinkLocalUnicast", ("ip_is_link_local_unicast", True, (IPT,), B, IP.is_link_local_unicast)),
    *_function("isGlobalUnicast", ("ip_is_global_unicast", True, (IPT,), B, IP.is_global_unicast)),
    *_function("string", ("ip_to_string", False, (IPT,), S, str), ("cidr_to_string", False, (CT,), S, str)),
    *_function("cidr", ("string_to_cidr", False, (S,), CT, parse_cidr)),
    *_function("isCIDR", ("is_cidr", False, (S,), B, _valid(parse_cidr))),
    # Kubernetes answers `no such overload` for a string that is not an IP (its string overload feeds the error value
    # to the IP overload); this answers with the parse error, which says what is wrong.
    *_function("containsIP", ("cidr_contains_ip_string", True, (CT, S), B, lambda c, s: c.contains_ip(parse_ip(s))),
               ("cidr_contains_ip_ip", True, (CT, IPT), B, CIDR.contains_ip)),
    *_function("containsCIDR",
               ("cidr_contains_cidr_string", True, (CT, S), B, lambda c, s: c.contains_cidr(parse_cidr(s))),
               ("cidr_contains_cidr", True, (CT, CT), B, CIDR.contains_cidr)),
    *_function("masked", ("cidr_masked", True, (CT,), CT, CIDR.masked)),
    *_function("prefixLength", ("cidr_prefix_length", True, (CT,), I, lambda c: c.bits)),
]

# Kubernetes declares isSorted, min and max once per comparable element type and sum once per summable one.
_COMPARABLE = ("int", "uint", "double", "bool", "duration", "timestamp", "string", "bytes")
_SUM_ZEROS: dict[str, Any] = {"int": 0, "uint": UInt(0), "double": 0.0, "duration": Duration(0)}
LISTS = [
    *_function("isSorted", *((f"list_{t}_is_sorted_bool", True, (f"list({t})",), B, is_sorted)
                             for t in _COMPARABLE)),
    *_function("sum", *((f"list_{t}_sum_{t}", True, (f"list({t})",), t, list_sum(zero))
                        for t, zero in _SUM_ZEROS.items())),
    *_function("max", *((f"list_{t}_max_{t}", True, (f"list({t})",), t, list_max) for t in _COMPARABLE)),
    *_function("min", *((f"list_{t}_min_{t}", True, (f"list({t})",), t, list_min) for t in _COMPARABLE)),
    # list(A) and A in Kubernetes; cel-expr-python's declarations have no type parameters (see declarations.py).
    *_function("indexOf", ("list_a_index_of_int", True, ("list(dyn)", "dyn"), I, index_of)),
    *_function("lastIndexOf", ("list_a_last_index_of_int", True, ("list(dyn)", "dyn"), I, last_index_of)),
    *_function("sets.contains", ("sets_contains_list_list", False, ("list(dyn)", "list(dyn)"), B,
                                 sets_contains)),
    *_function("sets.equivalent", ("sets_equivalent_list_list", False, ("list(dyn)", "list(dyn)"), B,
                                   sets_equivalent)),
    *_function("sets.intersects", ("sets_intersects_list_list", False, ("list(dyn)", "list(dyn)"), B,
                                   sets_intersects)),
    *_function("jsonpatch.escapeKey", ("string_jsonpatch_escapeKey_string", False, (S,), S, escape_key)),
]

# Kubernetes 1.31. The results are optional(list(string)) and optional(kubernetes.NamedFormat) in Kubernetes; they
# are declared dyn because an optional type built through cel-expr-python's Python API does not unify with the
# optional library's own declarations (hasValue, value, orValue would not type-check on it).
F = "kubernetes.NamedFormat"
FORMAT = [
    *_function("validate", ("format-validate", True, (F, S), "dyn", validate)),
    *_function("format.named", ("format-named", False, (S,), "dyn", named_format)),
    *(declared for name, named in FORMATS.items()
      for declared in _function(f"format.{name}", (f"format.{name}", False, (), F, lambda named=named: named))),
]

IM = "kubernetes.Image"
IMAGE = [  # Kubernetes 1.33
    *_function("image", ("string_to_image", False, (S,), IM, parse_image)),
    *_function("isImage", ("is_image_string", False, (S,), B, is_image)),
    *_function("containsDigest", ("image_contains_digest", True, (IM,), B, lambda image: bool(image.digest))),
    *_function("registry", ("image_registry", True, (IM,), S, lambda image: image.registry)),
    *_function("repository", ("image_repository", True, (IM,), S, lambda image: image.repository)),
    *_function("identifier", ("image_identifier", True, (IM,), S, lambda image: image.identifier)),
    *_function("tag", ("image_tag", True, (IM,), S, lambda image: image.tag)),
    *_function("digest", ("image_digest", True, (IM,), S, lambda image: image.digest)),
]

AZ, PC, GC, RC, DC = authz.AUTHORIZER, authz.PATH_CHECK, authz.GROUP_CHECK, authz.RESOURCE_CHECK, authz.DECISION
AUTHZ = [  # Kubernetes 1.27; fieldSelector and labelSelector (the AuthzSelectors library) 1.31
    *_function("path", ("authorizer_path", True, (AZ, S), PC, authz.path)),
    *_function("group", ("authorizer_group", True, (AZ, S), GC, authz.group)),
    *_function("serviceAccount", ("authorizer_serviceaccount", True, (AZ, S, S), AZ, authz.service_account)),
    *_function("resource", ("groupcheck_resource", True, (GC, S), RC, authz.resource)),
    *_function("subresource", ("resourcecheck_subresource", True, (RC, S), RC, authz.subresource)),
    *_function("namespace", ("resourcecheck_namespace", True, (RC, S), RC, authz.namespace)),
    *_function("name", ("resourcecheck_name", True, (RC, S), RC, authz.name)),
    *_function("check", ("pathcheck_check", True, (PC, S), DC, authz.check_path),
               ("resourcecheck_check", True, (RC, S), DC, authz.check_resource)),
    *_function("errored", ("decision_errored", True, (DC,), B, lambda decision: bool(decision.error))),
    *_function("error", ("decision_error", True, (DC,), S, lambda decision: decision.error)),
    *_function("allowed", ("decision_allowed", True, (DC,), B, lambda decision: decision.allowed)),
    *_function("reason", ("decision_reason", True, (DC,), S, lambda decision: decision.reason)),
    *_function("fieldSelector", ("authorizer_fieldselector", True, (RC, S), RC, authz.field_selector)),
    *_function("labelSelector", ("authorizer_labelselector", True, (RC, S), RC, authz.label_selector)),
]

OVERLOADS: list[Declared] = [*QUANTITY, *SEMVER, *REGEX, *URLS, *NETWORK, *LISTS, *FORMAT, *IMAGE, *AUTHZ]

# Kubernetes versions this library can match (`--kubernetes-version`), and the first version whose base environment
# has each overload (staging/src/k8s.io/apiserver/pkg/cel/environment/base.go): everything not listed is in 1.30,
# the oldest supported (URLs, regex, lists 1.0; authz 1.27; quantity 1.28; sets 1.29; IP and CIDR 1.30).
OLDEST_VERSION, NEWEST_VERSION = (1, 30), (1, 33)
INTRODUCED: dict[str, tuple[int, int]] = {
    **{overload.id: (1, 31) for overload in FORMAT},
    "authorizer_fieldselector": (1, 31), "authorizer_labelselector": (1, 31),  # the AuthzSelectors library
    **{overload.id: (1, 33) for overload in (*SEMVER, *IMAGE)},
}


def overloads_of(version: tuple[int, int]) -> list[Declared]:
    """The overloads a Kubernetes API server of `version` declares."""
    return [overload for overload in OVERLOADS if INTRODUCED.get(overload.id, OLDEST_VERSION) <= version]


def function_table(overloads: Iterable[Declared]) -> FunctionTable:
    """A FunctionTable of the given overloads, each taking the runtime kinds of its declared parameter types."""
    table = FunctionTable()
    for overload in overloads:
        table.add(overload.function, overload.id, [kind_of(p) for p in overload.parameters], overload.impl)
    return table
