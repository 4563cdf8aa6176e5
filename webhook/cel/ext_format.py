"""`<string>.format(<list>)` of the strings extension (version 4), clause by clause as cel-go's
ext/formatting_v2.go formats and words its errors.

Clauses: `%s` (any value but messages and opaque types), `%d` (int, uint, double), `%f` and `%e` (int, uint,
double; precision `%.3f`, default 6), `%b` (int, uint, bool), `%x` and `%X` (int, uint, string, bytes), `%o` (int,
uint); `%%` is a literal percent sign. Precision is capped at 1000 digits (cel-go caps it from version 5; the cap
keeps `"%.999999999f"` from allocating a gigabyte).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from webhook.cel.values import INT64_MAX, CelError, CelType, Duration, Timestamp, UInt, type_of

DEFAULT_PRECISION = 6
MAX_PRECISION = 1000


class _ClauseError(Exception):
    """A clause that cannot format its argument (cel-go wraps it as `error during formatting: ...`)."""


class _PrecisionError(Exception):
    """A malformed precision (cel-go wraps it as `could not parse formatting clause: ...`)."""


def format_string(template: str, args: Sequence[Any]) -> str:
    """`template.format(args)`: substitute each clause of `template` with the next argument."""
    out: list[str] = []
    index = 0
    arg_index = 0
    size = len(template)
    while index < size:
        if template[index] != "%":
            next_percent = template.find("%", index)
            end = size if next_percent < 0 else next_percent
            out.append(template[index:end])
            index = end
            continue
        if index + 1 < size and template[index + 1] == "%":
            out.append("%")
            index += 2
            continue
        # cel-go fetches the argument before it looks for the clause.
        if arg_index >= len(args):
            raise CelError(f"index {arg_index} out of range")
        if index + 1 >= size:
            raise CelError("unexpected end of string")
        index, text = _format_clause(template, start=index + 1, value=args[arg_index])
        out.append(text)
        arg_index += 1
    return "".join(out)


def _format_clause(template: str, *, start: int, value: Any) -> tuple[int, str]:
    """The clause at `start` (just after `%`) applied to `value`; the index after the clause and the text."""
    try:
        precision, index = _parse_precision(template, start)
    except _PrecisionError as error:
        raise CelError(f"could not parse formatting clause: error while parsing precision: {error}") from None
    verb = template[index]
    clause = _CLAUSES.get(verb)
    if clause is None:
        raise CelError(f'could not parse formatting clause: unrecognized formatting clause "{_go_byte_rune(verb)}"')
    try:
        return index + 1, clause(value, precision)
    except _ClauseError as error:
        raise CelError(f"error during formatting: {error}") from None


def _parse_precision(template: str, start: int) -> tuple[int, int]:
    """The precision of `.digits` at `start` (the default if there is none) and the index after it."""
    if template[start] != ".":
        return DEFAULT_PRECISION, start
    index = start + 1
    while True:
        if index >= len(template):
            raise _PrecisionError("could not find end of precision specifier")
        if template[index] not in "0123456789":
            break
        index += 1
    digits = template[start + 1 : index]
    if not digits:
        raise _PrecisionError('error while converting precision to integer: strconv.Atoi: parsing "": invalid syntax')
    if len(digits.lstrip("0")) > 19 or int(digits) > INT64_MAX:
        raise _PrecisionError(
            f'error while converting precision to integer: strconv.Atoi: parsing "{digits}": value out of range')
    precision = int(digits)
    if precision > MAX_PRECISION:
        raise _PrecisionError(f"precision {precision} exceeds maximum allowed precision {MAX_PRECISION}")
    return precision, index


def _go_byte_rune(verb: str) -> str:
    """The clause character as cel-go prints it: the first UTF-8 byte as a rune (`é` shows as `Ã`)."""
    return verb if verb < "\x80" else chr(verb.encode("utf-8", "surrogatepass")[0])


def type_name(value: Any) -> str:
    """The CEL type name of a value, as messages give it; the Python class name for a value CEL has no type for."""
    try:
        return type_of(value).name
    except CelError:
        return type(value).__name__


def _clause_string(value: Any, _precision: int) -> str:
    return _to_text(value)


def _to_text(value: Any) -> str:
    """A value as `%s` writes it: lists and maps element by element, map entries sorted by their text."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is UInt:
        return str(int(value))
    if kind is float:
        return _shortest_double(value)
    if kind is str:
        return str(value)
    if kind is bytes:
        # cel-go copies the bytes as they are; a Python str cannot hold invalid UTF-8.
        return bytes(value).decode("utf-8", errors="replace")
    if kind is Duration:
        return _shortest_fixed(_duration_seconds(value)) + "s"
    if kind is Timestamp:
        return _rfc3339_nano(value)
    if kind is CelType:
        return str(value.name)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_to_text(item) for item in value) + "]"
    if isinstance(value, dict):
        entries = sorted(((_to_text(key), _to_text(item)) for key, item in value.items()), key=lambda entry: entry[0])
        return "{" + ", ".join(f"{key}: {item}" for key, item in entries) + "}"
    raise _ClauseError(
        "string clause can only be used on strings, bools, bytes, ints, doubles, maps, lists, types, durations, "
        f"and timestamps, was given {type_name(value)}")


