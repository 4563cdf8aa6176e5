"""cel-cpp's departures from cel-go, as overloads: a dialect of our runtime that answers as cel-expr-python does.

Kubernetes runs cel-go, so our runtime follows cel-go; cel-expr-python runs cel-cpp, which answers otherwise in a
few places (each checked against cel-go's sources: common/types, common/stdlib, interpreter). Each difference is
written down here once, as the overload cel-cpp in effect has, in the function table of an Environment that is
otherwise ours (the table is the Environment's documented extension point; the planner looks overloads up by the
ids the checker resolved). The differential test skips a disagreement that this dialect reproduces; any other
fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from webhook.cel import functions as kinds
from webhook.cel import kubernetes, stdlib, timefmt
from webhook.cel.environment import Environment, standard_functions
from webhook.cel.functions import FunctionTable, Overload
from webhook.cel.values import CelError, Duration, NoSuchOverload, Timestamp


def _in_map(key: Any, container: Any) -> bool:
    """`in` on a map with a key no map can have (null, bytes, list, timestamp...) is an error in cel-cpp; cel-go's
    Contains answers false."""
    if isinstance(container, dict) and not isinstance(key, str | int | float):
        raise NoSuchOverload("@in")
    return bool(stdlib.contained_in(key, container))


def _ordering(standard: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """cel-cpp orders a NaN (every comparison false); cel-go's Compare is an error ("NaN values cannot be
    ordered")."""

    def ordered(left: Any, right: Any) -> bool:
        numbers = isinstance(left, int | float) and isinstance(right, int | float)
        if numbers and any(isinstance(side, float) and math.isnan(side) for side in (left, right)):
            return False
        return standard(left, right)

    return ordered


def _to_int(value: Any) -> int:
    """cel-cpp converts a bool (typed dyn, which the checker lets through) to an int; cel-go has no such
    conversion."""
    return int(value) if isinstance(value, bool) else int(stdlib.to_int(value))


def _unimplemented(function: str) -> Callable[[Any], Any]:
    """cel-cpp declares int(duration) and duration(int) but implements neither; cel-go has both (nanoseconds)."""

    def unimplemented(value: Any) -> Any:
        raise NoSuchOverload(function)

    return unimplemented


def _fraction(nanos: int) -> str:
    """A fraction of a second in groups of three digits (`.500`, `.000000100`), as cel-cpp writes it; cel-go trims
    the zeros."""
    digits = f"{nanos:09d}"
    while digits.endswith("000"):
        digits = digits[:-3]
    return f".{digits}" if digits else ""


def _to_string(value: Any) -> str:
    """cel-cpp writes infinities and NaN as `inf`, `-inf`, `nan` (cel-go: `+Inf`, `-Inf`, `NaN`; cel-cpp's `-nan`
    is read as `nan`, a NaN's sign being the machine's), durations exactly (cel-go: through a float64), and
    fractions of seconds in groups of three digits."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Duration):
        seconds, nanos = divmod(abs(value.nanos), 10**9)
        return f"{'-' if value.nanos < 0 else ''}{seconds}{_fraction(nanos)}s"
    if isinstance(value, Timestamp):
        whole, _, fraction = timefmt.format_timestamp(value).removesuffix("Z").partition(".")
        return f"{whole}{_fraction(int(fraction.ljust(9, '0')) if fraction else 0)}Z"
    return str(stdlib.to_string(value))


def _integer(*, unsigned: bool) -> Callable[[Any], Any]:
    """cel-cpp (absl::SimpleAtoi) skips spaces around the digits and takes a + sign, for uint too; Go's strconv
    (cel-go) takes no spaces, and a + only for int."""
    standard = stdlib.to_uint if unsigned else stdlib.to_int

    def convert(text: str) -> Any:
        text = text.strip(" \t\n\v\f\r")
        return standard(text[1:] if text.startswith("+") and text[1:2] != "-" else text)

    return convert


def _to_double(text: str) -> float:
    """cel-cpp (absl::SimpleAtod) skips spaces, reads 1e400 as infinity, takes `+nan` and hexadecimal without a
    `p` exponent (`0x10`); Go's strconv.ParseFloat (cel-go) does none of these."""
    text = text.strip(" \t\n\v\f\r")
    if "_" in text or not text:
        raise CelError("cannot convert string to double")
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F.]+([pP][+-]?\d+)?", text):
            return float.fromhex(text)
        return float(text)
    except (ValueError, OverflowError):
        raise CelError("cannot convert string to double") from None


