"""The math extension (cel-expr-python's `ext_math.ExtMath()`, version 2) as cel-go's ext/math.go implements it.

`math.greatest` and `math.least` are macros: the parser turns them into `math.@max` and `math.@min` with one
argument (a number or a list), two numbers, or, for three or more, one list literal. Numbers of different types
compare as cel-go compares them (an int or uint against a double as a double), the first of equal values wins
(`math.greatest(1u, 1)` is `1u`), and NaN cannot be ordered.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from webhook.cel.functions import DOUBLE, INT, LIST, UINT, FunctionTable, Kind
from webhook.cel.values import INT64_MAX, INT64_MIN, UINT64_MAX, CelError, UInt, compare

_NUMBER_TYPES = (int, UInt, float)
_UINT64_MODULUS = UINT64_MAX + 1


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES


def _is_nan(value: Any) -> bool:
    return type(value) is float and math.isnan(value)


def _extreme_pair(function: str, sign: int) -> Callable[[Any, Any], Any]:
    """`math.@max(a, b)` (sign 1) or `math.@min(a, b)` (sign -1): `b` only if it is strictly beyond `a`."""

    def pick(first: Any, second: Any) -> Any:
        if _is_nan(first) or _is_nan(second):
            raise CelError(f"NaN values cannot be ordered: {function}")
        return second if compare(second, first) == sign else first

    return pick


def _extreme_list(function: str, sign: int) -> Callable[[Sequence[Any]], Any]:
    """`math.@max(list)` or `math.@min(list)`; any element that is not a number, or NaN among two or more, fails
    with cel-go's `no such overload: math.@max`."""

    def pick(items: Sequence[Any]) -> Any:
        if not items:
            raise CelError(f"{function}(list) argument must not be empty")
        best = items[0]
        for item in itertools.islice(items, 1, None):
            if not (_is_number(best) and _is_number(item)) or _is_nan(best) or _is_nan(item):
                raise CelError(f"no such overload: {function}")
            if compare(item, best) == sign:
                best = item
        if not _is_number(best):
            raise CelError(f"no such overload: {function}")
        return best

    return pick


def _identity(value: Any) -> Any:
    return value


def ceil(value: float) -> float:
    """`math.ceil(x)`: the least integral double not below `x` (NaN and infinities as they are)."""
    return value if not math.isfinite(value) else math.copysign(float(math.ceil(value)), value)


def floor(value: float) -> float:
    """`math.floor(x)`: the greatest integral double not above `x`."""
    return value if not math.isfinite(value) else math.copysign(float(math.floor(value)), value)


def trunc(value: float) -> float:
    """`math.trunc(x)`: `x` without its fraction."""
    return value if not math.isfinite(value) else math.copysign(float(math.trunc(value)), value)


def round_half_away(value: float) -> float:
    """`math.round(x)`: the nearest integral double, halves away from zero (Go's math.Round, not banker's)."""
    if not math.isfinite(value):
        return value
    whole = math.trunc(value)
    fraction = value - whole  # exact: a double with a fraction is below 2**52
    if fraction >= 0.5:
        whole += 1
    elif fraction <= -0.5:
        whole -= 1
    return math.copysign(float(whole), value)


def is_inf(value: float) -> bool:
    """`math.isInf(x)`."""
    return math.isinf(value)


def is_nan(value: float) -> bool:
    """`math.isNaN(x)`."""
    return math.isnan(value)


def is_finite(value: float) -> bool:
    """`math.isFinite(x)`: neither infinite nor NaN."""
    return math.isfinite(value)


def abs_int(value: int) -> int:
    """`math.abs(int)`; the least int64 has no positive counterpart."""
    if value == INT64_MIN:
        raise CelError("integer overflow")
    return abs(value)


def abs_double(value: float) -> float:
    """`math.abs(double)`."""
    return math.fabs(value)


def sign_int(value: int) -> int:
    """`math.sign(int)`: -1, 0 or 1."""
    return (value > 0) - (value < 0)


def sign_uint(value: UInt) -> UInt:
    """`math.sign(uint)`: 0u or 1u."""
    return UInt(1 if value else 0)


def sign_double(value: float) -> float:
    """`math.sign(double)`: -1.0, 0.0 or 1.0; NaN for NaN."""
    if math.isnan(value):
        return value
    return 1.0 if value > 0 else -1.0 if value < 0 else 0.0


def _to_int64(value: int) -> int:
    """The low 64 bits of `value` as a signed int64 (Go's wrapping conversion)."""
    value &= UINT64_MAX
    return value - _UINT64_MODULUS if value > INT64_MAX else value


def _check_offset(function: str, offset: int) -> None:
    if offset < 0:
        raise CelError(f"math.{function}() negative offset: {offset}")