def _clause_decimal(value: Any, _precision: int) -> str:
    kind = type(value)
    if kind is int or kind is UInt:
        return str(int(value))
    if kind is float:
        return _shortest_double(value)
    raise _ClauseError(f"decimal clause can only be used on ints, uints, and doubles, was given {type_name(value)}")


def _clause_fixed(value: Any, precision: int) -> str:
    number = _as_double(value, "fixed-point clause")
    return _special_double(number) or f"{number:.{precision}f}"


def _clause_scientific(value: Any, precision: int) -> str:
    number = _as_double(value, "scientific clause")
    return _special_double(number) or f"{number:.{precision}e}"


def _as_double(value: Any, clause: str) -> float:
    kind = type(value)
    if kind is int or kind is UInt or kind is float:
        return float(value)
    raise _ClauseError(f"{clause} can only be used on ints, uints, and doubles, was given {type_name(value)}")


def _clause_binary(value: Any, _precision: int) -> str:
    kind = type(value)
    if kind is bool:
        return "1" if value else "0"
    if kind is int or kind is UInt:
        return format(int(value), "b")
    raise _ClauseError(f"only ints, uints, and bools can be formatted as binary, was given {type_name(value)}")


def _clause_hex(upper: bool) -> Callable[[Any, int], str]:
    def clause(value: Any, _precision: int) -> str:
        kind = type(value)
        if kind is int or kind is UInt:
            text = format(int(value), "x")
        elif kind is str:
            text = str(value).encode("utf-8", "surrogatepass").hex()
        elif kind is bytes:
            text = bytes(value).hex()
        else:
            raise _ClauseError(
                f"only ints, uints, bytes, and strings can be formatted as hex, was given {type_name(value)}")
        return text.upper() if upper else text

    return clause


def _clause_octal(value: Any, _precision: int) -> str:
    kind = type(value)
    if kind is int or kind is UInt:
        return format(int(value), "o")
    raise _ClauseError(f"octal clause can only be used on ints and uints, was given {type_name(value)}")


_CLAUSES: dict[str, Callable[[Any, int], str]] = {
    "s": _clause_string,
    "d": _clause_decimal,
    "f": _clause_fixed,
    "e": _clause_scientific,
    "b": _clause_binary,
    "x": _clause_hex(upper=False),
    "X": _clause_hex(upper=True),
    "o": _clause_octal,
}


def _special_double(number: float) -> str:
    """cel-spec's names for NaN and the infinities; empty for a finite number."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return ""


def _shortest_double(number: float) -> str:
    return _special_double(number) or _shortest_fixed(number)


def _shortest_fixed(number: float) -> str:
    """Go's `strconv.FormatFloat(x, 'f', -1, 64)`: the shortest digits that round-trip, without an exponent."""
    return format(Decimal(repr(number)).normalize(), "f")


def _duration_seconds(duration: Duration) -> float:
    """Go's `Duration.Seconds()`: whole seconds plus the fraction, as one double."""
    sign = -1 if duration.nanos < 0 else 1
    seconds, nanos = divmod(abs(duration.nanos), 10**9)
    return float(sign * seconds) + float(sign * nanos) / 1e9


def _rfc3339_nano(timestamp: Timestamp) -> str:
    """Go's RFC3339Nano in UTC: `2023-02-03T23:31:20.5Z`, fraction without trailing zeros."""
    seconds, nanos = divmod(timestamp.nanos, 10**9)
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    fraction = "." + f"{nanos:09d}".rstrip("0") if nanos else ""
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{fraction}Z")
