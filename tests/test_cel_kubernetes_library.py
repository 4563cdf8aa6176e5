"""The Kubernetes CEL library of our runtime (webhook.cel.kubernetes), called directly by overload id.

Cases come from the doc comments and tests of k8s.io/apiserver/pkg/cel/library (quantity.go, semverlib.go, urls.go,
ip.go, cidr.go, lists.go, regex.go, jsonpatch.go, format.go, image.go, authz.go) and cel-go's ext/sets.go, with
Kubernetes' own error texts. Each case also carries the CEL text of its doc example: cel-expr-python's type checker,
given the library's declarations, must resolve that text to the case's overload id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_encoders, ext_math, ext_optional, ext_strings
from google.protobuf import any_pb2

from webhook.cel import kubernetes
from webhook.cel.kubernetes import CIDR, FUNCTIONS, IP, URL, Format, Image, Quantity, Semver
from webhook.cel.kubernetes.authz import Attributes, Authorizer, Decision, GroupCheck, PathCheck, ResourceCheck, Subject
from webhook.cel.kubernetes.formats import FORMATS
from webhook.cel.kubernetes.images import parse_image
from webhook.cel.kubernetes.network import parse_cidr, parse_ip
from webhook.cel.kubernetes.quantity import parse_quantity
from webhook.cel.kubernetes.semver import parse_semver
from webhook.cel.kubernetes.urls import parse_url
from webhook.cel.proto import checked_pb2
from webhook.cel.values import INT64_MAX, UINT64_MAX, CelError, CelType, Duration, Optional, Timestamp, UInt, type_of

CHECKER = cel.NewEnv(
    extensions=[ext_strings.ExtStrings(), ext_optional.ExtOptional(), ext_bindings.ExtBindings(), ext_math.ExtMath(),
                ext_encoders.ExtEncoders(), kubernetes.extension(cel)],
    functions=kubernetes.declarations(cel), descriptor_pool=kubernetes.descriptor_pool())
DIGEST = "sha256:6aefddb645ee6963afd681b1845c661d0ea4c3b20ab9db86d9e753b203d385f2"
QUANTITY_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


@dataclass(frozen=True)
class Case:
    overload_id: str
    args: tuple[Any, ...]
    expected: Any
    error: str | None
    source: str | None  # the CEL text of the example, for the checker; None where it cannot be declared


def case(overload_id: str, *args: Any, source: str | None, expected: Any = None, error: str | None = None) -> Any:
    return pytest.param(Case(overload_id, args, expected, error, source), id=f"{overload_id}:{source or args!r}")


def q(text: str) -> Quantity:
    return parse_quantity(text)


def v(text: str) -> Semver:
    return parse_semver(text)


def u(text: str) -> URL:
    return parse_url(text)


def ip(text: str) -> IP:
    return parse_ip(text)


def cidr(text: str) -> CIDR:
    return parse_cidr(text)


QUANTITY_CASES = [
    case("string_to_quantity", "1.5G", source="quantity('1.5G')", expected=q("1500M")),
    case("string_to_quantity", "200k", source="quantity('200k')", expected=q("200000")),
    case("string_to_quantity", "200K", source="quantity('200K')", error="unable to parse quantity's suffix"),
    case("string_to_quantity", "Three", source="quantity('Three')", error=QUANTITY_FORMAT),
    case("string_to_quantity", "10Mo", source="quantity('10Mo')", error=QUANTITY_FORMAT),
    case("string_to_quantity", "10Mm", source="quantity('10Mm')", error="unable to parse quantity's suffix"),
    case("string_to_quantity", "Ei", source="quantity('Ei')", error="unable to parse numeric part of quantity"),
    # The doc comment says quantity('Mi') is an error; ParseQuantity reads it as zero.
    case("string_to_quantity", "Mi", source="quantity('Mi')", expected=q("0")),
    case("is_quantity_string", "1.3G", source="isQuantity('1.3G')", expected=True),
    case("is_quantity_string", "1.3Gi", source="isQuantity('1.3Gi')", expected=True),
    case("is_quantity_string", "1,3G", source="isQuantity('1,3G')", expected=False),
    case("is_quantity_string", "10000k", source="isQuantity('10000k')", expected=True),
    case("is_quantity_string", "200K", source="isQuantity('200K')", expected=False),
    case("is_quantity_string", "20Mo", source="isQuantity('20Mo')", expected=False),
    case("quantity_is_integer", q("50000000G"), source="quantity('50000000G').isInteger()", expected=True),
    case("quantity_is_integer", q("50k"), source="quantity('50k').isInteger()", expected=True),
    case("quantity_is_integer", q("9999999999999999999999999999999999999G"),
         source="quantity('9999999999999999999999999999999999999G').isInteger()", expected=False),
    case("quantity_get_int", q("9999999999999999999999999999999999999G"),
         source="quantity('9999999999999999999999999999999999999G').asInteger()",
         error="cannot convert value to integer"),
    case("quantity_get_int", q("50k"), source="quantity('50k').asInteger()", expected=50000),
    case("quantity_get_float", q("50.703k"), source="quantity('50.703k').asApproximateFloat()", expected=50703.0),
    case("quantity_get_float", q("30k"), source="quantity('50k').sub(20000).asApproximateFloat()", expected=30000.0),
    case("quantity_sign", q("-50k"), source="sign(quantity('-50k'))", expected=-1),
    case("quantity_sign", q("0"), source="sign(quantity('0'))", expected=0),
    case("quantity_sign", q("2m"), source="sign(quantity('2m'))", expected=1),
    case("quantity_add", q("50k"), q("20k"), source="quantity('50k').add(quantity('20k'))", expected=q("70k")),
    case("quantity_add_int", q("50k"), 20, source="quantity('50k').add(20)", expected=q("50020")),
    case("quantity_sub", q("50k"), q("20k"), source="quantity('50k').sub(quantity('20k'))", expected=q("30k")),
    case("quantity_sub_int", q("50k"), 20000, source="quantity('50k').sub(20000)", expected=q("30k")),
    case("quantity_compare_to", q("200M"), q("0.2G"), source="quantity('200M').compareTo(quantity('0.2G'))",
         expected=0),
    case("quantity_compare_to", q("50M"), q("50Mi"), source="quantity('50M').compareTo(quantity('50Mi'))",
         expected=-1),
    case("quantity_compare_to", q("50Mi"), q("50M"), source="quantity('50Mi').compareTo(quantity('50M'))",
         expected=1),
    case("quantity_is_greater_than", q("150Mi"), q("100Mi"),
         source="quantity('150Mi').isGreaterThan(quantity('100Mi'))", expected=True),
    case("quantity_is_greater_than", q("50Mi"), q("100Mi"),
         source="quantity('50Mi').isGreaterThan(quantity('100Mi'))", expected=False),
    case("quantity_is_less_than", q("50M"), q("100M"), source="quantity('50M').isLessThan(quantity('100M'))",
         expected=True),
    case("quantity_is_less_than", q("100M"), q("50M"), source="quantity('100M').isLessThan(quantity('50M'))",
         expected=False),
]

SEMVER_CASES = [
    case("string_to_semver", "1.0.0", source="semver('1.0.0')", expected=v("1.0.0")),
    case("string_to_semver", "0.1.0-alpha.1", source="semver('0.1.0-alpha.1')", expected=v("0.1.0-alpha.1")),
    case("string_to_semver", "200K", source="semver('200K')", error="No Major.Minor.Patch elements found"),
    case("string_to_semver", "Three", source="semver('Three')", error="No Major.Minor.Patch elements found"),
    case("string_to_semver", "01.0.0", source="semver('01.0.0')",
         error='Major number must not contain leading zeroes "01"'),
    case("string_to_semver", "1.0.x", source="semver('1.0.x')", error='Invalid character(s) found in patch number "x"'),
    case("string_to_semver", "1.0.0-01", source="semver('1.0.0-01')",
         error='Numeric PreRelease version must not contain leading zeroes "01"'),
    case("string_to_semver", "1.0.0-alpha..1", source="semver('1.0.0-alpha..1')", error="Prerelease is empty"),
    case("string_to_semver", "1.0.0+b!", source="semver('1.0.0+b!')",
         error='Invalid character(s) found in build meta data "b!"'),
    case("string_to_semver", "1.0.18446744073709551616", source="semver('1.0.18446744073709551616')",
         error='strconv.ParseUint: parsing "18446744073709551616": value out of range'),
    case("string_bool_to_semver", "v1.0.0", True, source="semver('v1.0.0', true)", expected=v("1.0.0")),
    case("string_bool_to_semver", "1.0", True, source="semver('1.0', true)", expected=v("1.0.0")),
    case("string_bool_to_semver", "01.01.01", True, source="semver('01.01.01', true)", expected=v("1.1.1")),
    case("string_bool_to_semver", "1-alpha", True, source="semver('1-alpha', true)",
         error="short version cannot contain PreRelease/Build meta data"),
    case("is_semver_string", "1.0.0", source="isSemver('1.0.0')", expected=True),
    case("is_semver_string", "hello", source="isSemver('hello')", expected=False),
    case("is_semver_string", "v1.0", source="isSemver('v1.0')", expected=False),
    case("is_semver_string_bool", "v1.0", True, source="isSemver('v1.0', true)", expected=True),
    case("semver_major", v("1.2.3"), source="semver('1.2.3').major()", expected=1),
    case("semver_minor", v("1.2.3"), source="semver('1.2.3').minor()", expected=2),
    case("semver_patch", v("1.2.3"), source="semver('1.2.3').patch()", expected=3),
    # Go converts the uint64 to int64.
    case("semver_major", v("18446744073709551615.0.0"), source=None, expected=-1),
    case("semver_compare_to", v("1.2.3"), v("1.2.3"), source="semver('1.2.3').compareTo(semver('1.2.3'))",
         expected=0),
    case("semver_compare_to", v("1.2.3"), v("2.0.0"), source="semver('1.2.3').compareTo(semver('2.0.0'))",
         expected=-1),
    case("semver_compare_to", v("1.2.3"), v("0.1.2"), source="semver('1.2.3').compareTo(semver('0.1.2'))",
         expected=1),
    case("semver_is_greater_than", v("1.0.0-alpha.beta"), v("1.0.0-alpha.1"),
         source="semver('1.0.0-alpha.beta').isGreaterThan(semver('1.0.0-alpha.1'))", expected=True),
    case("semver_is_less_than", v("1.0.0-alpha"), v("1.0.0"),
         source="semver('1.0.0-alpha').isLessThan(semver('1.0.0'))", expected=True),
    case("semver_is_less_than", v("1.0.0-2"), v("1.0.0-10"), source="semver('1.0.0-2').isLessThan(semver('1.0.0-10'))",
         expected=True),
]

REGEX_CASES = [
    case("string_find_string", "abc 123", "[0-9]+", source="'abc 123'.find('[0-9]+')", expected="123"),
    # The doc comment gives '123' for '[0-9]*'; Go's FindString returns the empty match at the start.
    case("string_find_string", "abc 123", "[0-9]*", source="'abc 123'.find('[0-9]*')", expected=""),
    case("string_find_string", "abc 123", "xyz", source="'abc 123'.find('xyz')", expected=""),
    case("string_find_string", "abc", "[", source=None, error="Illegal regex: error parsing regexp: missing ]: ["),
    case("string_find_all_string", "123 abc 456", "[0-9]+", source="'123 abc 456'.findAll('[0-9]+')",
         expected=["123", "456"]),
    case("string_find_all_string_int", "123 abc 456", "[0-9]+", 1, source="'123 abc 456'.findAll('[0-9]+', 1)",
         expected=["123"]),
    case("string_find_all_string", "123 abc 456", "xyz", source="'123 abc 456'.findAll('xyz')", expected=[]),
    case("string_find_all_string", "abc 123", "[0-9]*", source="'abc 123'.findAll('[0-9]*')",
         expected=["", "", "", "", "123"]),
]

URL_CASES = [
    case("string_to_url", "https://a:b:c/", source="url('https://a:b:c/')",
         error='URL parse error during conversion from string: parse "https://a:b:c/": invalid port ":c" after host'),
    case("string_to_url", "../relative-path", source="url('../relative-path')",
         error='URL parse error during conversion from string: parse "../relative-path": invalid URI for request'),
    case("string_to_url", "https://exa mple.com/", source="url('https://exa mple.com/')",
         error='URL parse error during conversion from string: parse "https://exa mple.com/": '
               'invalid character " " in host name'),
    case("string_to_url", "https://h/p?q#%zz", source="url('https://h/p?q#%zz')",
         error='URL parse error during conversion from string: parse "https://h/p?q#%zz": invalid URL escape "%zz"'),
    case("is_url_string", "https://user:pass@example.com:80/path?query=val#fragment",
         source="isURL('https://user:pass@example.com:80/path?query=val#fragment')", expected=True),
    case("is_url_string", "/absolute-path", source="isURL('/absolute-path')", expected=True),
    case("is_url_string", "https://a:b:c/", source="isURL('https://a:b:c/')", expected=False),
    case("is_url_string", "../relative-path", source="isURL('../relative-path')", expected=False),
    case("url_get_scheme", u("/path"), source="url('/path').getScheme()", expected=""),
    case("url_get_scheme", u("https://example.com/"), source="url('https://example.com/').getScheme()",
         expected="https"),
    case("url_get_host", u("https://example.com:80/"), source="url('https://example.com:80/').getHost()",
         expected="example.com:80"),
    case("url_get_host", u("https://[::1]:80/"), source="url('https://[::1]:80/').getHost()", expected="[::1]:80"),
    case("url_get_host", u("/path"), source="url('/path').getHost()", expected=""),
    case("url_get_hostname", u("https://127.0.0.1:80/"), source="url('https://127.0.0.1:80/').getHostname()",
         expected="127.0.0.1"),
    case("url_get_hostname", u("https://[::1]:80/"), source="url('https://[::1]:80/').getHostname()",
         expected="::1"),
    case("url_get_port", u("https://example.com:80/"), source="url('https://example.com:80/').getPort()",
         expected="80"),
    case("url_get_port", u("https://example.com/"), source="url('https://example.com/').getPort()", expected=""),
    case("url_get_escaped_path", u("https://example.com/path with spaces/"),
         source="url('https://example.com/path with spaces/').getEscapedPath()", expected="/path%20with%20spaces/"),
    case("url_get_escaped_path", u("https://example.com"), source="url('https://example.com').getEscapedPath()",
         expected=""),
    case("url_get_query", u("https://example.com/path?k1=a&k2=b&k2=c"),
         source="url('https://example.com/path?k1=a&k2=b&k2=c').getQuery()", expected={"k1": ["a"], "k2": ["b", "c"]}),
    case("url_get_query", u("https://example.com/path?key with spaces=value with spaces"),
         source="url('https://example.com/path?key with spaces=value with spaces').getQuery()",
         expected={"key with spaces": ["value with spaces"]}),
    case("url_get_query", u("https://example.com/path?"), source="url('https://example.com/path?').getQuery()",
         expected={}),
]

NETWORK_CASES = [
    case("string_to_ip", "127.0.0.1", source="ip('127.0.0.1')", expected=ip("127.0.0.1")),
    case("string_to_ip", "127.0.0.256", source="ip('127.0.0.256')",
         error='IP Address "127.0.0.256" parse error during conversion from string: ParseAddr("127.0.0.256"): '
               "IPv4 field has value >255"),
    case("string_to_ip", ":::1", source="ip(':::1')",
         error='IP Address ":::1" parse error during conversion from string: ParseAddr(":::1"): '
               'each colon-separated field must have at least one digit (at ":1")'),
    case("string_to_ip", "010.0.0.1", source="ip('010.0.0.1')",
         error='IP Address "010.0.0.1" parse error during conversion from string: ParseAddr("010.0.0.1"): '
               "IPv4 field has octet with leading zero"),
    case("string_to_ip", "::ffff:1.2.3.4", source="ip('::ffff:1.2.3.4')",
         error='IPv4-mapped IPv6 address "::ffff:1.2.3.4" is not allowed'),
    case("string_to_ip", "fe80::1%eth0", source="ip('fe80::1%eth0')",
         error='IP address "fe80::1%eth0" with zone value is not allowed'),
    case("is_ip", "::1", source="isIP('::1')", expected=True),
    case("is_ip", "127.0.0.256", source="isIP('127.0.0.256')", expected=False),
    case("ip_is_canonical", "127.0.0.1", source="ip.isCanonical('127.0.0.1')", expected=True),
    case("ip_is_canonical", "2001:db8::abcd", source="ip.isCanonical('2001:db8::abcd')", expected=True),
    case("ip_is_canonical", "2001:DB8::ABCD", source="ip.isCanonical('2001:DB8::ABCD')", expected=False),
    case("ip_is_canonical", "2001:db8::0:0:0:abcd", source="ip.isCanonical('2001:db8::0:0:0:abcd')", expected=False),
    case("ip_family", ip("127.0.0.1"), source="ip('127.0.0.1').family()", expected=4),
    case("ip_family", ip("::1"), source="ip('::1').family()", expected=6),
    case("ip_is_unspecified", ip("0.0.0.0"), source="ip('0.0.0.0').isUnspecified()", expected=True),
    case("ip_is_unspecified", ip("::1"), source="ip('::1').isUnspecified()", expected=False),
    case("ip_is_loopback", ip("127.0.0.1"), source="ip('127.0.0.1').isLoopback()", expected=True),
    case("ip_is_loopback", ip("2001:db8::abcd"), source="ip('2001:db8::abcd').isLoopback()", expected=False),
    case("ip_is_link_local_multicast", ip("224.0.0.1"), source="ip('224.0.0.1').isLinkLocalMulticast()",
         expected=True),
    case("ip_is_link_local_multicast", ip("224.0.1.1"), source="ip('224.0.1.1').isLinkLocalMulticast()",
         expected=False),
    case("ip_is_link_local_multicast", ip("ff02::1"), source="ip('ff02::1').isLinkLocalMulticast()", expected=True),
    case("ip_is_link_local_multicast", ip("fd00::1"), source="ip('fd00::1').isLinkLocalMulticast()", expected=False),
    case("ip_is_link_local_unicast", ip("169.254.169.254"), source="ip('169.254.169.254').isLinkLocalUnicast()",
         expected=True),
    case("ip_is_link_local_unicast", ip("fe80::1"), source="ip('fe80::1').isLinkLocalUnicast()", expected=True),
    case("ip_is_link_local_unicast", ip("fd80::1"), source="ip('fd80::1').isLinkLocalUnicast()", expected=False),
    case("ip_is_global_unicast", ip("192.168.0.1"), source="ip('192.168.0.1').isGlobalUnicast()", expected=True),
    case("ip_is_global_unicast", ip("255.255.255.255"), source="ip('255.255.255.255').isGlobalUnicast()",
         expected=False),
    case("ip_is_global_unicast", ip("2001:db8::abcd"), source="ip('2001:db8::abcd').isGlobalUnicast()",
         expected=True),
    case("ip_is_global_unicast", ip("ff00::1"), source="ip('ff00::1').isGlobalUnicast()", expected=False),
    case("ip_to_string", ip("2001:db8:0:0::1"), source="string(ip('2001:db8:0:0::1'))", expected="2001:db8::1"),
    case("string_to_cidr", "192.168.0.0/16", source="cidr('192.168.0.0/16')", expected=cidr("192.168.0.0/16")),
    case("string_to_cidr", "192.168.0.0/33", source="cidr('192.168.0.0/33')",
         error="network address parse error during conversion from string: network address parse error during "
               'conversion from string: netip.ParsePrefix("192.168.0.0/33"): prefix length out of range'),
    case("string_to_cidr", "192.168.0.0/", source="cidr('192.168.0.0/')",
         error="network address parse error during conversion from string: network address parse error during "
               'conversion from string: netip.ParsePrefix("192.168.0.0/"): bad bits after slash: ""'),
    case("string_to_cidr", "::ffff:1.2.3.4/120", source="cidr('::ffff:1.2.3.4/120')",
         error='network address parse error during conversion from string: IPv4-mapped IPv6 address '
               '"::ffff:1.2.3.4/120" is not allowed'),
    case("is_cidr", "::1/128", source="isCIDR('::1/128')", expected=True),
    case("is_cidr", "::1/129", source="isCIDR('::1/129')", expected=False),
    case("cidr_contains_ip_ip", cidr("192.168.0.0/24"), ip("192.168.0.1"),
         source="cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))", expected=True),
    case("cidr_contains_ip_ip", cidr("192.168.0.0/24"), ip("192.168.1.1"),
         source="cidr('192.168.0.0/24').containsIP(ip('192.168.1.1'))", expected=False),
    case("cidr_contains_ip_string", cidr("192.168.0.0/24"), "192.168.0.1",
         source="cidr('192.168.0.0/24').containsIP('192.168.0.1')", expected=True),
    case("cidr_contains_ip_string", cidr("192.168.0.0/24"), "::1",
         source="cidr('192.168.0.0/24').containsIP('::1')", expected=False),
    case("cidr_contains_cidr", cidr("192.168.0.0/16"), cidr("192.168.10.0/24"),
         source="cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))", expected=True),
    case("cidr_contains_cidr", cidr("192.168.1.0/24"), cidr("192.168.2.0/24"),
         source="cidr('192.168.1.0/24').containsCIDR(cidr('192.168.2.0/24'))", expected=False),
    case("cidr_contains_cidr_string", cidr("192.168.0.0/16"), "192.168.10.0/24",
         source="cidr('192.168.0.0/16').containsCIDR('192.168.10.0/24')", expected=True),
    case("cidr_contains_cidr_string", cidr("192.168.10.0/24"), "192.168.0.0/16",
         source="cidr('192.168.10.0/24').containsCIDR('192.168.0.0/16')", expected=False),
    case("cidr_ip", cidr("192.168.0.1/24"), source="cidr('192.168.0.1/24').ip()", expected=ip("192.168.0.1")),
    case("cidr_masked", cidr("192.168.0.1/24"), source="cidr('192.168.0.1/24').masked()",
         expected=cidr("192.168.0.0/24")),
    case("cidr_prefix_length", cidr("::1/128"), source="cidr('::1/128').prefixLength()", expected=128),
    case("cidr_to_string", cidr("2001:DB8::/32"), source="string(cidr('2001:DB8::/32'))", expected="2001:db8::/32"),
]

SECOND = Duration(10**9)
LIST_CASES = [
    case("list_int_is_sorted_bool", [1, 2, 3], source="[1, 2, 3].isSorted()", expected=True),
    case("list_string_is_sorted_bool", ["a", "b", "b", "c"], source="['a', 'b', 'b', 'c'].isSorted()",
         expected=True),
    case("list_double_is_sorted_bool", [2.0, 1.0], source="[2.0, 1.0].isSorted()", expected=False),
    case("list_int_is_sorted_bool", [], source="[].isSorted()", expected=True),
    case("list_uint_is_sorted_bool", [UInt(1), UInt(2)], source="[1u, 2u].isSorted()", expected=True),
    case("list_bool_is_sorted_bool", [False, True], source="[false, true].isSorted()", expected=True),
    case("list_duration_is_sorted_bool", [SECOND, Duration(1)], source="[duration('1s'), duration('1ns')].isSorted()",
         expected=False),
    case("list_timestamp_is_sorted_bool", [Timestamp(0), Timestamp(1)],
         source="[timestamp(0), timestamp(1)].isSorted()", expected=True),
    case("list_bytes_is_sorted_bool", [b"a", b"b"], source="[b'a', b'b'].isSorted()", expected=True),
    case("list_int_sum_int", [1, 3], source="[1, 3].sum()", expected=4),
    case("list_double_sum_double", [1.0, 3.0], source="[1.0, 3.0].sum()", expected=4.0),
    case("list_duration_sum_duration", [Duration(60 * 10**9), SECOND], source="[duration('1m'), duration('1s')].sum()",
         expected=Duration(61 * 10**9)),
    case("list_int_sum_int", [], source="[].sum()", expected=0),
    case("list_double_sum_double", [], source=None, expected=0.0),
    case("list_uint_sum_uint", [UInt(1), UInt(2)], source="[1u, 2u].sum()", expected=UInt(3)),
    case("list_int_sum_int", [INT64_MAX, 1], source="[9223372036854775807, 1].sum()", error="integer overflow"),
    case("list_uint_sum_uint", [UInt(UINT64_MAX), UInt(1)], source="[18446744073709551615u, 1u].sum()",
         error="unsigned integer overflow"),
    case("list_int_min_int", [1, 3], source="[1, 3].min()", expected=1),
    case("list_int_max_int", [1, 3], source="[1, 3].max()", expected=3),
    case("list_int_min_int", [], source="[].min()", error="min called on empty list"),
    case("list_int_max_int", [], source="[].max()", error="max called on empty list"),
    case("list_string_max_string", ["b", "a", "c"], source="['b', 'a', 'c'].max()", expected="c"),
    case("list_uint_min_uint", [UInt(2), UInt(1)], source="[2u, 1u].min()", expected=UInt(1)),
    case("list_double_max_double", [1.5, 0.5], source="[1.5, 0.5].max()", expected=1.5),
    case("list_bool_min_bool", [True, False], source="[true, false].min()", expected=False),
    case("list_bool_max_bool", [True, False], source="[true, false].max()", expected=True),
    case("list_duration_min_duration", [SECOND, Duration(1)], source="[duration('1s'), duration('1ns')].min()",
         expected=Duration(1)),
    case("list_duration_max_duration", [SECOND, Duration(1)], source="[duration('1s'), duration('1ns')].max()",
         expected=SECOND),
    case("list_timestamp_min_timestamp", [Timestamp(5), Timestamp(1)], source="[timestamp(5), timestamp(1)].min()",
         expected=Timestamp(1)),
    case("list_timestamp_max_timestamp", [Timestamp(5), Timestamp(1)], source="[timestamp(5), timestamp(1)].max()",
         expected=Timestamp(5)),
    case("list_string_min_string", ["b", "a"], source="['b', 'a'].min()", expected="a"),
    case("list_bytes_min_bytes", [b"b", b"a"], source="[b'b', b'a'].min()", expected=b"a"),
    case("list_bytes_max_bytes", [b"b", b"a"], source="[b'b', b'a'].max()", expected=b"b"),
    case("list_uint_max_uint", [UInt(2), UInt(1)], source="[2u, 1u].max()", expected=UInt(2)),
    case("list_double_min_double", [1.5, 0.5], source="[1.5, 0.5].min()", expected=0.5),
    case("list_a_index_of_int", [1, 2, 2, 3], 2, source="[1, 2, 2, 3].indexOf(2)", expected=1),
    case("list_a_last_index_of_int", ["a", "b", "b", "c"], "b", source="['a', 'b', 'b', 'c'].lastIndexOf('b')",
         expected=2),
    case("list_a_index_of_int", [1.0], 1.1, source="[1.0].indexOf(1.1)", expected=-1),
    case("list_a_index_of_int", [], "string", source="[].indexOf('string')", expected=-1),
    case("sets_contains_list_list", [], [], source="sets.contains([], [])", expected=True),
    case("sets_contains_list_list", [], [1], source="sets.contains([], [1])", expected=False),
    case("sets_contains_list_list", [1, 2, 3, 4], [2, 3], source="sets.contains([1, 2, 3, 4], [2, 3])",
         expected=True),
    case("sets_contains_list_list", [1, 2.0, UInt(3)], [1.0, UInt(2), 3],
         source="sets.contains([1, 2.0, 3u], [1.0, 2u, 3])", expected=True),
    case("sets_equivalent_list_list", [], [], source="sets.equivalent([], [])", expected=True),
    case("sets_equivalent_list_list", [1], [1, 1], source="sets.equivalent([1], [1, 1])", expected=True),
    case("sets_equivalent_list_list", [1], [UInt(1), 1.0], source="sets.equivalent([1], [1u, 1.0])", expected=True),
    case("sets_equivalent_list_list", [1, 2, 3], [UInt(3), 2.0, 1], source="sets.equivalent([1, 2, 3], [3u, 2.0, 1])",
         expected=True),
    case("sets_intersects_list_list", [1], [], source="sets.intersects([1], [])", expected=False),
    case("sets_intersects_list_list", [1], [1, 2], source="sets.intersects([1], [1, 2])", expected=True),
    case("sets_intersects_list_list", [[1], [2, 3]], [[1, 2], [2, 3.0]],
         source="sets.intersects([[1], [2, 3]], [[1, 2], [2, 3.0]])", expected=True),
    case("string_jsonpatch_escapeKey_string", "k8s.io/my~label", source="jsonpatch.escapeKey('k8s.io/my~label')",
         expected="k8s.io~1my~0label"),
]

DNS_LABEL_ERROR = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                   "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                   "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
FORMAT_CASES = [
    case("format.dns1123Label", source="format.dns1123Label()", expected=FORMATS["dns1123Label"]),
    *(case(f"format.{name}", source=f"format.{name}()", expected=FORMATS[name]) for name in FORMATS
      if name != "dns1123Label"),
    case("format-named", "uuid", source="format.named('uuid')", expected=Optional(FORMATS["uuid"])),
    case("format-named", "nonesuch", source="format.named('nonesuch')", expected=Optional.NONE),
    case("format-validate", FORMATS["dns1123Label"], "my-label-name",
         source="format.dns1123Label().validate('my-label-name')", expected=Optional.NONE),
    case("format-validate", FORMATS["dns1123Label"], "My_Label", source="format.dns1123Label().validate('My_Label')",
         expected=Optional([DNS_LABEL_ERROR])),
    case("format-validate", FORMATS["dns1123Label"], "a.b", source="format.dns1123Label().validate('a.b')",
         expected=Optional(["must not contain dots"])),
    case("format-validate", FORMATS["dns1123Subdomain"], "apiextensions.k8s.io",
         source="format.dns1123Subdomain().validate('apiextensions.k8s.io')", expected=Optional.NONE),
    case("format-validate", FORMATS["dns1035Label"], "1abc", source="format.dns1035Label().validate('1abc')",
         expected=Optional(["a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
                            "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
                            "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"])),
    case("format-validate", FORMATS["qualifiedName"], "apiextensions.k8s.io/v1beta1",
         source="format.qualifiedName().validate('apiextensions.k8s.io/v1beta1')", expected=Optional.NONE),
    case("format-validate", FORMATS["qualifiedName"], "/x", source="format.qualifiedName().validate('/x')",
         expected=Optional(["prefix part must be non-empty"])),
    case("format-validate", FORMATS["dns1123LabelPrefix"], "my-label-prefix-",
         source="format.dns1123LabelPrefix().validate('my-label-prefix-')", expected=Optional.NONE),
    case("format-validate", FORMATS["dns1123SubdomainPrefix"], "mysubdomain.prefix.-",
         source="format.dns1123SubdomainPrefix().validate('mysubdomain.prefix.-')", expected=Optional.NONE),
    case("format-validate", FORMATS["dns1035LabelPrefix"], "my-label-prefix-",
         source="format.dns1035LabelPrefix().validate('my-label-prefix-')", expected=Optional.NONE),
    case("format-validate", FORMATS["labelValue"], "", source="format.labelValue().validate('')",
         expected=Optional.NONE),
    case("format-validate", FORMATS["uri"], "http://example.com", source="format.uri().validate('http://example.com')",
         expected=Optional.NONE),
    case("format-validate", FORMATS["uri"], "example.com", source="format.uri().validate('example.com')",
         expected=Optional(['parse "example.com": invalid URI for request'])),
    case("format-validate", FORMATS["uuid"], "123e4567-e89b-12d3-a456-426614174000",
         source="format.uuid().validate('123e4567-e89b-12d3-a456-426614174000')", expected=Optional.NONE),
    case("format-validate", FORMATS["uuid"], "123e4567", source="format.uuid().validate('123e4567')",
         expected=Optional(["does not match the UUID format"])),
    case("format-validate", FORMATS["byte"], "aGVsbG8=", source="format.byte().validate('aGVsbG8=')",
         expected=Optional.NONE),
    case("format-validate", FORMATS["byte"], "aGVsbG8", source="format.byte().validate('aGVsbG8')",
         expected=Optional(["invalid base64"])),
    case("format-validate", FORMATS["date"], "2021-01-01", source="format.date().validate('2021-01-01')",
         expected=Optional.NONE),
    case("format-validate", FORMATS["date"], "2021-02-30", source="format.date().validate('2021-02-30')",
         expected=Optional(["invalid date"])),
    case("format-validate", FORMATS["datetime"], "2021-01-01T00:00:00Z",
         source="format.datetime().validate('2021-01-01T00:00:00Z')", expected=Optional.NONE),
    case("format-validate", FORMATS["datetime"], "2021-01-01T24:00:00Z",
         source="format.datetime().validate('2021-01-01T24:00:00Z')", expected=Optional(["invalid datetime"])),
]


def image(text: str) -> Image:
    return parse_image(text)


APISERVER = "registry.k8s.io/kube-apiserver-arm64"
IMAGE_CASES = [
    case("string_to_image", f"{APISERVER}:@", source=f"image('{APISERVER}:@')",
         error=f"could not parse reference: {APISERVER}:@"),
    case("string_to_image", "nginx", source="image('nginx')",
         expected=Image("nginx", registry="index.docker.io", repository="library/nginx", tag="latest")),
    case("is_image_string", f"{APISERVER}:latest", source=f"isImage('{APISERVER}:latest')", expected=True),
    case("is_image_string", f"{APISERVER}@{DIGEST}", source=f"isImage('{APISERVER}@{DIGEST}')", expected=True),
    case("is_image_string", f"{APISERVER}:@", source=f"isImage('{APISERVER}:@')", expected=False),
    case("image_contains_digest", image(APISERVER), source=f"image('{APISERVER}').containsDigest()", expected=False),
    case("image_contains_digest", image(f"{APISERVER}:latest@{DIGEST}"),
         source=f"image('{APISERVER}:latest@{DIGEST}').containsDigest()", expected=True),
    case("image_registry", image("kube-apiserver-arm64:testtag"),
         source="image('kube-apiserver-arm64:testtag').registry()", expected="index.docker.io"),
    case("image_registry", image(APISERVER), source=f"image('{APISERVER}').registry()", expected="registry.k8s.io"),
    case("image_repository", image(APISERVER), source=f"image('{APISERVER}').repository()",
         expected="kube-apiserver-arm64"),
    case("image_identifier", image(f"{APISERVER}:testtag"), source=f"image('{APISERVER}:testtag').identifier()",
         expected="testtag"),
    case("image_identifier", image(f"{APISERVER}:latest@{DIGEST}"),
         source=f"image('{APISERVER}:latest@{DIGEST}').identifier()", expected=DIGEST),
    case("image_identifier", image(APISERVER), source=f"image('{APISERVER}').identifier()", expected="latest"),
    case("image_tag", image(APISERVER), source=f"image('{APISERVER}').tag()", expected="latest"),
    case("image_tag", image(f"{APISERVER}@{DIGEST}"), source=f"image('{APISERVER}@{DIGEST}').tag()", expected=""),
    case("image_digest", image(f"{APISERVER}:testtag"), source=f"image('{APISERVER}:testtag').digest()", expected=""),
    case("image_digest", image(f"{APISERVER}:latest@{DIGEST}"),
         source=f"image('{APISERVER}:latest@{DIGEST}').digest()", expected=DIGEST),
]



def _answer(asked: Attributes) -> Decision:
    """An authorizer that allows everything and says what it was asked (the server's asks the cluster)."""
    target = asked.path if not asked.resource_request else "/".join(filter(None, (
        asked.group, asked.version, asked.namespace, asked.resource, asked.name, asked.subresource)))
    selectors = "".join(f" {s}" for s in (asked.field_selector, asked.label_selector) if s)
    return Decision(True, f"{asked.subject.user} may {asked.verb} {target}{selectors}")


AUTHORIZER = Authorizer(Subject.of("alice", groups=["dev"]), _answer)
AZ = "kubernetes.authorization.Authorizer{}"  # a value of the type, for the checker (the variable is not declared)
PODS = ResourceCheck(AUTHORIZER, "", "pods")
DEPLOYMENTS = ResourceCheck(AUTHORIZER, "apps", "deployments")
AUTHZ_CASES = [
    case("authorizer_path", AUTHORIZER, "/healthz", source=f"{AZ}.path('/healthz')",
         expected=PathCheck(AUTHORIZER, "/healthz")),
    case("authorizer_path", AUTHORIZER, "", source=f"{AZ}.path('')", error="path must not be empty"),
    case("authorizer_path", AUTHORIZER, "  ", source=f"{AZ}.path('  ')", error="path must not be empty"),
    case("authorizer_group", AUTHORIZER, "apps", source=f"{AZ}.group('apps')",
         expected=GroupCheck(AUTHORIZER, "apps")),
    case("authorizer_group", AUTHORIZER, "", source=f"{AZ}.group('')", expected=GroupCheck(AUTHORIZER, "")),
    case("authorizer_serviceaccount", AUTHORIZER, "default", "myserviceaccount",
         source=f"{AZ}.serviceAccount('default', 'myserviceaccount')",
         expected=Authorizer(Subject("system:serviceaccount:default:myserviceaccount", groups=(
             "system:serviceaccounts", "system:serviceaccounts:default")), _answer)),
    case("authorizer_serviceaccount", AUTHORIZER, "not@a#valid!namespace", "validname",
         source=f"{AZ}.serviceAccount('not@a#valid!namespace', 'validname')",
         error="Invalid service account namespace"),
    case("authorizer_serviceaccount", AUTHORIZER, "valid.example.com", "invalid@*name",
         source=f"{AZ}.serviceAccount('valid.example.com', 'invalid@*name')", error="Invalid service account name"),
    case("groupcheck_resource", GroupCheck(AUTHORIZER, "apps"), "deployments",
         source=f"{AZ}.group('apps').resource('deployments')", expected=DEPLOYMENTS),
    case("groupcheck_resource", GroupCheck(AUTHORIZER, "apps"), "",
         source=f"{AZ}.group('apps').resource('')", error="resource must not be empty"),
    case("groupcheck_resource", GroupCheck(AUTHORIZER, "apps"), "  ",
         source=f"{AZ}.group('apps').resource('  ')", error="resource must not be empty"),
    case("resourcecheck_subresource", PODS, "status", source=f"{AZ}.group('').resource('pods').subresource('status')",
         expected=ResourceCheck(AUTHORIZER, "", "pods", subresource="status")),
    case("resourcecheck_namespace", DEPLOYMENTS, "test",
         source=f"{AZ}.group('apps').resource('deployments').namespace('test')",
         expected=ResourceCheck(AUTHORIZER, "apps", "deployments", namespace="test")),
    case("resourcecheck_name", DEPLOYMENTS, "backend",
         source=f"{AZ}.group('apps').resource('deployments').name('backend')",
         expected=ResourceCheck(AUTHORIZER, "apps", "deployments", name="backend")),
    case("authorizer_fieldselector", PODS, "spec.nodeName=mynode",
         source=f"{AZ}.group('').resource('pods').fieldSelector('spec.nodeName=mynode')",
         expected=ResourceCheck(AUTHORIZER, "", "pods", field_selector="spec.nodeName=mynode")),
    case("authorizer_labelselector", PODS, "app=example",
         source=f"{AZ}.group('').resource('pods').labelSelector('app=example')",
         expected=ResourceCheck(AUTHORIZER, "", "pods", label_selector="app=example")),
    case("resourcecheck_check", ResourceCheck(AUTHORIZER, "", "pods", namespace="default"), "create",
         source=f"{AZ}.group('').resource('pods').namespace('default').check('create')",
         expected=Decision(True, "alice may create */default/pods")),
    case("resourcecheck_check", ResourceCheck(AUTHORIZER, "", "pods", field_selector="spec.nodeName=mynode"), "list",
         source=f"{AZ}.group('').resource('pods').fieldSelector('spec.nodeName=mynode').check('list')",
         expected=Decision(True, "alice may list */pods spec.nodeName=mynode")),
    case("pathcheck_check", PathCheck(AUTHORIZER, "/healthz"), "get", source=f"{AZ}.path('/healthz').check('get')",
         expected=Decision(True, "alice may get /healthz")),
    case("decision_allowed", Decision(True), source=f"{AZ}.path('/healthz').check('get').allowed()", expected=True),
    case("decision_allowed", Decision(False), source=f"{AZ}.path('/healthz').check('get').allowed()", expected=False),
    case("decision_reason", Decision(False, "no RBAC policy matched"),
         source=f"{AZ}.path('/healthz').check('GET').reason()", expected="no RBAC policy matched"),
    case("decision_errored", Decision(False, error="webhook timed out"),
         source=f"{AZ}.group('').resource('pods').namespace('default').check('create').errored()", expected=True),
    case("decision_errored", Decision(True), source=f"{AZ}.path('/').check('get').errored()", expected=False),
    case("decision_error", Decision(False, error="webhook timed out"),
         source=f"{AZ}.group('').resource('pods').namespace('default').check('create').error()",
         expected="webhook timed out"),
    case("decision_error", Decision(True), source=f"{AZ}.path('/').check('get').error()", expected=""),
]

CASES = [*QUANTITY_CASES, *SEMVER_CASES, *REGEX_CASES, *URL_CASES, *NETWORK_CASES, *LIST_CASES, *FORMAT_CASES,
         *IMAGE_CASES, *AUTHZ_CASES]


def same(actual: Any, expected: Any) -> bool:
    """Equal and of the same type all the way down (True is not 1, 1.0 is not 1, UInt is not int)."""
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            same(a, e) for a, e in zip(actual, expected, strict=True))
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(
            same(actual[key], value) for key, value in expected.items())
    if isinstance(expected, Optional):
        return isinstance(actual, Optional) and actual.present == expected.present and (
            not expected.present or same(actual.value, expected.value))
    return type(actual) is type(expected) and bool(actual == expected)