def shift_left_int(value: int, offset: int) -> int:
    """`math.bitShiftLeft(int, int)`: bits shifted out are lost, 64 or more leaves 0."""
    _check_offset("bitShiftLeft", offset)
    return 0 if offset >= 64 else _to_int64(value << offset)


def shift_left_uint(value: UInt, offset: int) -> UInt:
    """`math.bitShiftLeft(uint, int)`."""
    _check_offset("bitShiftLeft", offset)
    return UInt(0 if offset >= 64 else (value << offset) & UINT64_MAX)


def shift_right_int(value: int, offset: int) -> int:
    """`math.bitShiftRight(int, int)`: a logical shift (zeros come in from the left, also for negative ints)."""
    _check_offset("bitShiftRight", offset)
    return 0 if offset >= 64 else _to_int64((value & UINT64_MAX) >> offset)


def shift_right_uint(value: UInt, offset: int) -> UInt:
    """`math.bitShiftRight(uint, int)`."""
    _check_offset("bitShiftRight", offset)
    return UInt(0 if offset >= 64 else value >> offset)


def sqrt(value: int | float) -> float:
    """`math.sqrt(x)` as a double; NaN below zero."""
    number = float(value)
    return math.nan if number < 0 else math.sqrt(number)


FUNCTIONS = FunctionTable()
_KINDS: dict[str, Kind] = {"int": INT, "uint": UINT, "double": DOUBLE}
for _name, _sign in (("@max", 1), ("@min", -1)):
    _function = f"math.{_name}"
    _pair = _extreme_pair(_function, _sign)
    _list = _extreme_list(_function, _sign)
    for _first, _first_kind in _KINDS.items():
        FUNCTIONS.add(_function, f"math_{_name}_{_first}", (_first_kind,), _identity)
        FUNCTIONS.add(_function, f"math_{_name}_list_{_first}", (LIST,), _list)
        for _second, _second_kind in _KINDS.items():
            FUNCTIONS.add(_function, f"math_{_name}_{_first}_{_second}", (_first_kind, _second_kind), _pair)

for _function, _overload_id, _kinds, _impl in (
    ("math.ceil", "math_ceil_double", (DOUBLE,), ceil),
    ("math.floor", "math_floor_double", (DOUBLE,), floor),
    ("math.round", "math_round_double", (DOUBLE,), round_half_away),
    ("math.trunc", "math_trunc_double", (DOUBLE,), trunc),
    ("math.isInf", "math_isInf_double", (DOUBLE,), is_inf),
    ("math.isNaN", "math_isNaN_double", (DOUBLE,), is_nan),
    ("math.isFinite", "math_isFinite_double", (DOUBLE,), is_finite),
    ("math.abs", "math_abs_int", (INT,), abs_int),
    ("math.abs", "math_abs_uint", (UINT,), _identity),
    ("math.abs", "math_abs_double", (DOUBLE,), abs_double),
    ("math.sign", "math_sign_int", (INT,), sign_int),
    ("math.sign", "math_sign_uint", (UINT,), sign_uint),
    ("math.sign", "math_sign_double", (DOUBLE,), sign_double),
    ("math.bitAnd", "math_bitAnd_int_int", (INT, INT), lambda a, b: a & b),
    ("math.bitAnd", "math_bitAnd_uint_uint", (UINT, UINT), lambda a, b: UInt(a & b)),
    ("math.bitOr", "math_bitOr_int_int", (INT, INT), lambda a, b: a | b),
    ("math.bitOr", "math_bitOr_uint_uint", (UINT, UINT), lambda a, b: UInt(a | b)),
    ("math.bitXor", "math_bitXor_int_int", (INT, INT), lambda a, b: a ^ b),
    ("math.bitXor", "math_bitXor_uint_uint", (UINT, UINT), lambda a, b: UInt(a ^ b)),
    # The checker's ids for bitNot repeat the operand type (cel-cpp's naming); cel-go says math_bitNot_int.
    ("math.bitNot", "math_bitNot_int_int", (INT,), lambda a: ~a),
    ("math.bitNot", "math_bitNot_uint_uint", (UINT,), lambda a: UInt(UINT64_MAX ^ a)),
    ("math.bitShiftLeft", "math_bitShiftLeft_int_int", (INT, INT), shift_left_int),
    ("math.bitShiftLeft", "math_bitShiftLeft_uint_int", (UINT, INT), shift_left_uint),
    ("math.bitShiftRight", "math_bitShiftRight_int_int", (INT, INT), shift_right_int),
    ("math.bitShiftRight", "math_bitShiftRight_uint_int", (UINT, INT), shift_right_uint),
    ("math.sqrt", "math_sqrt_int", (INT,), sqrt),
    ("math.sqrt", "math_sqrt_uint", (UINT,), sqrt),
    ("math.sqrt", "math_sqrt_double", (DOUBLE,), sqrt),
):
    FUNCTIONS.add(_function, _overload_id, _kinds, _impl)
