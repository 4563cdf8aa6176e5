"""JSONPatch: applying operations to a working copy, skipping no-ops, and creating missing parent objects."""

from __future__ import annotations

import copy
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
    return dict(operation)


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


def apply_operations(document: Any, operations: Iterable[Operation]) -> tuple[Any, list[Operation]]:
    """Apply operations to a copy of `document`; returns the new document and the operations that changed it.

    An `add` whose parent objects are missing first adds them as empty objects (the API server would
    reject the bare operation). Operations that change nothing are dropped. A failing `test` raises
    PatchTestFailed; anything else that cannot apply raises PatchError.
    """
    current = copy.deepcopy(document)
    applied: list[Operation] = []
    for raw in operations:
        operation = check_operation(raw)
        op, path = operation["op"], operation["path"]
        pointer = jsonpointer.JsonPointer(path)
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
        applied.extend(steps)
        applied.append(operation)
    return current, applied


def make_patch(source: Any, target: Any) -> list[Operation]:
    """JSON Patch operations that turn `source` into `target` (for merged apply configurations)."""
    operations: list[Operation] = jsonpatch.make_patch(source, target).patch
    return operations