@pytest.mark.parametrize("example", CASES)
def test_overload_answers_as_kubernetes(example: Case) -> None:
    overload = FUNCTIONS.get(example.overload_id)
    assert overload is not None, example.overload_id
    assert overload.accepts(example.args)
    if example.error is not None:
        with pytest.raises(CelError) as failure:
            overload.impl(*example.args)
        assert failure.value.message == example.error
    else:
        actual = overload.impl(*example.args)
        assert same(actual, example.expected), f"{actual!r} != {example.expected!r}"


def _resolved(source: str) -> list[str]:
    """The overload ids cel-expr-python's checker resolved the calls of `source` to."""
    packed = any_pb2.Any()
    packed.ParseFromString(CHECKER.compile(source).serialize())
    checked = checked_pb2.CheckedExpr()
    packed.Unpack(checked)
    return [overload for reference in checked.reference_map.values() for overload in reference.overload_id]


@pytest.mark.parametrize("example", [c for c in CASES if c.values[0].source is not None])
def test_checker_resolves_the_example_to_the_overload(example: Case) -> None:
    assert example.source is not None
    assert example.overload_id in _resolved(example.source)


def test_every_overload_has_an_example() -> None:
    covered = {c.values[0].overload_id for c in CASES}
    declared = {overload.id for overload in kubernetes.OVERLOADS}
    assert declared - covered == set()


