"""Functions that cel-expr-python has built in (the CEL strings extension) and cel-python lacks, for cel-python.

Names that neither cel-python nor this module knows are refused at load time, so that an expression never
compiles on one engine and then fails at run time on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions

MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter", "dyn"})


def _error(message: str) -> CELEvalError:
    return CELEvalError(message, ValueError, None)


def _join(items: Any, separator: Any = "") -> Any:
    if not all(isinstance(item, str) for item in items):
        return _error("join: every list element must be a string")
    return celtypes.StringType(str(separator).join(str(item) for item in items))


def _split(text: Any, separator: Any, limit: Any = -1) -> Any:
    limit = int(limit)
    if limit == 0:
        return celtypes.ListType([])
    parts = str(text).split(str(separator), limit - 1) if limit > 0 else str(text).split(str(separator))
    return celtypes.ListType([celtypes.StringType(part) for part in parts])


def _replace(text: Any, old: Any, new: Any, limit: Any = -1) -> Any:
    return celtypes.StringType(str(text).replace(str(old), str(new), int(limit)))


def _index_of(text: Any, sub: Any, start: Any = 0) -> Any:
    start = int(start)
    if start < 0 or start > len(text):
        return _error(f"indexOf: index out of range: {start}")
    return celtypes.IntType(str(text).find(str(sub), start))


def _last_index_of(text: Any, sub: Any, end: Any = None) -> Any:
    if end is None:
        return celtypes.IntType(str(text).rfind(str(sub)))
    end = int(end)
    if end < 0 or end > len(text):
        return _error(f"lastIndexOf: index out of range: {end}")
    return celtypes.IntType(str(text).rfind(str(sub), 0, end + len(sub)))


def _substring(text: Any, start: Any, end: Any = None) -> Any:
    start = int(start)
    stop = len(text) if end is None else int(end)
    if not 0 <= start <= stop <= len(text):
        return _error(f"substring: index out of range: [{start}, {stop})")
    return celtypes.StringType(str(text)[start:stop])


def _char_at(text: Any, index: Any) -> Any:
    index = int(index)
    if not 0 <= index <= len(text):
        return _error(f"charAt: index out of range: {index}")
    return celtypes.StringType(str(text)[index:index + 1])


def _ascii_case(upper: bool) -> Callable[[Any], Any]:
    def convert(text: Any) -> Any:
        return celtypes.StringType("".join(
            (c.upper() if upper else c.lower()) if c.isascii() else c for c in str(text)))
    return convert


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "join": _join,
    "split": _split,
    "replace": _replace,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "charAt": _char_at,
    "lowerAscii": _ascii_case(upper=False),
    "upperAscii": _ascii_case(upper=True),
    "trim": lambda text: celtypes.StringType(str(text).strip()),
}

KNOWN_NAMES = frozenset(base_functions) | MACROS | frozenset(FUNCTIONS)


def unknown_functions(tree: Any) -> list[str]:
    """Names called in a parsed expression that cel-python cannot resolve."""
    names: list[str] = []
    for subtree in tree.iter_subtrees():
        if subtree.data == "member_dot_arg":
            name = str(subtree.children[1])
        elif subtree.data == "ident_arg":
            name = str(subtree.children[0])
        else:
            continue
        if name not in KNOWN_NAMES and name not in names:
            names.append(name)
    return names
