"""The Kubernetes CEL library over plain values, part 1: tagged values, errors, CEL equality and ordering of plain
values, lists and sets (over the engines' plain values, which differ from webhook.cel's: datetimes, uint as int).

See webhook.policies.k8s_library for the whole library and docs/cel-library.md for the differences.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from webhook.cel.values import INT64_MAX, INT64_MIN, CelError

TAG = "__k8s"
K8sError = CelError  # a run-time error of a library function, with the API server's message


def _tagged(kind: str, value: str) -> dict[str, str]:
    return {TAG: kind, "v": value}


def _untag(value: Any, *kinds: str) -> tuple[str, str]:
    if isinstance(value, dict) and len(value) == 2 and value.get(TAG) in kinds and isinstance(value.get("v"), str):
        return str(value[TAG]), str(value["v"])
    raise K8sError("no such overload")


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise K8sError("no such overload")


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise K8sError("no such overload")


# --- CEL equality and ordering of plain values ------------------------------------------------------------


def cel_equal(a: Any, b: Any) -> bool:
    """CEL `==`: numbers compare across int and double, bools only with bools, lists and maps element-wise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(cel_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(cel_equal(v, b[k]) for k, v in a.items())
    return type(a) is type(b) and bool(a == b)


def _compare(a: Any, b: Any) -> int:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        pass
    elif type(a) is not type(b) or isinstance(a, list | dict) or a is None:
        raise K8sError("no such overload")
    return int((a > b) - (a < b))


# --- Lists and sets -----------------------------------------------------------------------------------------


def _list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    raise K8sError("no such overload")


def is_sorted(items: Any) -> bool:
    items = _list(items)
    return all(_compare(a, b) <= 0 for a, b in pairwise(items))


def list_sum(items: Any) -> Any:
    items = _list(items)
    if not items:
        return 0
    kind = type(items[0])
    if kind is bool or any(type(item) is not kind for item in items) or kind in (str, bytes, list, dict):
        raise K8sError("no such overload")
    total = sum(items[1:], items[0])
    if kind is int and not INT64_MIN <= total <= INT64_MAX:
        raise K8sError("integer overflow")
    return total


def _extreme(name: str, items: Any, wanted: int) -> Any:
    items = _list(items)
    if not items:
        raise K8sError(f"{name} called on empty list")
    best = items[0]
    for item in items[1:]:
        best = item if _compare(best, item) == wanted else best
    return best


def _index(items: Any, item: Any, last: bool = False) -> int:
    items = _list(items)
    order = range(len(items) - 1, -1, -1) if last else range(len(items))
    return next((i for i in order if cel_equal(items[i], item)), -1)


def sets_contains(items: Any, sub: Any) -> bool:
    items = _list(items)
    return all(any(cel_equal(x, y) for x in items) for y in _list(sub))


def substring(text: Any, start: Any, end: Any = None) -> str:
    """cel-go's strings extension substring: code points, end exclusive, errors as cel-go words them."""
    value = _string(text)
    begin = _int(start)
    stop = len(value) if end is None else _int(end)
    if begin < 0:
        raise K8sError(f"index out of range: {begin}")
    if stop < begin:
        raise K8sError(f"invalid substring range. start: {begin}, end: {stop}")
    if stop > len(value):
        raise K8sError(f"index out of range: {stop}")
    return value[begin:stop]
