"""Resource quantities as Kubernetes parses and computes them (k8s.io/apimachinery/pkg/api/resource).

A `Quantity` holds its exact value, which `==`, `compareTo`, `add` and `sub` use, and also the form Kubernetes
stores it in, because `asInteger()`, `isInteger()` and `asApproximateFloat()` answer from that form: an int64 with a
decimal scale (`int64Amount`) where ParseQuantity or an addition could keep one, an arbitrary-precision decimal
(`inf.Dec`) otherwise. So `quantity("1000m").asInteger()` fails, as it does in Kubernetes, although the value is 1.
"""

from __future__ import annotations

import re
from typing import ClassVar

from webhook.cel.kubernetes.gotext import wrap_int32
from webhook.cel.memo import short_text_cache
from webhook.cel.values import INT64_MAX, INT64_MIN, CelError, CelType

FORMAT_WRONG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
NUMERIC = "unable to parse numeric part of quantity"
SUFFIX = "unable to parse quantity's suffix"
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]+")
_NANO = -9  # the smallest scale Kubernetes keeps; finer values round up (away from zero)
# Limits Kubernetes does not have (it computes with arbitrary precision), so that an expression cannot make the server
# build numbers with a billion digits, and so that Python's int/str conversions (limited to 4300 digits) never fail:
# a parsed quantity's significant digits, the digits an addition may line two values up by, and a result's size.
MAX_DIGITS = 1000
MAX_ALIGNMENT = 1000
_MAX_BITS = 6700  # about 2000 decimal digits


