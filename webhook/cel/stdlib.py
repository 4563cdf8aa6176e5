"""CEL's standard functions and operators, each one Python function over every type it is defined for.

Operators check their argument types themselves (cheap `type(x) is int` tests on the common path), so one
implementation serves a call whatever overloads the checker left open. The strict logical operators, the
conditional and `@in` for maps live in the compiler (they are not strict in their arguments, or need the node).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import re2

from webhook.cel.conversions import (
    TIME_ACCESSORS,
    to_bool,
    to_bytes,
    to_double,
    to_duration,
    to_dyn,
    to_int,
    to_string,
    to_timestamp,
    to_type,
    to_uint,
)
from webhook.cel.values import (
    INT64_MAX,
    INT64_MIN,
    CelError,
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
    if not Duration.MIN <= nanos <= Duration.LIMIT:
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
            raise CelError(f"index '{position}' out of range in list size '{len(container)}'")
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
    raise CelError(f"unsupported index type '{type_of(key).name}' in list")


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
    "hasValue": optional_has_value, "value": optional_value, "_?._": optional_select, "_[?_]": optional_index,
    "cel.@mapInsert": map_insert, "@listAppend": list_append,
}

