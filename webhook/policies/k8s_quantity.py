"""The Kubernetes CEL library, part 2: quantities and semantic versions."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from webhook.policies.k8s_values import INT64_MAX, INT64_MIN, K8sError, _string, _tagged, _untag

# --- Quantity (k8s.io/apimachinery/pkg/api/resource ParseQuantity) -------------------------------------------

_QTY_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]+")
_MAX_ALIGN = 10_000  # decimal digits an addition may need; beyond that the value is refused, not computed


def _digits_end(text: str, pos: int) -> int:
    while pos < len(text) and "0" <= text[pos] <= "9":
        pos += 1
    return pos


def _normal(m: int, e: int) -> tuple[int, int]:
    if m == 0:
        return 0, 0
    while m % 10 == 0:
        m, e = m // 10, e + 1
    return m, e


@lru_cache(maxsize=4096)
def parse_quantity(text: str) -> tuple[int, int]:
    """The quantity as (mantissa, exponent) with the rounding and capping of ParseQuantity; raises K8sError."""
    if not text:
        raise K8sError(_QTY_FORMAT)
    negative = text[0] == "-"
    pos = 1 if text[0] in "+-" else 0
    while pos < len(text) and text[pos] == "0":
        pos += 1
    if pos == len(text):
        return 0, 0
    num_end = _digits_end(text, pos)
    num, denom, end = text[pos:num_end] or "0", "", num_end
    if end < len(text) and text[end] == ".":
        end = _digits_end(text, end + 1)
        denom = text[num_end + 1:end]
    value, suffix_start = text[:end], end
    while end < len(text) and text[end] in "eEinumkKMGTP":
        end += 1
    end = _digits_end(text, end + 1 if end < len(text) and text[end] in "+-" else end)
    if end < len(text):
        raise K8sError(_QTY_FORMAT)
    suffix = text[suffix_start:]
    binary = suffix in _BINARY_SUFFIXES
    if binary:
        exponent = _BINARY_SUFFIXES[suffix]
        fast = not denom and 15 - len(num) - exponent * 3 // 10 - 1 >= 0 and int(num) << exponent <= INT64_MAX
    elif suffix in _DECIMAL_SUFFIXES or (suffix[:1] in ("e", "E") and _SIGNED_DIGITS.fullmatch(suffix[1:])):
        exponent = _DECIMAL_SUFFIXES[suffix] if suffix in _DECIMAL_SUFFIXES else int(suffix[1:])
        if not INT64_MIN <= exponent <= INT64_MAX:
            raise K8sError("unable to parse quantity's suffix")
        exponent = (exponent + 2**31) % 2**32 - 2**31  # Go keeps the exponent in an int32
        fast = len(num) + len(denom) <= 18 and exponent - len(denom) >= -9
    else:
        raise K8sError("unable to parse quantity's suffix")
    if not fast and not any("0" <= c <= "9" for c in value):
        raise K8sError("unable to parse numeric part of quantity")
    m = int(num + denom) << exponent if binary else int(num + denom)
    e = -len(denom) if binary else exponent - len(denom)
    if e < -9:  # round away from zero to whole nanos
        shift = -9 - e
        m, e = (1 if len(str(m)) <= shift else -(-m // 10**shift)), -9
    if binary and m * 10**max(e, 0) > INT64_MAX * 10**max(-e, 0):
        m, e = INT64_MAX, 0
    m, e = _normal(m, e)
    return (-m if negative else m), e


def _quantity_text(m: int, e: int) -> str:
    if m == 0:
        return "0"
    if e > 30:
        return f"{m}e{e}"
    digits = str(abs(m)) + "0" * max(e, 0)
    if e < 0:
        digits = digits.rjust(-e + 1, "0")
        digits = f"{digits[:e]}.{digits[e:]}"
    return ("-" if m < 0 else "") + digits


@lru_cache(maxsize=4096)
def _quantity_value(text: str) -> tuple[int, int]:
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    return _normal(int(whole + fraction), int(exponent or 0) - len(fraction))


def _q(value: Any) -> tuple[int, int]:
    return _quantity_value(_untag(value, "quantity")[1])


def quantity(text: Any) -> dict[str, str]:
    return _tagged("quantity", _quantity_text(*parse_quantity(_string(text))))


def _q_compare(a: tuple[int, int], b: tuple[int, int]) -> int:
    sign_a, sign_b = (a[0] > 0) - (a[0] < 0), (b[0] > 0) - (b[0] < 0)
    if sign_a != sign_b or sign_a == 0:
        return (sign_a > sign_b) - (sign_a < sign_b)
    size_a, size_b = len(str(abs(a[0]))) + a[1], len(str(abs(b[0]))) + b[1]
    if size_a != size_b:
        return sign_a if size_a > size_b else -sign_a
    low = min(a[1], b[1])
    x, y = a[0] * 10 ** (a[1] - low), b[0] * 10 ** (b[1] - low)
    return int((x > y) - (x < y))


def _q_add(q: Any, other: Any, sign: int = 1) -> dict[str, str]:
    a, (m, e) = _q(q), (other, 0) if isinstance(other, int) and not isinstance(other, bool) else _q(other)
    b = (sign * m, e)
    if a[0] == 0 or b[0] == 0:
        return _tagged("quantity", _quantity_text(*(b if a[0] == 0 else a)))
    low, high = min(a[1], b[1]), max(a[1], b[1])
    if high - low > _MAX_ALIGN:
        raise K8sError("quantity arithmetic: the operands differ by too many orders of magnitude")
    return _tagged("quantity", _quantity_text(*_normal(a[0] * 10 ** (a[1] - low) + b[0] * 10 ** (b[1] - low), low)))


def _q_int(q: Any) -> int | None:
    m, e = _q(q)
    value = m * 10**e if e >= 0 and (m == 0 or e <= 18) else None
    return value if value is not None and INT64_MIN <= value <= INT64_MAX else None


def quantity_as_integer(q: Any) -> int:
    value = _q_int(q)
    if value is None:
        raise K8sError("cannot convert value to integer")
    return value


def quantity_as_float(q: Any) -> float:
    m, e = _q(q)
    if e > 400:
        return float("inf") if m > 0 else float("-inf")
    return float(m) * 10.0**e if e >= 0 else float(m) * (1.0 / 10.0**-e)


# --- Semver (github.com/blang/semver/v4 Parse, Kubernetes normalization) ---------------------------------------

_ALNUM = re.compile(r"[0-9A-Za-z-]+")


def _semver_number(text: str, what: str) -> int:
    if not all("0" <= c <= "9" for c in text):
        raise K8sError(f"Invalid character(s) found in {what} number {text!r}")
    if len(text) > 1 and text[0] == "0":
        raise K8sError(f"{what.capitalize()} number must not contain leading zeroes {text!r}")
    if not text or int(text) >= 2**64:
        raise K8sError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return int(text)


@lru_cache(maxsize=1024)
def parse_semver(text: str) -> tuple[int, int, int, tuple[int | str, ...]]:
    """(major, minor, patch, prerelease identifiers) as semver.Parse reads it; build metadata is dropped."""
    if not text:
        raise K8sError("Version string empty")
    parts = text.split(".", 2)
    if len(parts) != 3:
        raise K8sError("No Major.Minor.Patch elements found")
    major, minor = _semver_number(parts[0], "major"), _semver_number(parts[1], "minor")
    patch, _, build = parts[2].partition("+")
    patch, dash, pre = patch.partition("-")
    prerelease: list[int | str] = []
    for ident in pre.split(".") if dash else []:
        if not ident:
            raise K8sError("Prerelease is empty")
        if not _ALNUM.fullmatch(ident):
            raise K8sError(f"Invalid character(s) found in prerelease {ident!r}")
        numeric = ident.isdigit()
        if numeric and len(ident) > 1 and ident[0] == "0":
            raise K8sError(f"Numeric PreRelease version must not contain leading zeroes {ident!r}")
        prerelease.append(int(ident) if numeric else ident)
    for ident in build.split(".") if "+" in parts[2] else []:
        if not ident:
            raise K8sError("Buildversion is empty")
        if not _ALNUM.fullmatch(ident):
            raise K8sError(f"Invalid character(s) found in build meta data {ident!r}")
    return major, minor, _semver_number(patch, "patch"), tuple(prerelease)


def _normalize_semver(text: str) -> str:
    parts = text.removeprefix("v").split(".", 2)
    for i, part in enumerate(parts):
        if len(part) > 1:
            part = part.lstrip("0")
            parts[i] = part if part and "0" <= part[0] <= "9" else "0" + part
    if len(parts) < 3 and any(c in parts[-1] for c in "+-"):
        raise K8sError("short version cannot contain PreRelease/Build meta data")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def semver(text: Any, normalize: Any = False) -> dict[str, str]:
    text = _string(text)
    if not isinstance(normalize, bool):
        raise K8sError("no such overload")
    major, minor, patch, pre = parse_semver(_normalize_semver(text) if normalize else text)
    suffix = "-" + ".".join(str(p) for p in pre) if pre else ""
    return _tagged("semver", f"{major}.{minor}.{patch}{suffix}")


def _semver_part(index: int) -> Callable[[Any], int]:
    def part(value: Any) -> int:
        number = parse_semver(_untag(value, "semver")[1])[index]
        assert isinstance(number, int)
        return number - 2**64 if number > INT64_MAX else number  # Go converts the uint64 to int64
    return part


def _semver_compare(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
    if a[:3] != b[:3]:
        return 1 if a[:3] > b[:3] else -1
    if not a[3] or not b[3]:
        return (not a[3]) - (not b[3])
    for x, y in zip(a[3], b[3], strict=False):
        if x != y:
            if isinstance(x, int) != isinstance(y, int):
                return -1 if isinstance(x, int) else 1
            return 1 if x > y else -1
    return (len(a[3]) > len(b[3])) - (len(a[3]) < len(b[3]))


def compare_to(a: Any, b: Any) -> int:
    """Quantity or Semver receiver, an operand of the same type."""
    kind, value = _untag(a, "quantity", "semver")
    other = _untag(b, kind)[1]
    if kind == "quantity":
        return _q_compare(_quantity_value(value), _quantity_value(other))
    return _semver_compare(parse_semver(value), parse_semver(other))