def _to_bool(text: str) -> bool:
    """cel-cpp takes neither `T` nor `F`, which Go's strconv.ParseBool (cel-go) takes."""
    if text in ("T", "F"):
        raise CelError("Type conversion error from 'string' to 'bool'")
    return bool(stdlib.to_bool(text))


def _to_duration(text: str) -> Any:
    """cel-cpp (absl::ParseDuration) refuses the unit `µs`, which Go's time.ParseDuration (cel-go) takes."""
    if "µ" in text or "μ" in text:
        raise CelError("String to Duration conversion failed")
    return stdlib.to_duration(text)


def _to_timestamp(text: str) -> Any:
    """cel-cpp (absl::ParseTime) takes a lower-case `t` and `z` and a leap second (`23:59:60`, the next minute),
    and refuses a comma before the fraction and an offset of 24 hours or 60 minutes, all of which Go's time.Parse
    (cel-go) does the other way round."""
    found = re.fullmatch(r"(.{10})[Tt](.{6})(\d\d)([.,]\d+)?([Zz]|[+-](\d\d):(\d\d))", text)
    if found is None:
        return stdlib.to_timestamp(text)
    date, minutes, seconds, fraction, zone = found.group(1, 2, 3, 4, 5)
    if (fraction or "").startswith(",") or (found.group(6) and (
            int(found.group(6)) >= 24 or int(found.group(7)) >= 60)):
        raise CelError("String to Timestamp conversion failed")
    if seconds == "60":
        moment = stdlib.to_timestamp(f"{date}T{minutes}59{zone.upper()}")
        return Timestamp(moment.nanos + 10**9)
    return stdlib.to_timestamp(f"{date}T{minutes}{seconds}{fraction or ''}{zone.upper()}")