def _fits(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def _normal(mantissa: int, exponent: int) -> tuple[int, int]:
    """The same value with no trailing zeros in the mantissa (zero is (0, 0))."""
    if mantissa == 0:
        return 0, 0
    while mantissa % 10 == 0:
        mantissa, exponent = mantissa // 10, exponent + 1
    return mantissa, exponent


def _scaled(value: int, scale: int) -> int | None:
    """positiveScaleInt64: value * 10**scale, or None where that leaves int64."""
    if value == 0:
        return 0
    if scale > 19:
        return None
    result = value * 10**scale
    return result if _fits(result) else None


def _int64_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    """int64Amount.Add: the sum at the smaller scale, or None where it leaves int64 (the caller then uses inf.Dec)."""
    (a_value, a_scale), (b_value, b_scale) = a, b
    if b_value == 0:
        return a
    if a_value == 0:
        return b
    if a_scale == b_scale:
        total, scale = a_value + b_value, a_scale
    elif a_scale > b_scale:
        shifted = _scaled(a_value, a_scale - b_scale)
        if shifted is None:
            return None
        total, scale = shifted + b_value, b_scale
    else:
        shifted = _scaled(b_value, b_scale - a_scale)
        if shifted is None:
            return None
        total, scale = a_value + shifted, a_scale
    return (total, scale) if _fits(total) else None


class Quantity:
    """A Kubernetes resource quantity (CEL type `kubernetes.Quantity`); equal by value, immutable."""

    __slots__ = ("_dec_scale", "_int", "exponent", "mantissa")
    cel_type: ClassVar[CelType] = CelType("kubernetes.Quantity")

    def __init__(self, mantissa: int, exponent: int, *, int_form: tuple[int, int] | None, dec_scale: int = 0) -> None:
        self.mantissa, self.exponent = _normal(mantissa, exponent)
        self._int = int_form  # (value, scale) of an int64Amount, or None for an inf.Dec
        self._dec_scale = dec_scale  # the inf.Dec's scale (digits after the point) when _int is None

    @classmethod
    def from_int64(cls, value: int, scale: int) -> Quantity:
        return cls(value, scale, int_form=(value, scale))

    @classmethod
    def from_decimal(cls, mantissa: int, exponent: int, *, scale: int) -> Quantity:
        return cls(mantissa, exponent, int_form=None, dec_scale=scale)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and (self.mantissa, self.exponent) == (other.mantissa, other.exponent)

    def __hash__(self) -> int:
        return hash(("quantity", self.mantissa, self.exponent))

    def __repr__(self) -> str:
        return f"quantity({self.decimal_text()!r})"

    def sign(self) -> int:
        return (self.mantissa > 0) - (self.mantissa < 0)

    def compare(self, other: Quantity) -> int:
        """-1, 0 or 1 (Quantity.Cmp), without building numbers as long as their exponents."""
        sign, other_sign = self.sign(), other.sign()
        if sign != other_sign or sign == 0:
            return (sign > other_sign) - (sign < other_sign)
        size = len(str(abs(self.mantissa))) + self.exponent
        other_size = len(str(abs(other.mantissa))) + other.exponent
        if size != other_size:
            return sign if size > other_size else -sign
        low = min(self.exponent, other.exponent)
        a = self.mantissa * 10 ** (self.exponent - low)
        b = other.mantissa * 10 ** (other.exponent - low)
        return int(a > b) - int(a < b)

    def add(self, other: Quantity) -> Quantity:
        """Quantity.Add: in int64 form while both operands have it and the sum fits, else as an inf.Dec."""
        if self._int is not None and other._int is not None:
            total = _int64_add(self._int, other._int)
            if total is not None:
                return Quantity.from_int64(*total)
        return self._decimal_sum(other, 1)

    def sub(self, other: Quantity) -> Quantity:
        """Quantity.Sub (int64Amount.Sub negates with Go's wrap-around, as Kubernetes does)."""
        if self._int is not None and other._int is not None:
            value, scale = other._int
            negated = -value if value != INT64_MIN else INT64_MIN
            total = _int64_add(self._int, (negated, scale))
            if total is not None:
                return Quantity.from_int64(*total)
        return self._decimal_sum(other, -1)

    def _decimal_scale(self) -> int:
        return -self._int[1] if self._int is not None else self._dec_scale

    def _decimal_sum(self, other: Quantity, sign: int) -> Quantity:
        scale = max(self._decimal_scale(), other._decimal_scale())
        if self.mantissa == 0 or other.mantissa == 0:
            mantissa, exponent = (other.mantissa * sign, other.exponent) if self.mantissa == 0 else (
                self.mantissa, self.exponent)
            return Quantity.from_decimal(mantissa, exponent, scale=scale)
        low, high = sorted((self.exponent, other.exponent))
        if high - low > MAX_ALIGNMENT:
            raise CelError("quantity arithmetic: the operands differ by too many orders of magnitude")
        total = self.mantissa * 10 ** (self.exponent - low) + sign * other.mantissa * 10 ** (other.exponent - low)
        if total.bit_length() > _MAX_BITS:
            raise CelError("quantity arithmetic: the result has too many digits")
        return Quantity.from_decimal(total, low, scale=scale)

    def as_int64(self) -> int | None:
        """Quantity.AsInt64: the value if Kubernetes holds it as an int64 with a non-negative scale that fits."""
        if self._int is None:
            return None
        value, scale = self._int
        if scale == 0:
            return value
        return None if scale < 0 else _scaled(value, scale)

    def integer_value(self) -> int | None:
        """The value as an int64 when it is a whole number that fits, whatever form holds it."""
        if self.exponent < 0 or (self.mantissa != 0 and self.exponent > 18):
            return None
        value = self.mantissa * 10**self.exponent
        return value if _fits(value) else None

    def approximate_float(self) -> float:
        """Quantity.AsApproximateFloat64: the stored digits as a float64 times math.Pow10 of the scale."""
        if self._int is not None:
            value, exponent = self._int
            base = float(value)
        else:
            base, exponent = _big_float(self.mantissa, self.exponent + self._dec_scale), -self._dec_scale
        return base if exponent == 0 else base * go_pow10(exponent)

    def decimal_text(self) -> str:
        """The exact value in decimal (`1536`, `0.5`, `-1.25`); past 10^30 as `<digits>e<exponent>`."""
        mantissa, exponent = self.mantissa, self.exponent
        if mantissa == 0:
            return "0"
        if exponent > 30:
            return f"{mantissa}e{exponent}"
        digits = str(abs(mantissa)) + "0" * max(exponent, 0)
        if exponent < 0:
            digits = digits.rjust(-exponent + 1, "0")
            digits = f"{digits[:exponent]}.{digits[exponent:]}"
        return ("-" if mantissa < 0 else "") + digits


def _big_float(mantissa: int, exponent: int) -> float:
    """float64(mantissa * 10**exponent), rounded to nearest as big.Float does; +-Inf beyond float64's range."""
    if mantissa == 0:
        return 0.0
    if len(str(abs(mantissa))) + exponent > 310:
        return float("inf") if mantissa > 0 else float("-inf")
    try:
        return float(mantissa * 10**exponent)
    except OverflowError:
        return float("inf") if mantissa > 0 else float("-inf")


_POW10 = [float(10**i) for i in range(32)]
_POW10_POSITIVE_32 = [float(10 ** (32 * i)) for i in range(10)]
_POW10_NEGATIVE_32 = [float(f"1e-{32 * i}") for i in range(11)]


def go_pow10(n: int) -> float:
    """math.Pow10, bit for bit: two table entries multiplied (or divided), not a correctly rounded power."""
    if 0 <= n <= 308:
        return _POW10_POSITIVE_32[n // 32] * _POW10[n % 32]
    if -323 <= n <= 0:
        return _POW10_NEGATIVE_32[-n // 32] / _POW10[-n % 32]
    return float("inf") if n > 0 else 0.0


ZERO = Quantity.from_int64(0, 0)


def _digits_end(text: str, position: int) -> int:
    while position < len(text) and "0" <= text[position] <= "9":
        position += 1
    return position


def _scan(text: str) -> tuple[bool, str, str, str, str]:
    """parseQuantityString: (positive, value, numerator, denominator, suffix); raises CelError."""
    positive = not text.startswith("-")
    position = 1 if text[:1] in ("-", "+") else 0
    while position < len(text) and text[position] == "0":
        position += 1
    if position == len(text):
        return positive, "0", "0", "", ""
    numerator_end = _digits_end(text, position)
    numerator = text[position:numerator_end] or "0"
    if numerator_end == len(text):
        return positive, text, numerator, "", ""
    position, denominator = numerator_end, ""
    if text[position] == ".":
        denominator_end = _digits_end(text, position + 1)
        denominator = text[position + 1:denominator_end]
        if denominator_end == len(text):
            return positive, text, numerator, denominator, ""
        position = denominator_end
    value, suffix_start = text[:position], position
    while position < len(text) and text[position] in _SUFFIX_CHARS:
        position += 1
    if position < len(text) and text[position] in "+-":
        position += 1
    if _digits_end(text, position) < len(text):
        raise CelError(FORMAT_WRONG)
    return positive, value, numerator, denominator, text[suffix_start:]


def _interpret(suffix: str) -> tuple[int, int]:
    """(base, exponent) of a suffix (quantitySuffixer.interpret); raises CelError."""
    if suffix in _DECIMAL_SUFFIXES:
        return 10, _DECIMAL_SUFFIXES[suffix]
    if suffix in _BINARY_SUFFIXES:
        return 2, _BINARY_SUFFIXES[suffix]
    if len(suffix) > 1 and suffix[0] in "eE" and _SIGNED_DIGITS.fullmatch(suffix[1:]):
        exponent = int(suffix[1:])
        if INT64_MIN <= exponent <= INT64_MAX:
            return 10, wrap_int32(exponent)
    raise CelError(SUFFIX)


@short_text_cache(4096)
def parse_quantity(text: str) -> Quantity:
    """resource.ParseQuantity, with its errors; raises CelError."""
    if not text:
        raise CelError(FORMAT_WRONG)
    if text == "0":
        return ZERO
    positive, value, numerator, denominator, suffix = _scan(text)
    base, exponent = _interpret(suffix)
    multiplier, scale = 1, exponent
    if base == 2:
        scale = 0
        if exponent >= 0 and not denominator:
            multiplier = 1 << exponent
            precision = 15 - len(numerator) - exponent * 3 // 10 - 1
        else:
            precision = -1
    else:
        precision = 18 - len(numerator) - len(denominator)
    if precision >= 0:
        scale = wrap_int32(scale - len(denominator))
        if scale >= _NANO:
            result = int(numerator + denominator) * multiplier
            if _fits(result):
                return Quantity.from_int64(result if positive else -result, scale)
    return _parse_decimal(value, base=base, exponent=exponent)


def _parse_decimal(value: str, *, base: int, exponent: int) -> Quantity:
    """ParseQuantity's inf.Dec path: suffix applied, rounded up to nano units, binary values capped at 2^63-1."""
    digits = value.lstrip("+-").replace(".", "", 1)
    if not digits:
        raise CelError(NUMERIC)
    scale = len(value.partition(".")[2])  # the inf.Dec's scale: digits after the point, then the suffix's power
    if base == 10:
        scale = wrap_int32(scale + wrap_int32(-exponent))
    significant = digits.strip("0")
    if not significant:
        return Quantity.from_decimal(0, 0, scale=scale)
    if len(significant) > MAX_DIGITS:
        raise CelError(f"quantity has more than {MAX_DIGITS} significant digits")
    mantissa, value_exponent = int(significant), len(digits) - len(digits.rstrip("0")) - scale
    if base == 2:
        mantissa <<= exponent
    if value_exponent < _NANO:  # round up (away from zero) to whole nanos
        shift = _NANO - value_exponent
        mantissa = 1 if len(str(mantissa)) <= shift else -(-mantissa // 10**shift)
        value_exponent = _NANO
    scale = -_NANO
    if base == 2 and Quantity(mantissa, value_exponent, int_form=None).compare(_INT64_MAX_QUANTITY) > 0:
        mantissa, value_exponent, scale = INT64_MAX, 0, 0
    return Quantity.from_decimal(-mantissa if value.startswith("-") else mantissa, value_exponent, scale=scale)


_INT64_MAX_QUANTITY = Quantity.from_int64(INT64_MAX, 0)
