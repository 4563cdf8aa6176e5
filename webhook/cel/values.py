"""CEL values as the runtime holds them: the review's plain JSON values as they are, and small classes for the rest.

| CEL type | Python |
| --- | --- |
| null_type, bool, int, double, string, bytes | None, bool, int, float, str, bytes |
| uint | `UInt` (an int subclass, so that arithmetic and dict keys work as for int) |
| list, map | list (or tuple), dict |
| google.protobuf.Timestamp, Duration | `Timestamp`, `Duration` (nanoseconds, as CEL counts them) |
| type | `CelType` |
| optional_type | `Optional` |
| Kubernetes opaque types | their own classes (webhook.cel.kubernetes), each with a `cel_type` |

An error is a `CelError`: raised where it happens, and kept as a value only where CEL lets a later step absorb it
(`&&`, `||`, comprehension accumulators).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


class CelError(Exception):
    """A CEL evaluation error, with cel-go's wording (`no such key: x`, `division by zero`, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.cost = 0  # what the failed evaluation had cost when it failed (set by Program.evaluate_with_cost)


class NoSuchOverload(CelError):
    def __init__(self, function: str = "") -> None:
        super().__init__(f"no such overload: {function}" if function else "no such overload")


class UInt(int):
    """A CEL uint (an int that knows it is unsigned)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value, as `type(x)` returns and `int`, `string`, ... name; equal by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelType) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("type", self.name))

    def __repr__(self) -> str:
        return self.name


NULL_TYPE = CelType("null_type")
BOOL_TYPE = CelType("bool")
INT_TYPE = CelType("int")
UINT_TYPE = CelType("uint")
DOUBLE_TYPE = CelType("double")
STRING_TYPE = CelType("string")
BYTES_TYPE = CelType("bytes")
LIST_TYPE = CelType("list")
MAP_TYPE = CelType("map")
TYPE_TYPE = CelType("type")
TIMESTAMP_TYPE = CelType("google.protobuf.Timestamp")
DURATION_TYPE = CelType("google.protobuf.Duration")
OPTIONAL_TYPE = CelType("optional_type")

# The type identifiers every environment has.
TYPE_NAMES: dict[str, CelType] = {t.name: t for t in (
    NULL_TYPE, BOOL_TYPE, INT_TYPE, UINT_TYPE, DOUBLE_TYPE, STRING_TYPE, BYTES_TYPE, LIST_TYPE, MAP_TYPE, TYPE_TYPE,
    TIMESTAMP_TYPE, DURATION_TYPE, OPTIONAL_TYPE)}


class Timestamp:
    """A point in time, nanoseconds since the Unix epoch (UTC), within CEL's range (years 1 to 9999)."""

    __slots__ = ("nanos",)
    cel_type: ClassVar[CelType] = TIMESTAMP_TYPE
    MIN_SECONDS: ClassVar[int] = -62135596800  # 0001-01-01T00:00:00Z
    MAX_SECONDS: ClassVar[int] = 253402300799  # 9999-12-31T23:59:59Z

    def __init__(self, nanos: int) -> None:
        if not self.MIN_SECONDS * 10**9 <= nanos < (self.MAX_SECONDS + 1) * 10**9:
            raise CelError("timestamp overflow")  # cel-go's text
        self.nanos = nanos

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timestamp) and other.nanos == self.nanos

    def __lt__(self, other: Timestamp) -> bool:
        return self.nanos < other.nanos

    def __hash__(self) -> int:
        return hash(("timestamp", self.nanos))

    def __repr__(self) -> str:
        from webhook.cel.timefmt import format_timestamp

        return f"timestamp({format_timestamp(self)!r})"


class Duration:
    """A signed span of time in nanoseconds, within cel-go's range (Go's time.Duration: int64 nanoseconds, about
    +-292 years; the protobuf type's +-10,000 years do not apply)."""

    __slots__ = ("nanos",)
    cel_type: ClassVar[CelType] = DURATION_TYPE
    LIMIT: ClassVar[int] = 2**63 - 1
    MIN: ClassVar[int] = -(2**63)

    def __init__(self, nanos: int) -> None:
        if not self.MIN <= nanos <= self.LIMIT:
            raise CelError("integer overflow")  # cel-go's text, as its duration arithmetic says
        self.nanos = nanos

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.nanos == self.nanos

    def __lt__(self, other: Duration) -> bool:
        return self.nanos < other.nanos

    def __hash__(self) -> int:
        return hash(("duration", self.nanos))

    def __repr__(self) -> str:
        from webhook.cel.timefmt import format_duration

        return f"duration({format_duration(self)!r})"


class Optional:
    """CEL's optional value: `Optional(x)` holds x, `Optional.NONE` holds nothing."""

    __slots__ = ("present", "value")
    cel_type: ClassVar[CelType] = OPTIONAL_TYPE
    NONE: ClassVar[Optional]

    def __init__(self, value: Any, *, present: bool = True) -> None:
        self.value = value
        self.present = present

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Optional) or other.present != self.present:
            return False
        return not self.present or equals(self.value, other.value)

    def __hash__(self) -> int:
        return hash(("optional", self.present))

    def __repr__(self) -> str:
        return f"optional.of({self.value!r})" if self.present else "optional.none()"


Optional.NONE = Optional(None, present=False)


