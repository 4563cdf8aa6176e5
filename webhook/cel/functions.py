"""The function table of the runtime: every overload by the id the type checker resolves calls to.

A call's receiver (for member calls) is its first argument. An implementation takes runtime values (see
webhook.cel.values) and returns one, raising `CelError` with cel-go's wording on failure. Each overload names the
Python types of its parameters (exact types: `bool` is not an `int`); the runtime checks them only where the
checker left more than one overload possible (an argument of type `dyn`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.cel.values import Duration, Optional, Timestamp, UInt

Kind = tuple[type, ...] | None  # exact Python types a parameter accepts; None: any value
ANY: Kind = None
NULL: Kind = (type(None),)
BOOL: Kind = (bool,)
INT: Kind = (int,)
UINT: Kind = (UInt,)
DOUBLE: Kind = (float,)
STRING: Kind = (str,)
BYTES: Kind = (bytes,)
LIST: Kind = (list, tuple)
MAP: Kind = (dict,)
TIMESTAMP: Kind = (Timestamp,)
DURATION: Kind = (Duration,)
OPTIONAL: Kind = (Optional,)


@dataclass(frozen=True, slots=True)
class Overload:
    function: str  # the name as written (`size`, `_+_`, `math.greatest`, `isQuantity`)
    id: str  # the overload id the checker puts in the reference map (`size_string`, `add_int64`)
    kinds: tuple[Kind, ...]  # parameter kinds, receiver first
    impl: Callable[..., Any]

    def accepts(self, args: Sequence[Any]) -> bool:
        if len(args) != len(self.kinds):
            return False
        for kind, arg in zip(self.kinds, args, strict=True):
            if kind is not None and type(arg) not in kind and not _subclass_of(arg, kind):
                return False
        return True


def _subclass_of(arg: Any, kind: tuple[type, ...]) -> bool:
    """dict and list subclasses (lazily computed maps) count as maps and lists; bool never counts as int."""
    return not isinstance(arg, bool | int | float | str) and isinstance(arg, kind)


class FunctionTable:
    """Overloads by id; a library adds its own with `add`."""

    def __init__(self) -> None:
        self._by_id: dict[str, Overload] = {}

    def add(self, function: str, overload_id: str, kinds: Iterable[Kind], impl: Callable[..., Any]) -> None:
        if overload_id in self._by_id:
            raise ValueError(f"overload {overload_id!r} is defined twice")
        self._by_id[overload_id] = Overload(function, overload_id, tuple(kinds), impl)

    def get(self, overload_id: str) -> Overload | None:
        return self._by_id.get(overload_id)

    def by_function(self, function: str) -> list[Overload]:
        return [overload for overload in self._by_id.values() if overload.function == function]

    def update(self, other: FunctionTable) -> None:
        for overload in other._by_id.values():
            self.add(overload.function, overload.id, overload.kinds, overload.impl)
