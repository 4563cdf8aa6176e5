"""The lists library (isSorted, sum, min, max, indexOf, lastIndexOf) and cel-go's sets extension, over the runtime's
values, with cel-go's semantics: a comparison that fails between two elements is ignored, not raised, as Kubernetes'
implementations ignore the error value that cel-go's Compare returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from webhook.cel.values import (
    CelError,
    Duration,
    NoSuchOverload,
    Timestamp,
    UInt,
    check_int,
    check_uint,
    compare,
    equals,
)

# cel-go's traits.Comparer and traits.Adder among the runtime's values (bool is checked by exact type).
_COMPARABLE = (bool, int, UInt, float, str, bytes, Duration, Timestamp)
_SUMMABLE = (int, UInt, float, Duration)


def _comparable(value: Any) -> Any:
    if type(value) not in _COMPARABLE:
        raise NoSuchOverload()
    return value


def _compare_or_none(left: Any, right: Any) -> int | None:
    try:
        return compare(left, right)
    except CelError:
        return None


def is_sorted(items: Sequence[Any]) -> bool:
    """<list(T)>.isSorted(): no element is greater than the one after it."""
    previous: Any = None
    for index, item in enumerate(items):
        _comparable(item)
        if index and _compare_or_none(previous, item) == 1:
            return False
        previous = item
    return True


def _add(total: Any, item: Any) -> Any:
    """cel-go's Add of two values of the same summable type; another type is no such overload."""
    kind = type(total)
    if type(item) is not kind or kind not in _SUMMABLE:
        raise NoSuchOverload()
    if kind is int:
        return check_int(total + item)
    if kind is UInt:
        return check_uint(total + item)
    if kind is Duration:
        return Duration(check_int(total.nanos + item.nanos))
    return total + item


def list_sum(zero: Any) -> Callable[[Sequence[Any]], Any]:
    """<list(T)>.sum() for one summable T; where the checker left the element type open (dyn), cel-go's dispatch
    picks the overload from the first element, so the sum starts from that element's type."""
    def total(items: Sequence[Any]) -> Any:
        if not items:
            return zero
        result = _ZEROS.get(type(items[0]))
        if result is None:
            raise NoSuchOverload()
        for item in items:
            result = _add(result, item)
        return result
    return total


_ZEROS: dict[type, Any] = {int: 0, UInt: UInt(0), float: 0.0, Duration: Duration(0)}


def _extreme(name: str, prefer: int) -> Callable[[Sequence[Any]], Any]:
    def pick(items: Sequence[Any]) -> Any:
        if not items:
            raise CelError(f"{name} called on empty list")
        result = _comparable(items[0])
        for item in items[1:]:
            if _compare_or_none(result, _comparable(item)) == prefer:
                result = item
        return result
    return pick


list_min = _extreme("min", 1)
list_max = _extreme("max", -1)


def index_of(items: Sequence[Any], item: Any) -> int:
    """<list(T)>.indexOf(T): the first index of an element equal to `item`, or -1."""
    return next((index for index, element in enumerate(items) if equals(element, item)), -1)


def last_index_of(items: Sequence[Any], item: Any) -> int:
    """<list(T)>.lastIndexOf(T): the last index of an element equal to `item`, or -1."""
    return next((index for index in range(len(items) - 1, -1, -1) if equals(items[index], item)), -1)


def _contains(items: Sequence[Any], item: Any) -> bool:
    return any(equals(item, element) for element in items)


def sets_contains(items: Sequence[Any], subset: Sequence[Any]) -> bool:
    """sets.contains(list(T), list(T)): every element of the second list is in the first."""
    return all(_contains(items, item) for item in subset)


def sets_equivalent(first: Sequence[Any], second: Sequence[Any]) -> bool:
    """sets.equivalent(list(T), list(T)): each list contains the other."""
    return sets_contains(first, second) and sets_contains(second, first)


def sets_intersects(first: Sequence[Any], second: Sequence[Any]) -> bool:
    """sets.intersects(list(T), list(T)): some element of the first list is in the second."""
    return any(_contains(second, item) for item in first)
