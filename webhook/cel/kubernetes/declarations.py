"""The library's declarations for cel-expr-python's type checker, from the same table as its implementations.

cel-expr-python's `cel.Type` has no type parameters (`cel.Type("~T")` is an opaque type named T, not a parameter), so
the few functions Kubernetes declares over `list(A)` or `list(T)` (indexOf, lastIndexOf, sets.*) are declared over
`list(dyn)` and `dyn`: the checker accepts every list there and types the result as Kubernetes does (int or bool).
isSorted, sum, min and max are declared per element type, as Kubernetes declares them.

cel-expr-python lets only an extension add overloads to a function that the standard library or another extension
declares (`NewEnv(functions=...)` refuses the name: `function 'indexOf' declared multiple times`), so indexOf and
lastIndexOf, which the strings extension also declares, and `string(net.IP)`/`string(net.CIDR)`, come as an extension
(`EXTENDED`).

The opaque types are declared as empty protobuf messages (`descriptor_pool`, for `NewEnv(descriptor_pool=...)`), not
as abstract types: an overload of `string` over an abstract type collides with every other overload of `string`
(`string_to_string collides with ip_to_string`), and an abstract type has no type identifier, so `type(x) == net.IP`
would not check. Being messages, they also refuse field selection at compile time (`undefined field 'v' not found in
struct 'kubernetes.Quantity'`), as Kubernetes refuses selection on its opaque types.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pool import DescriptorPool

from webhook.cel.kubernetes.library import OPAQUE_TYPES, Declared

EXTENDED = frozenset({"indexOf", "lastIndexOf", "string"})  # declared elsewhere too: added to with a CelExtension


@lru_cache(maxsize=1)
def descriptor_pool() -> DescriptorPool:
    """A descriptor pool with each opaque type as an empty message (`net.IP`, `kubernetes.Quantity`, ...), one
    file per package; no generated code."""
    pool = DescriptorPool()
    packages: dict[str, list[str]] = {}
    for name in OPAQUE_TYPES:
        package, _, message = name.rpartition(".")
        packages.setdefault(package, []).append(message)
    for package, messages in sorted(packages.items()):
        file = descriptor_pb2.FileDescriptorProto(name=f"webhook/cel/kubernetes/{package}.proto", package=package,
                                                  syntax="proto3")
        for message in messages:
            file.message_type.add(name=message)
        pool.Add(file)
    return pool


def _split(arguments: str) -> list[str]:
    """Top-level, comma-separated type names: `string, list(string)` -> [`string`, `list(string)`]."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(arguments):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(arguments[start:index].strip())
            start = index + 1
    parts.append(arguments[start:].strip())
    return parts


def cel_type(cel: Any, name: str) -> Any:
    """The cel-expr-python type for a declared type name (`int`, `list(string)`, `net.IP`, ...)."""
    scalars = {"string": cel.Type.STRING, "int": cel.Type.INT, "uint": cel.Type.UINT, "double": cel.Type.DOUBLE,
               "bool": cel.Type.BOOL, "bytes": cel.Type.BYTES, "duration": cel.Type.DURATION,
               "timestamp": cel.Type.TIMESTAMP, "dyn": cel.Type.DYN}
    if name in scalars:
        return scalars[name]
    if name in OPAQUE_TYPES:
        return cel.Type(name)  # a message type of `descriptor_pool()`
    base, parenthesis, arguments = name.partition("(")
    if not parenthesis:
        return cel.Type.AbstractType(name)
    parameters = [cel_type(cel, argument) for argument in _split(arguments[:-1])]
    if base == "list":
        return cel.Type.List(parameters[0])
    if base == "map":
        return cel.Type.Map(parameters[0], parameters[1])
    return cel.Type.AbstractType(base, parameters)


def function_declarations(cel: Any, overloads: Iterable[Declared]) -> list[Any]:
    """One `cel.FunctionDecl` per function name, with its overloads in table order (no implementations)."""
    by_name: dict[str, list[Any]] = {}
    for overload in overloads:
        by_name.setdefault(overload.function, []).append(cel.Overload(
            overload.id, cel_type(cel, overload.result), [cel_type(cel, p) for p in overload.parameters],
            is_member=overload.member))
    return [cel.FunctionDecl(name, declared) for name, declared in by_name.items()]
