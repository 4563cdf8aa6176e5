"""JSONPatch: applying operations to a working copy, skipping no-ops, and creating missing parent objects."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import jsonpatch
import jsonpointer

Operation = dict[str, Any]
_OPS = ("add", "remove", "replace", "move", "copy", "test")


class PatchError(Exception):
    """An operation that cannot be applied (bad shape, missing path, wrong type)."""


class PatchTestFailed(Exception):
    """A `test` operation did not hold: the operations it guards are not applied (not an error)."""


def escape_key(key: str) -> str:
    """A map key as one JSON Pointer token (RFC 6901: `~` -> `~0`, `/` -> `~1`)."""
    return key.replace("~", "~0").replace("/", "~1")


def check_operation(operation: Any) -> Operation:
    """A JSONPatch operation as a plain dict, or PatchError saying what is wrong with it."""
    if not isinstance(operation, Mapping):
        raise PatchError(f"a patch operation must be a map with op and path, got {type(operation).__name__}")
    op = operation.get("op")
    path = operation.get("path")
    if op not in _OPS:
        raise PatchError(f"patch op must be one of {', '.join(_OPS)}, got {op!r}")
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"patch path must be a JSON Pointer starting with '/', got {path!r}")
    if op in ("add", "replace", "test") and "value" not in operation:
        raise PatchError(f"patch op {op} at {path} needs a value")
    if op in ("move", "copy") and not isinstance(operation.get("from"), str):
        raise PatchError(f"patch op {op} at {path} needs from")
    unknown = set(operation) - {"op", "path", "value", "from"}
    if unknown:
        raise PatchError(f"patch operation at {path} has unknown fields: {', '.join(sorted(unknown))}")
    if "value" in operation:
        problem = json_problem(operation["value"])
        if problem is not None:
            raise PatchError(f"patch value at {path} is not JSON: {problem}")
    return dict(operation)


_INT64 = (-(2**63), 2**63 - 1)


def json_problem(value: Any, where: str = "value", depth: int = 0) -> str | None:
    """What keeps `value` from being a JSON document the API server takes (bytes, durations, timestamps, sets,
    integers past 64 bits, non-string keys, NaN), or None."""
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if _INT64[0] <= value <= _INT64[1] else f"{where}: {value} does not fit in 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}: {value} is not a JSON number"
    if depth > 1000:
        return f"{where}: nested more than 1000 levels"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where}: map key {key!r} is not a string"
            problem = json_problem(item, f"{where}.{key}", depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{where}[{index}]", depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{where} is a {type(value).__name__}"


def _parts(path: str) -> list[str] | None:
    """The reference tokens of a JSON Pointer (RFC 6901), or None when it has an escape other than ~0 and ~1."""
    if path == "":
        return []
    tokens = path.split("/")[1:]
    if "~" in path:
        if any("~" in token.replace("~0", "").replace("~1", "") for token in tokens):
            return None
        tokens = [token.replace("~1", "/").replace("~0", "~") for token in tokens]
    return tokens


def _index(part: str, size: int) -> int | None:
    """A list position as RFC 6901 writes it (no sign, no leading zero), below `size`; else None."""
    if part.isascii() and part.isdigit() and (part == "0" or part[0] != "0"):
        position = int(part)
        return position if position < size else None
    return None


def _step(node: Any, token: str) -> tuple[bool, Any]:
    if type(node) is dict:
        return (True, node[token]) if token in node else (False, None)
    if type(node) is list:
        position = _index(token, len(node))
        return (True, node[position]) if position is not None else (False, None)
    return False, None


def _resolve(document: Any, parts: list[str]) -> tuple[bool, Any]:
    node = document
    for token in parts:
        found, node = _step(node, token)
        if not found:
            return False, None
    return True, node


def _apply_directly(current: Any, op: str, parts: list[str] | None, value: Any) -> bool:
    """`add`, `replace` or `remove` done in place on a parent that is already ours (see _own_parents), as RFC 6902
    defines them; False (nothing changed) for anything else, which jsonpatch then applies or refuses with its own
    error. This spares jsonpatch's ~500 Python calls per operation on the common case."""
    if op not in ("add", "replace", "remove") or not parts:
        return False
    found, parent = _resolve(current, parts[:-1])
    if not found:
        return False
    last = parts[-1]
    if type(parent) is dict:
        if op == "add":
            parent[last] = value
        elif last not in parent:
            return False
        elif op == "replace":
            parent[last] = value
        else:
            del parent[last]
        return True
    if type(parent) is list:
        if op == "add" and (last == "-" or (last.isascii() and last.isdigit() and str(int(last)) == last and
                                            int(last) == len(parent))):
            parent.append(value)
            return True
        position = _index(last, len(parent))
        if position is None:
            return False
        if op == "add":
            parent.insert(position, value)
        elif op == "replace":
            parent[position] = value
        else:
            del parent[position]
        return True
    return False


