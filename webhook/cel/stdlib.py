"""CEL's standard functions and operators, each one Python function over every type it is defined for.

Operators check their argument types themselves (cheap `type(x) is int` tests on the common path), so one
implementation serves a call whatever overloads the checker left open. The strict logical operators, the
conditional and `@in` for maps live in the compiler (they are not strict in their arguments, or need the node).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import re2

from webhook.cel import timefmt
from webhook.cel.values import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    CelError,
    CelType,
    Duration,
    NoSuchOverload,
    Optional,
    Timestamp,
    UInt,
    check_int,
    check_uint,
    compare,
    equals,
    map_get,
    type_of,
)

_MISSING = object()


def add(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        result = left + right
        if INT64_MIN <= result <= INT64_MAX:
            return result
        raise CelError("integer overflow")
    if kind is type(right) and kind in (str, bytes, float):
        return left + right
    if kind is UInt and type(right) is UInt:
        return check_uint(left + right)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return [*left, *right]
    if kind is Timestamp and type(right) is Duration:
        return Timestamp(left.nanos + right.nanos)
    if kind is Duration and type(right) is Timestamp:
        return Timestamp(left.nanos + right.nanos)
    if kind is Duration and type(right) is Duration:
        return _duration(left.nanos + right.nanos)
    raise NoSuchOverload("_+_")


def _duration(nanos: int) -> Duration:
    if not -Duration.LIMIT <= nanos <= Duration.LIMIT:
        raise CelError("integer overflow")
    return Duration(nanos)


def subtract(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        return check_int(left - right)
    if kind is float and type(right) is float:
        return left - right
    if kind is UInt and type(right) is UInt:
        return check_uint(left - right)
    if kind is Timestamp and type(right) is Timestamp:
        return _duration(left.nanos - right.nanos)
    if kind is Timestamp and type(right) is Duration:
        return Timestamp(left.nanos - right.nanos)
    if kind is Duration and type(right) is Duration:
        return _duration(left.nanos - right.nanos)
    raise NoSuchOverload("_-_")


def multiply(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        return check_int(left * right)
    if kind is float and type(right) is float:
        return left * right
    if kind is UInt and type(right) is UInt:
        return check_uint(left * right)
    raise NoSuchOverload("_*_")


def divide(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is float and type(right) is float:
        if right == 0:
            if left == 0 or math.isnan(left):
                return math.nan
            return math.copysign(math.inf, left) * math.copysign(1.0, right)
        return left / right
    if kind in (int, UInt) and type(right) is kind:
        if right == 0:
            raise CelError("division by zero")
        quotient = abs(left) // abs(right)
        if (left < 0) != (right < 0):
            quotient = -quotient
        return check_int(quotient) if kind is int else UInt(quotient)
    raise NoSuchOverload("_/_")


def modulo(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind in (int, UInt) and type(right) is kind:
        if right == 0:
            raise CelError("modulus by zero")
        remainder = abs(left) % abs(right)
        return -remainder if left < 0 else (remainder if kind is int else UInt(remainder))
    raise NoSuchOverload("_%_")


def negate(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return check_int(-value)
    if kind is float:
        return -value
    if kind is Duration:
        return Duration(-value.nanos)
    raise NoSuchOverload("-_")


def logical_not(value: Any) -> bool:
    if type(value) is bool:
        return not value
    raise NoSuchOverload("!_")


def not_equals(left: Any, right: Any) -> bool:
    return not equals(left, right)


def _ordering(function: str, test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def ordered(left: Any, right: Any) -> bool:
        kind = type(left)
        if kind is type(right) and kind in (int, str):
            return test((left > right) - (left < right))
        try:
            result = compare(left, right)
        except NoSuchOverload:
            raise NoSuchOverload(function) from None
        if result == 2:  # a NaN: cel-go's Compare is an error, not false
            raise CelError("NaN values cannot be ordered")
        return test(result)

    return ordered


less = _ordering("_<_", lambda c: c < 0)
less_equals = _ordering("_<=_", lambda c: c <= 0)
greater = _ordering("_>_", lambda c: c > 0)
greater_equals = _ordering("_>=_", lambda c: c >= 0)


def index(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        value = map_get(container, key, _MISSING)
        if value is _MISSING:
            raise CelError(f"no such key: {_key_text(key)}")
        return value
    if isinstance(container, list | tuple):
        position = _list_index(key)
        if not 0 <= position < len(container):
            raise CelError(f"index out of range: {position}")
        return container[position]
    if type(container) is Optional:  # within an optional chain
        return optional_index(container, key)
    raise NoSuchOverload("_[_]")


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _list_index(key: Any) -> int:
    kind = type(key)
    if kind is int or kind is UInt:
        return int(key)
    if kind is float and key.is_integer():
        return int(key)
    if kind is float:
        raise CelError(f"unsupported index value {key!r} in list")
    raise NoSuchOverload("_[_]")


def contained_in(item: Any, container: Any) -> bool:
    if isinstance(container, list | tuple):
        kind = type(item)
        if kind is str:
            return any(type(element) is str and element == item for element in container)
        return any(equals(item, element) for element in container)
    if isinstance(container, dict):
        return map_get(container, item, _MISSING) is not _MISSING
    raise NoSuchOverload("@in")


def size(value: Any) -> int:
    if isinstance(value, str | list | tuple | dict | bytes):
        return len(value)
    raise NoSuchOverload("size")


def contains(text: Any, part: Any) -> bool:
    _strings("contains", text, part)
    return bool(part in text)


def starts_with(text: Any, part: Any) -> bool:
    _strings("startsWith", text, part)
    return bool(text.startswith(part))


def ends_with(text: Any, part: Any) -> bool:
    _strings("endsWith", text, part)
    return bool(text.endswith(part))


def _strings(function: str, *values: Any) -> None:
    if any(type(value) is not str for value in values):
        raise NoSuchOverload(function)


_REGEX_CACHE: dict[str, Any] = {}
_REGEX_CACHE_LIMIT = 256  # patterns are almost always literals in policies; request-made ones are bounded


def compile_regex(pattern: str) -> Any:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        options = re2.Options()
        options.log_errors = False
        try:
            compiled = re2.compile(pattern, options)
        except re2.error as error:
            raise CelError(f"invalid regular expression: {pattern}: {error}") from None
        if len(pattern) <= 1024:
            if len(_REGEX_CACHE) >= _REGEX_CACHE_LIMIT:
                _REGEX_CACHE.clear()
            _REGEX_CACHE[pattern] = compiled
    return compiled


def matches(text: Any, pattern: Any) -> bool:
    _strings("matches", text, pattern)
    return compile_regex(pattern).search(text) is not None


# --- conversions --------------------------------------------------------------------------------------------


def to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is UInt:
        return check_int(int(value))
    if kind is float:
        if math.isnan(value) or not -(2.0**63) < value < 2.0**63:  # cel-go refuses -2^63 too
            raise CelError("integer overflow")
        return int(value)
    if kind is str:
        try:
            return check_int(int(value, 10)) if _plain_integer(value) else _bad_int(value)
        except ValueError:
            return _bad_int(value)
    if kind is Timestamp:
        return value.nanos // 10**9  # type: ignore[no-any-return]
    if kind is Duration:  # nanoseconds, as cel-go's int(duration('1s')) == 1000000000
        return value.nanos  # type: ignore[no-any-return]
    raise NoSuchOverload("int")


def _plain_integer(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    return body.isdigit() and body.isascii()


def _bad_int(text: str) -> int:
    raise CelError(f"cannot convert {text!r} to int")


def to_uint(value: Any) -> UInt:
    kind = type(value)
    if kind is UInt:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return check_uint(value)
    if kind is float:
        if math.isnan(value) or not -1 < value < 2.0**64:
            raise CelError("unsigned integer overflow")
        return UInt(int(value))
    if kind is str:
        if not (value.isdigit() and value.isascii()):
            raise CelError(f"cannot convert {value!r} to uint")
        return check_uint(int(value))
    raise NoSuchOverload("uint")


def to_double(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int or kind is UInt:
        return float(value)
    if kind is str:
        return _parse_double(value)
    raise NoSuchOverload("double")


_DECIMAL_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+\Z")
_SPECIAL_FLOATS = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
                   "+infinity": math.inf, "-infinity": -math.inf, "nan": math.nan}


def _parse_double(text: str) -> float:
    """Go's strconv.ParseFloat, as cel-go's double(string): decimal or hexadecimal (`0x1p-2`) notation, `inf`,
    `infinity` and `nan` in any case; no spaces or underscores; a finite number too large is an error."""
    special = _SPECIAL_FLOATS.get(text.lower())
    if special is not None:
        return special
    if _DECIMAL_FLOAT.match(text):
        number = float(text)
    elif _HEX_FLOAT.match(text):
        try:
            number = float.fromhex(text)
        except OverflowError:
            number = math.inf
    else:
        raise CelError("type conversion error from 'string' to 'double'")
    if math.isinf(number):
        raise CelError("type conversion error from 'string' to 'double'")
    return number


def to_string(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is UInt:
        return str(int(value))
    if kind is float:
        return format_double(value)
    if kind is bytes:
        try:
            return value.decode("utf-8")  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            raise CelError("invalid UTF-8 in bytes, cannot convert to string") from None
    if kind is Timestamp:
        return timefmt.format_timestamp(value)
    if kind is Duration:
        return timefmt.format_duration(value)
    raise NoSuchOverload("string")


def format_double(value: float) -> str:
    """As cel-go prints a double (Go's `%g`): the shortest digits that read back the same, with an exponent when it
    is below -4 or at least 6 (`1e+06`, `1.5e-05`, `123456`, `-0`)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    shortest = Decimal(repr(abs(value))).as_tuple()  # repr: the shortest digits that round-trip, as Go's
    digits = "".join(map(str, shortest.digits)).rstrip("0")
    point = len(shortest.digits) + int(shortest.exponent)  # where the decimal point falls among the digits
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        fraction = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{fraction}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def to_bytes(value: Any) -> bytes:
    kind = type(value)
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is str:
        return value.encode("utf-8")  # type: ignore[no-any-return]
    raise NoSuchOverload("bytes")


def to_bool(value: Any) -> bool:
    kind = type(value)
    if kind is bool:
        return value  # type: ignore[no-any-return]
    if kind is str:
        if value in ("true", "True", "TRUE", "t", "T", "1"):  # Go's strconv.ParseBool, as cel-go
            return True
        if value in ("false", "False", "FALSE", "f", "F", "0"):
            return False
        raise CelError(f"type conversion error from 'string' to 'bool': {value!r}")
    raise NoSuchOverload("bool")


def to_timestamp(value: Any) -> Timestamp:
    kind = type(value)
    if kind is Timestamp:
        return value  # type: ignore[no-any-return]
    if kind is str:
        return timefmt.parse_timestamp(value)
    if kind is int:
        return Timestamp(value * 10**9)
    raise NoSuchOverload("timestamp")


def to_duration(value: Any) -> Duration:
    kind = type(value)
    if kind is Duration:
        return value  # type: ignore[no-any-return]
    if kind is str:
        return timefmt.parse_duration(value)
    if kind is int:
        return Duration(value)
    raise NoSuchOverload("duration")


def to_type(value: Any) -> CelType:
    return type_of(value)


def to_dyn(value: Any) -> Any:
    return value


# --- timestamps and durations -------------------------------------------------------------------------------


def _time_part(function: str, part: Callable[[Any], int], duration_part: Callable[[int], int] | None = None
               ) -> Callable[..., int]:
    def accessor(value: Any, zone: Any = None) -> int:
        if type(value) is Timestamp and (zone is None or type(zone) is str):
            try:
                return part(timefmt.to_datetime(value, zone))
            except OverflowError:  # the local date is in year 0 or 10000, past Python's datetime: take it one
                # Gregorian cycle (400 years, the same calendar) nearer, and move the year back
                years = 400 if value.nanos > 0 else -400
                nearer = Timestamp(value.nanos - years // 400 * _GREGORIAN_CYCLE_NANOS)
                return part(timefmt.to_datetime(nearer, zone)) + (years if function == "getFullYear" else 0)
        if type(value) is Duration and zone is None and duration_part is not None:
            return duration_part(value.nanos)
        raise NoSuchOverload(function)

    return accessor


_GREGORIAN_CYCLE_NANOS = 146097 * 86400 * 10**9


def _truncated(nanos: int, unit: int) -> int:
    return -(-nanos // unit) if nanos < 0 else nanos // unit


TIME_ACCESSORS: dict[str, Callable[..., int]] = {
    "getFullYear": _time_part("getFullYear", lambda d: d.year),
    "getMonth": _time_part("getMonth", lambda d: d.month - 1),
    "getDayOfYear": _time_part("getDayOfYear", lambda d: d.timetuple().tm_yday - 1),
    "getDayOfMonth": _time_part("getDayOfMonth", lambda d: d.day - 1),
    "getDate": _time_part("getDate", lambda d: d.day),
    "getDayOfWeek": _time_part("getDayOfWeek", lambda d: (d.weekday() + 1) % 7),
    "getHours": _time_part("getHours", lambda d: d.hour, lambda n: _truncated(n, 3600 * 10**9)),
    "getMinutes": _time_part("getMinutes", lambda d: d.minute, lambda n: _truncated(n, 60 * 10**9)),
    "getSeconds": _time_part("getSeconds", lambda d: d.second, lambda n: _truncated(n, 10**9)),
    "getMilliseconds": _time_part("getMilliseconds", lambda d: d.microsecond // 1000,
                                  lambda n: _truncated(n, 10**6) % 1000 if n >= 0 else -((-n // 10**6) % 1000)),
}


# --- optional values ----------------------------------------------------------------------------------------


def optional_of(value: Any) -> Optional:
    return Optional(value)


def optional_of_non_zero(value: Any) -> Optional:
    if value is None or value is False or (type(value) in (int, UInt, float) and value == 0) or (
            isinstance(value, str | bytes | list | tuple | dict) and len(value) == 0):
        return Optional.NONE
    if isinstance(value, Timestamp | Duration) and value.nanos == 0:
        return Optional.NONE
    return Optional(value)


def optional_none() -> Optional:
    return Optional.NONE


def optional_has_value(value: Any) -> bool:
    if type(value) is not Optional:
        raise NoSuchOverload("hasValue")
    return value.present


def optional_value(value: Any) -> Any:
    if type(value) is not Optional:
        raise NoSuchOverload("value")
    if not value.present:
        raise CelError("optional.none() dereference")
    return value.value


def optional_select(container: Any, field: str) -> Optional:
    """`container.?field`: the field's value if present, else optional.none()."""
    if type(container) is Optional:
        if not container.present:
            return Optional.NONE
        container = container.value
    if isinstance(container, dict):
        value = map_get(container, field, _MISSING)
        return Optional.NONE if value is _MISSING else Optional(value)
    raise NoSuchOverload("_?._")


def optional_index(container: Any, key: Any) -> Optional:
    """`container[?key]`."""
    if type(container) is Optional:
        if not container.present:
            return Optional.NONE
        container = container.value
    if isinstance(container, dict):
        value = map_get(container, key, _MISSING)
        return Optional.NONE if value is _MISSING else Optional(value)
    if isinstance(container, list | tuple):
        position = _list_index(key)
        return Optional(container[position]) if 0 <= position < len(container) else Optional.NONE
    raise NoSuchOverload("_[?_]")


def map_insert(mapping: Any, key: Any, value: Any = _MISSING) -> dict[Any, Any]:
    """`cel.@mapInsert(m, k, v)` and `cel.@mapInsert(m, entries)`: a key already there is an error. Only the
    two-variable comprehensions call it, on their own accumulator, so it inserts in place (linear, not quadratic)."""
    if not isinstance(mapping, dict):
        raise NoSuchOverload("cel.@mapInsert")
    if value is _MISSING:
        if not isinstance(key, dict):
            raise NoSuchOverload("cel.@mapInsert")
        updated = mapping
        for entry_key, entry_value in key.items():
            updated = map_insert(updated, entry_key, entry_value)
        return updated
    if map_get(mapping, key, _MISSING) is not _MISSING:
        raise CelError(f"insert failed: key {_key_text(key)} already exists")
    mapping[key] = value
    return mapping


def list_append(items: list[Any], item: Any) -> list[Any]:
    """`accumulator + [item]` of a comprehension's own accumulator, in place."""
    items.append(item)
    return items


# Strict standard functions by name; the compiler calls them with the receiver first.
STANDARD: dict[str, Callable[..., Any]] = {
    "_+_": add, "_-_": subtract, "_*_": multiply, "_/_": divide, "_%_": modulo, "-_": negate, "!_": logical_not,
    "_==_": equals, "_!=_": not_equals, "_<_": less, "_<=_": less_equals, "_>_": greater, "_>=_": greater_equals,
    "_[_]": index, "@in": contained_in, "size": size, "contains": contains, "startsWith": starts_with,
    "endsWith": ends_with, "matches": matches, "int": to_int, "uint": to_uint, "double": to_double,
    "string": to_string, "bytes": to_bytes, "bool": to_bool, "timestamp": to_timestamp, "duration": to_duration,
    "type": to_type, "dyn": to_dyn, **TIME_ACCESSORS,
    "optional.of": optional_of, "optional.ofNonZeroValue": optional_of_non_zero, "optional.none": optional_none,
    "cel.@mapInsert": map_insert, "@listAppend": list_append, "hasValue": optional_has_value, "value": optional_value, "_?._": optional_select, "_[?_]": optional_index,
}

_ = UINT64_MAX  # re-exported range constant used by conversions' callers
