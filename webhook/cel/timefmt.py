"""Timestamps and durations in text, as cel-go reads and writes them (RFC 3339; Go's duration syntax)."""

from __future__ import annotations

import datetime
import re
import zoneinfo
from decimal import Decimal

from webhook.cel.values import CelError, Duration, Timestamp

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# Go's time.Parse(time.RFC3339, ...): ASCII digits, upper-case T and Z, a fraction after a period or a comma (digits
# past nanoseconds dropped), zone offsets up to 24:60.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))\Z", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)
_NOT_A_TIMESTAMP = "type conversion error from 'string' to 'google.protobuf.Timestamp'"  # cel-go's texts
_NOT_A_DURATION = "type conversion error from 'string' to 'google.protobuf.Duration'"
_UNIT_NANOS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
               "h": 3600 * 10**9}


def parse_timestamp(text: str) -> Timestamp:
    found = _RFC3339.match(text)
    if found is None or (found.group(9) and (int(found.group(10)) > 24 or int(found.group(11)) > 60)):
        raise CelError(_NOT_A_TIMESTAMP)
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    fraction = (found.group(7) or "")[:9].ljust(9, "0")
    cycles = 1 if year == 0 else 0  # year 0 (Go reads it) as year 400: the same calendar, 146097 days later
    try:
        moment = datetime.datetime(year + 400 * cycles, month, day, hour, minute, second, tzinfo=datetime.UTC)
    except ValueError:
        raise CelError(_NOT_A_TIMESTAMP) from None
    offset = 0
    if found.group(9):
        offset = (int(found.group(10)) * 60 + int(found.group(11))) * 60
        if found.group(9) == "-":
            offset = -offset
    seconds = (moment - _EPOCH) // datetime.timedelta(seconds=1) - offset - cycles * 146097 * 86400
    try:
        return Timestamp(seconds * 10**9 + int(fraction))
    except CelError:  # years 0 or 10000 in UTC, from the offset
        raise CelError("timestamp overflow") from None


def format_timestamp(value: Timestamp) -> str:
    """RFC 3339 in UTC with as many fraction digits as needed (Go's time.RFC3339Nano)."""
    seconds, nanos = divmod(value.nanos, 10**9)
    moment = _EPOCH + datetime.timedelta(seconds=seconds)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if len(text) < 19:  # years before 1000 lose their leading zeros on some platforms
        text = f"{moment.year:04d}" + text[text.index("-"):]
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def parse_duration(text: str) -> Duration:
    """Go's time.ParseDuration: a sign, then numbers with units (`1h30m`, `-1.5s`, `300ms`, `0`)."""
    rest = text
    sign = 1
    if rest[:1] in "+-" and rest:
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return Duration(0)
    if not rest:
        raise CelError(_NOT_A_DURATION)
    total = 0
    position = 0
    while position < len(rest):
        found = _DURATION_PART.match(rest, position)
        if found is None:
            raise CelError(_NOT_A_DURATION)
        number, unit = found.group(1), found.group(2)
        whole, _, fraction = number.partition(".")
        scale = _UNIT_NANOS[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        position = found.end()
    try:
        return Duration(sign * total)
    except CelError:  # past int64 nanoseconds: Go's time.ParseDuration fails
        raise CelError(_NOT_A_DURATION) from None


def format_duration(value: Duration) -> str:
    """Seconds with the fraction that is needed, as cel-go prints a duration (`3600s`, `1.5s`, `-0.000000001s`):
    Go's `strconv.FormatFloat(d.Seconds(), 'f', -1, 64)`, so past about 104 days the nanoseconds round as a
    float64 does."""
    whole, nanos = divmod(abs(value.nanos), 10**9)
    sign = -1 if value.nanos < 0 else 1
    seconds = float(sign * whole) + float(sign * nanos) / 1e9  # time.Duration.Seconds()
    text = format(Decimal(repr(seconds)), "f")  # repr: the shortest digits that round-trip, as Go's -1 precision
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return ("0" if text == "-0" else text) + "s"


def to_datetime(value: Timestamp, zone: str | None = None) -> datetime.datetime:
    """The timestamp as an aware datetime in UTC, or in `zone` (an IANA name or a `+hh:mm` offset)."""
    seconds, nanos = divmod(value.nanos, 10**9)
    moment = _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
    if zone is None:
        return moment
    return moment.astimezone(_zone(zone))


_OFFSET = re.compile(r"([+-])?(\d{1,2}):(\d{2})\Z")


def _zone(name: str) -> datetime.tzinfo:
    found = _OFFSET.match(name)
    if found is not None:
        delta = datetime.timedelta(hours=int(found.group(2)), minutes=int(found.group(3)))
        return datetime.timezone(-delta if found.group(1) == "-" else delta)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CelError(f"unknown time zone: {name!r}") from None