def _parent_additions(document: Any, path: str) -> list[Operation]:
    """`add` operations that create the missing parent objects of `path` (never lists)."""
    parts = (_parts(path) or [])[:-1]
    additions: list[Operation] = []
    node = document
    for depth, part in enumerate(parts):
        if isinstance(node, dict):
            if part not in node:
                for missing in range(depth, len(parts)):
                    prefix = "/" + "/".join(escape_key(p) for p in parts[: missing + 1])
                    additions.append({"op": "add", "path": prefix, "value": {}})
                return additions
            node = node[part]
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return additions
        else:
            return additions
    return additions


def _shallow(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value


def _own_parents(root: Any, parts: list[str], owned: dict[int, Any]) -> None:
    """Make each map or list on the way to the last token a copy of our own (once), so that changing the parent
    changes nothing outside the working copy. `owned` keeps the copies alive (by id)."""
    node = root
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            key: Any = part
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            key = int(part)
        else:
            return  # a missing step: the operation fails, or its parents are added
        child = node[key]
        if isinstance(child, dict | list) and id(child) not in owned:
            child = node[key] = _shallow(child)
            owned[id(child)] = child
        node = child


def apply_operations(document: Any, operations: Iterable[Operation]) -> tuple[Any, list[Operation]]:
    """Apply operations to a working copy of `document`; returns the new document and the operations that
    changed it. `document` is never changed: the copy shares what the operations leave alone, and each map or
    list on the way to a change is copied (shallow) first, which costs the depth of the path instead of the
    size of the document.

    An `add` whose parent objects are missing first adds them as empty objects (the API server would
    reject the bare operation). Operations that change nothing are dropped. A failing `test` raises
    PatchTestFailed; anything else that cannot apply raises PatchError.
    """
    current = _shallow(document)
    owned = {id(current): current}
    applied: list[Operation] = []
    for raw in operations:
        operation = check_operation(raw)
        op, path = operation["op"], operation["path"]
        parts = _parts(path)
        source = _parts(operation["from"]) if op == "move" else []
        if parts is None or source is None:
            raise PatchError(f"cannot apply {op} at {path}: a JSON Pointer may escape only ~0 and ~1")
        if op != "test":
            _own_parents(current, parts, owned)
            _own_parents(current, source, owned)
        if op == "test":
            found, value = _resolve(current, parts)
            if not found or value != operation["value"]:
                raise PatchTestFailed(f"test at {path} did not hold")
            continue
        if op in ("add", "replace") and parts:  # a no-op: the same value already there (an add into a list inserts)
            found, parent = _resolve(current, parts[:-1])
            if found and (op == "replace" or type(parent) is dict):
                found, value = _step(parent, parts[-1])
                if found and value == operation["value"] and type(value) is type(operation["value"]):
                    continue
        pending = [*(_parent_additions(current, path) if op == "add" else []), operation]
        for index, step in enumerate(pending):
            if not _apply_directly(current, step["op"], _parts(step["path"]), step.get("value")):
                try:
                    current = jsonpatch.apply_patch(current, pending[index:], in_place=True)
                except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError,
                        KeyError) as error:
                    raise PatchError(f"cannot apply {op} at {path}: {error}") from error
                break
        if id(current) not in owned:  # the whole document replaced: by the operation's value, not ours to change
            current = _shallow(current)
            owned[id(current)] = current
        applied.extend(pending)
    return current, applied


def make_patch(source: Any, target: Any) -> list[Operation]:
    """JSON Patch operations that turn `source` into `target` (for merged apply configurations)."""
    operations: list[Operation] = jsonpatch.make_patch(source, target).patch
    return operations
