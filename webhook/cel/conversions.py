"""CEL's standard conversions (`int()`, `string()`, `timestamp()`, ...) and the timestamp and duration accessors."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from webhook.cel import timefmt
from webhook.cel.values import (
    CelError,
    CelType,
    Duration,
    NoSuchOverload,
    Timestamp,
    UInt,
    check_int,
    check_uint,
    type_of,
)

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
    raise CelError("type conversion error from 'string' to 'int'")  # cel-go's text (Go's strconv error dropped)


def to_uint(value: Any) -> UInt:
    kind = type(value)
    if kind is UInt:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return check_uint(value)
    if kind is float:
        if math.isnan(value) or not 0 <= value < 2.0**64:  # cel-go refuses -0.5 too (-0.0 is 0)
            raise CelError("unsigned integer overflow")
        return UInt(int(value))
    if kind is str:
        if not (value.isdigit() and value.isascii()):
            raise CelError("type conversion error from 'string' to 'uint'")
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
        raise CelError("type conversion error from 'string' to 'bool'")
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
