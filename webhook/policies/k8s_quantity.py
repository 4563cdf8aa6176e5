"""The Kubernetes CEL library over plain values, part 2: quantities and semantic versions as tagged maps, over
webhook.cel.kubernetes (which parses and computes them).

A tagged quantity carries its exact value only, so `asInteger()` and `isInteger()` look at the value (see
docs/cel-library.md); webhook.cel's Quantity also keeps the form Kubernetes stores it in and answers as Kubernetes does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webhook.cel.kubernetes import FUNCTIONS
from webhook.cel.kubernetes.quantity import Quantity, parse_quantity
from webhook.cel.kubernetes.semver import Semver, parse_semver
from webhook.cel.kubernetes.semver import semver as parse_version
from webhook.policies.k8s_values import K8sError, _string, _tagged, _untag


def _q(value: Any) -> Quantity:
    return parse_quantity(_untag(value, "quantity")[1])


def _tagged_quantity(value: Quantity) -> dict[str, str]:
    return _tagged("quantity", value.decimal_text())


def quantity(text: Any) -> dict[str, str]:
    return _tagged_quantity(parse_quantity(_string(text)))


def quantity_sign(value: Any) -> int:
    return _q(value).sign()


def _q_add(q: Any, other: Any, sign: int = 1) -> dict[str, str]:
    left = _q(q)
    right = Quantity.from_int64(other, 0) if isinstance(other, int) and not isinstance(other, bool) else _q(other)
    return _tagged_quantity(left.add(right) if sign > 0 else left.sub(right))


def _q_int(q: Any) -> int | None:
    return _q(q).integer_value()


def quantity_as_integer(q: Any) -> int:
    value = _q_int(q)
    if value is None:
        raise K8sError("cannot convert value to integer")
    return value


def quantity_as_float(q: Any) -> float:
    return _q(q).approximate_float()


def semver(text: Any, normalize: Any = False) -> dict[str, str]:
    """semver(string[, normalize]) as a tagged map; the canonical text drops build metadata, which == ignores."""
    if not isinstance(normalize, bool):
        raise K8sError("no such overload")
    version = parse_version(_string(text), normalize)
    return _tagged("semver", str(Semver(version.major, version.minor, version.patch, prerelease=version.prerelease)))


def _semver_part(overload_id: str) -> Callable[[Any], int]:
    implementation = FUNCTIONS.get(overload_id)
    assert implementation is not None

    def part(value: Any) -> int:
        number: int = implementation.impl(parse_semver(_untag(value, "semver")[1]))
        return number
    return part


def compare_to(a: Any, b: Any) -> int:
    """Quantity or Semver receiver, an operand of the same type."""
    kind, value = _untag(a, "quantity", "semver")
    other = _untag(b, kind)[1]
    if kind == "quantity":
        return parse_quantity(value).compare(parse_quantity(other))
    return parse_semver(value).compare(parse_semver(other))