def test_overload_ids_are_kubernetes_own() -> None:
    ids = {overload.id for overload in kubernetes.OVERLOADS}
    assert {"string_to_quantity", "quantity_sign", "quantity_add_int", "quantity_get_float", "string_bool_to_semver",
            "string_find_all_string_int", "url_get_escaped_path", "cidr_contains_ip_string", "cidr_ip", "ip_to_string",
            "list_timestamp_is_sorted_bool", "list_duration_sum_duration", "list_a_last_index_of_int",
            "sets_intersects_list_list", "string_jsonpatch_escapeKey_string", "format-validate",
            "format.dns1123Label", "image_contains_digest"} <= ids
    assert len(ids) == len(kubernetes.OVERLOADS)


@pytest.mark.parametrize(("value", "name"), [
    (q("1"), "kubernetes.Quantity"), (v("1.0.0"), "kubernetes.Semver"), (u("https://a/"), "kubernetes.URL"),
    (ip("::1"), "net.IP"), (cidr("::1/128"), "net.CIDR"), (FORMATS["uuid"], "kubernetes.NamedFormat"),
    (image("nginx"), "kubernetes.Image"),
], ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_opaque_values_have_kubernetes_type_names(value: Any, name: str) -> None:
    assert type_of(value) == CelType(name)
    assert _resolved_type(f"type({_constructor(value)})") == name


def _constructor(value: Any) -> str:
    return {"Quantity": "quantity('1')", "Semver": "semver('1.0.0')", "URL": "url('https://a/')", "IP": "ip('::1')",
            "CIDR": "cidr('::1/128')", "Format": "format.uuid()", "Image": "image('nginx')"}[type(value).__name__]


def _resolved_type(source: str) -> str:
    name: str = CHECKER.compile(source).return_type().name()
    return name.removeprefix("TYPE<").removesuffix(">")


def test_quantities_are_equal_by_value_as_kubernetes_compares_them() -> None:
    assert q("1000m") == q("1")
    assert hash(q("1000m")) == hash(q("1"))
    assert q("200M") == q("0.2G")
    assert q("2M") == q("0.002G") == q("2000k")
    assert q("1Gi") != q("1G")
    assert q("50k").add(q("20")) == q("50.02k")
    assert {q("1k"): "x"}[q("1000")] == "x"


def test_quantity_conversions_follow_the_form_kubernetes_stores() -> None:
    """AsInt64 answers from the int64 form: 1000m is kept as 1000 * 10^-3, a 19-digit number as an inf.Dec."""
    as_integer = FUNCTIONS.get("quantity_get_int")
    assert as_integer is not None
    for text in ("1000m", "1.0", "9223372036854775807", "3Ei"):
        with pytest.raises(CelError, match="cannot convert value to integer"):
            as_integer.impl(q(text))
    assert as_integer.impl(q("50k").add(q("20")).sub(q("100k")).sub(Quantity.from_int64(-50000, 0))) == 20
    assert q("1000m").integer_value() == 1  # what the tagged-map engines answer


def test_quantity_float_is_bit_for_bit_kubernetes() -> None:
    assert q("100.035Ki").approximate_float() == 102435.84000000001  # 102435840000000 * math.Pow10(-9)
    assert q("1e999999").approximate_float() == math.inf
    assert math.isnan(q("0e400").approximate_float())  # 0 * math.Pow10(400): Kubernetes returns NaN too


def test_quantity_arithmetic_overflowing_int64_continues_exactly() -> None:
    total = q("9223372036854775807").add(q("1"))
    assert total == q("9223372036854775808")
    assert total.as_int64() is None
    assert Quantity.from_int64(INT64_MAX, 0).add(Quantity.from_int64(1, 0)).decimal_text() == "9223372036854775808"


def test_quantity_sum_of_wildly_different_magnitudes_is_refused() -> None:
    with pytest.raises(CelError, match="too many orders of magnitude"):
        q("1e999999999").add(q("1"))


def test_semver_equality_ignores_build_metadata() -> None:
    assert v("1.0.0+build.1") == v("1.0.0+build.2")
    assert hash(v("1.0.0+build.1")) == hash(v("1.0.0+build.2"))
    assert str(v("1.0.0-rc.1+b")) == "1.0.0-rc.1+b"
    assert v("1.0.0-rc.1") != v("1.0.0")


def test_ip_and_cidr_equality_as_netip_compares() -> None:
    assert ip("2001:DB8::ABCD") == ip("2001:db8::abcd")
    assert ip("127.0.0.1") != ip("::1")
    assert cidr("192.168.0.1/24") != cidr("192.168.0.1/24").masked()
    assert cidr("192.168.0.0/24") == cidr("192.168.0.0/24").masked()


def test_urls_are_equal_when_go_prints_them_alike() -> None:
    assert u("HTTPS://example.com/a") == u("https://example.com/a")
    assert u("https://example.com/%7e") != u("https://example.com/~")  # the escaped path is kept as written
    assert u("https://[fe80::1%25en0]:8443/").hostname == "fe80::1%en0"


def test_formats_and_images_are_equal_by_content() -> None:
    assert FORMATS["uuid"] == Format("uuid", lambda value: [])
    assert FORMATS["uuid"] != FORMATS["byte"]
    assert image("nginx") == image("nginx")
    assert image("nginx") != image("docker.io/library/nginx")


def test_declarations_add_to_standard_and_extension_functions_as_an_extension() -> None:
    assert {overload.function for overload in kubernetes.OVERLOADS} >= {"string", "indexOf"}
    env = cel.NewEnv(functions=kubernetes.declarations(cel), descriptor_pool=kubernetes.descriptor_pool(),
                     extensions=[ext_strings.ExtStrings(), kubernetes.extension(cel)])
    assert env.compile("'abc'.indexOf('b') + [1, 2].indexOf(2)").return_type() == cel.Type.INT
    assert env.compile("string(ip('::1')) + string(cidr('::1/128')) + string(1)").return_type() == cel.Type.STRING
    assert env.compile("type(ip('::1')) == net.IP && type(quantity('1')) == kubernetes.Quantity").return_type() \
        == cel.Type.BOOL
    with pytest.raises(RuntimeError, match="undefined field 'v'"):
        env.compile("quantity('1').v")  # an opaque type has no fields
    with pytest.raises(RuntimeError, match="undeclared reference to 'sign'"):
        env.compile("quantity('1').sign()")  # Kubernetes declares sign(<Quantity>) only, not a member


def test_long_request_texts_are_parsed_but_not_kept() -> None:
    """Issue 15, finding 1: caches keyed by request strings were bounded by count only (500 KB quantity strings
    kept ~7.9 MiB per 4 MB review); a text past 256 characters is parsed each time and never cached."""
    from webhook.cel.kubernetes.quantity import parse_quantity

    parse_quantity.cache_clear()  # type: ignore[attr-defined]
    short = parse_quantity("1500m")
    assert parse_quantity("1500m") is short  # short texts are cached
    long_text = "1" * 300
    assert parse_quantity(long_text) == parse_quantity(long_text)
    assert parse_quantity(long_text) is not parse_quantity(long_text)
    assert parse_quantity.cache_info().currsize == 1  # type: ignore[attr-defined]