def type_of(value: Any) -> CelType:
    """The CEL type of a runtime value."""
    kind = type(value)
    found = _TYPES.get(kind)
    if found is not None:
        return found
    cel_type = getattr(kind, "cel_type", None)
    if isinstance(cel_type, CelType):
        return cel_type
    if isinstance(value, dict):
        return MAP_TYPE
    if isinstance(value, list | tuple):
        return LIST_TYPE
    raise CelError(f"no CEL type for a Python {kind.__name__}")


_TYPES: dict[type, CelType] = {
    type(None): NULL_TYPE, bool: BOOL_TYPE, int: INT_TYPE, UInt: UINT_TYPE, float: DOUBLE_TYPE, str: STRING_TYPE,
    bytes: BYTES_TYPE, list: LIST_TYPE, tuple: LIST_TYPE, dict: MAP_TYPE, CelType: TYPE_TYPE,
}
_NUMBERS = (int, float)  # UInt is an int


def equals(left: Any, right: Any) -> bool:
    """CEL's heterogeneous equality: numbers compare by value across int, uint and double; bool is not a number;
    lists and maps element by element; values of different types are unequal (never an error)."""
    kind = type(left)
    if kind is type(right):
        if kind in _SCALARS:
            return bool(left == right)
        pairs: Iterable[tuple[Any, Any]] | None = None
        if kind is dict:  # JSON objects and arrays: strings and ints compared inline, the rest recursively
            if len(left) != len(right):
                return False
            pairs = ((value, right.get(key, _MISSING) if type(key) is str else map_get(right, key, _MISSING))
                     for key, value in left.items())
        elif kind is list:
            if len(left) != len(right):
                return False
            pairs = zip(left, right, strict=True)
        if pairs is not None:
            for value, other in pairs:
                value_kind = type(value)
                if value_kind is type(other) and (value_kind is str or value_kind is int):
                    if value != other:
                        return False
                elif other is _MISSING or not equals(value, other):
                    return False
            return True
    if isinstance(left, bool) or isinstance(right, bool):
        return type(right) is type(left) and left == right
    if isinstance(left, _NUMBERS) and isinstance(right, _NUMBERS):
        if isinstance(left, float) and isinstance(right, float):
            return left == right
        if isinstance(left, float) or isinstance(right, float):
            return _number_equals(left, right)
        return int(left) == int(right)
    if isinstance(left, list | tuple):
        if not isinstance(right, list | tuple) or len(left) != len(right):
            return False
        return all(equals(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        if not isinstance(right, dict) or len(left) != len(right):
            return False
        for key, value in left.items():
            other = map_get(right, key, _MISSING)
            if other is _MISSING or not equals(value, other):
                return False
        return True
    if isinstance(right, list | tuple | dict) or left is None or right is None:
        return False
    if type(left) is not type(right) and not (isinstance(left, str) and isinstance(right, str)):
        return False
    return bool(left == right)


def _number_equals(left: int | float, right: int | float) -> bool:
    """An int (or uint) against a double, exactly (no rounding of large integers)."""
    number, other = (float(left), right) if isinstance(left, float) else (float(right), left)
    if math.isnan(number) or math.isinf(number):
        return False
    return number == float(other)  # as cel-go: the integer as a double


_SCALARS = frozenset({str, int, float, bytes, type(None), UInt})
_MISSING = object()


def map_get(mapping: dict[Any, Any], key: Any, default: Any) -> Any:
    """`mapping[key]` with CEL's key equality: 1, 1u and 1.0 find the same entry; true does not find 1."""
    kind = type(key)
    if kind is str:
        return mapping.get(key, default)
    if kind is bool:
        for candidate, value in mapping.items():
            if type(candidate) is bool and candidate == key:
                return value
        return default
    if kind is float:
        if not key.is_integer():
            return default
        key = int(key)
    if isinstance(key, int):
        for candidate, value in mapping.items():
            if type(candidate) is not bool and isinstance(candidate, int) and candidate == key:
                return value
        return default
    return mapping.get(key, default) if kind.__hash__ is not None else default


def compare(left: Any, right: Any) -> int:
    """-1, 0 or 1 for CEL's ordering (numbers across types, strings, bytes, bool, timestamps, durations);
    raises NoSuchOverload for values CEL does not order."""
    if isinstance(left, bool) or isinstance(right, bool):
        if type(left) is bool and type(right) is bool:
            return (left > right) - (left < right)
        raise NoSuchOverload()
    if isinstance(left, _NUMBERS) and isinstance(right, _NUMBERS):
        if (isinstance(left, float) and math.isnan(left)) or (isinstance(right, float) and math.isnan(right)):
            return 2  # unordered: every comparison false
        if isinstance(left, float) != isinstance(right, float):  # as cel-go: the integer as a double
            left, right = float(left), float(right)
        return int((left > right) - (left < right))
    kind = type(left)
    if kind is type(right) and kind in (str, bytes, Timestamp, Duration):
        return int((left > right) - (left < right))
    compare_to = getattr(left, "cel_compare", None)
    if compare_to is not None and type(right) is kind:
        return int(compare_to(right))
    raise NoSuchOverload()


def check_int(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise CelError("integer overflow")
    return value


def check_uint(value: int) -> UInt:
    if not 0 <= value <= UINT64_MAX:
        raise CelError("unsigned integer overflow")
    return UInt(value)