def _split(ours: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """cel-cpp splits "" by "" into [""] (as by any other separator); cel-go's (Go's strings.Split) into []."""

    def split(text: str, separator: str, *limit: int) -> list[str]:
        if text == "" and separator == "" and limit != (0,):
            return [""]
        return ours(text, separator, *limit)

    return split


def _optional_list_index(container: Any, index: Any) -> Any:
    """cel-cpp's `list[?i]` takes only an int; cel-go indexes a list with a uint or an integral double too."""
    if type(index) is not int:
        raise NoSuchOverload("_[?_]")
    return stdlib.optional_index(container, index)


def _index_of_from(*, last: bool) -> Callable[[str, str, int], int]:
    """cel-cpp's `indexOf` and `lastIndexOf` with an offset (strings extension): the offset may equal the length
    (nothing found, or for lastIndexOf the whole string searched), and past it is an error even when searching for
    "" (cel-go, as our runtime: an offset at the length is an error, and "" is found at any offset)."""

    def index_of(text: str, search: str, offset: int) -> int:
        if not 0 <= offset <= len(text):
            raise CelError(f"index out of range: {offset}")
        if not search:
            return offset
        return text.rfind(search, 0, offset + len(search)) if last else text.find(search, offset)

    return index_of


def _substring(ours: Callable[[str, int, int], str]) -> Callable[[str, int, int], str]:
    """cel-cpp's `substring(start, end)` (strings extension) refuses an end at the length unless start is there too
    (`"abc".substring(1, 3)`); cel-go takes any end up to the length."""

    def substring(text: str, start: int, end: int) -> str:
        if start < end == len(text):
            raise CelError("<string>.substring(<start>, <end>): <start> or <end> is greater than <string>.size()")
        return ours(text, start, end)

    return substring


class _Departures(FunctionTable):
    """Our overloads, with cel-cpp's in their place where it departs from cel-go, and without the Kubernetes
    library's (cel-expr-python has none: `dyn(list).indexOf(x)`, which Kubernetes' lists library answers, has no
    overload there)."""

    def __init__(self, ours: FunctionTable) -> None:
        super().__init__()
        self.ours = ours

    def get(self, overload_id: str) -> Overload | None:
        if kubernetes.FUNCTIONS.get(overload_id) is not None:
            return None
        return super().get(overload_id) or self.ours.get(overload_id)

    def by_function(self, function: str) -> list[Overload]:
        return [*super().by_function(function), *self.ours.by_function(function)]


def cel_cpp_dialect(variables: Mapping[str, Any]) -> Environment:
    """Our Environment with cel-cpp's overloads where they depart from cel-go's."""
    ours = standard_functions()
    table = _Departures(ours)
    table.add("@in", "in_map", (kinds.ANY, kinds.MAP), _in_map)
    for function, name, standard in (("_<_", "less", stdlib.less), ("_<=_", "less_equals", stdlib.less_equals),
                                     ("_>_", "greater", stdlib.greater),
                                     ("_>=_", "greater_equals", stdlib.greater_equals)):
        for kind in ("int64", "uint64", "double"):
            table.add(function, f"{name}_{kind}", (kinds.ANY, kinds.ANY), _ordering(standard))
    # Negation of a duration (typed dyn): cel-go's Negater does it, cel-cpp has no overload (none declared here).
    table.add("-_", "negate_int64", (kinds.INT,), stdlib.negate)
    table.add("-_", "negate_double", (kinds.DOUBLE,), stdlib.negate)
    table.add("int", "int64_to_int64", ((bool, int),), _to_int)
    table.add("int", "duration_to_int64", (kinds.DURATION,), _unimplemented("int"))
    table.add("duration", "int64_to_duration", (kinds.INT,), _unimplemented("duration"))
    table.add("string", "double_to_string", (kinds.DOUBLE,), _to_string)
    table.add("string", "timestamp_to_string", (kinds.TIMESTAMP,), _to_string)
    table.add("string", "duration_to_string", (kinds.DURATION,), _to_string)
    table.add("int", "string_to_int64", (kinds.STRING,), _integer(unsigned=False))
    table.add("uint", "string_to_uint64", (kinds.STRING,), _integer(unsigned=True))
    table.add("double", "string_to_double", (kinds.STRING,), _to_double)
    table.add("bool", "string_to_bool", (kinds.STRING,), _to_bool)
    table.add("duration", "string_to_duration", (kinds.STRING,), _to_duration)
    table.add("timestamp", "string_to_timestamp", (kinds.STRING,), _to_timestamp)
    table.add("_[?_]", "list_optindex_optional_int", (kinds.LIST, kinds.ANY), _optional_list_index)
    table.add("_[?_]", "optional_list_optindex_optional_int", (kinds.OPTIONAL, kinds.ANY), _optional_list_index)
    strings_extension = (kinds.STRING, kinds.STRING, kinds.INT)
    if ours.get("string_index_of_string_int") is not None:
        table.add("indexOf", "string_index_of_string_int", strings_extension, _index_of_from(last=False))
        table.add("lastIndexOf", "string_last_index_of_string_int", strings_extension, _index_of_from(last=True))
    substring = ours.get("string_substring_int_int")
    if substring is not None:
        table.add("substring", substring.id, substring.kinds, _substring(substring.impl))
    for overload_id in ("string_split_string", "string_split_string_int"):
        split = ours.get(overload_id)
        if split is not None:
            table.add("split", overload_id, split.kinds, _split(split.impl))
    return Environment(variables, functions=table)
