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


def _resolve(document: Any, pointer: jsonpointer.JsonPointer) -> tuple[bool, Any]:
    try:
        return True, pointer.resolve(document)
    except (jsonpointer.JsonPointerException, KeyError, IndexError, TypeError):
        return False, None


def _parent_additions(document: Any, path: str) -> list[Operation]:
    """`add` operations that create the missing parent objects of `path` (never lists)."""
    parts = jsonpointer.JsonPointer(path).parts[:-1]
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


def _own_parents(root: Any, pointer: jsonpointer.JsonPointer, owned: dict[int, Any]) -> None:
    """Replace each map and list on the way to `pointer`'s parent by a shallow copy of its own (once), so that
    changing the parent changes nothing outside the working copy. `owned` keeps the copies alive (by id)."""
    node = root
    for part in pointer.parts[:-1]:
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
        pointer = jsonpointer.JsonPointer(path)
        if op != "test":
            _own_parents(current, pointer, owned)
            if op == "move":
                _own_parents(current, jsonpointer.JsonPointer(operation["from"]), owned)
        if op == "test":
            found, value = _resolve(current, pointer)
            if not found or value != operation["value"]:
                raise PatchTestFailed(f"test at {path} did not hold")
            continue
        if op in ("add", "replace") and not path.endswith("/-"):
            found, value = _resolve(current, pointer)
            if found and value == operation["value"] and type(value) is type(operation["value"]):
                continue
        steps = _parent_additions(current, path) if op == "add" else []
        try:
            current = jsonpatch.apply_patch(current, [*steps, operation], in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError) as error:
            raise PatchError(f"cannot apply {op} at {path}: {error}") from error
        if id(current) not in owned:  # the whole document replaced: by the operation's value, not ours to change
            current = _shallow(current)
            owned[id(current)] = current
        applied.extend(steps)
        applied.append(operation)
    return current, applied


def make_patch(source: Any, target: Any) -> list[Operation]:
    """JSON Patch operations that turn `source` into `target` (for merged apply configurations)."""
    operations: list[Operation] = jsonpatch.make_patch(source, target).patch
    return operations
