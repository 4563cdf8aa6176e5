"""The Kubernetes CEL library for webhook.cel: its opaque types as classes, its functions as overloads with
Kubernetes' ids (`FUNCTIONS`), and their declarations for cel-expr-python's type checker (`declarations`, `extension`,
and `descriptor_pool` for the opaque types, declared as messages)."""

from __future__ import annotations

from typing import Any

from webhook.cel.kubernetes.declarations import EXTENDED, descriptor_pool, function_declarations
from webhook.cel.kubernetes.formats import Format
from webhook.cel.kubernetes.images import Image
from webhook.cel.kubernetes.library import (
    NEWEST_VERSION,
    OLDEST_VERSION,
    OPAQUE_TYPES,
    OVERLOADS,
    TYPE_NAMES,
    function_table,
    overloads_of,
)
from webhook.cel.kubernetes.network import CIDR, IP
from webhook.cel.kubernetes.quantity import Quantity
from webhook.cel.kubernetes.semver import Semver
from webhook.cel.kubernetes.urls import URL

FUNCTIONS = function_table(OVERLOADS)


def declarations(cel: Any, version: tuple[int, int] = NEWEST_VERSION) -> list[Any]:
    """The library's `cel.FunctionDecl`s for cel-expr-python's checker (`NewEnv(functions=...)`) as a Kubernetes API
    server of `version` declares them, but for the overloads of functions that other libraries declare too (see
    `extension`); `cel` is the cel_expr_python.cel module."""
    return function_declarations(cel, [o for o in overloads_of(version) if o.function not in EXTENDED])


def extension(cel: Any) -> Any:
    """The library's overloads of functions that the standard library or the strings extension declare too
    (`string` of an IP or CIDR, indexOf and lastIndexOf on lists), as a `cel.CelExtension` for
    `NewEnv(extensions=...)`, after the strings extension."""
    extended = [overload for overload in OVERLOADS if overload.function in EXTENDED]
    return cel.CelExtension("kubernetes", function_declarations(cel, extended))


__all__ = ["CIDR", "FUNCTIONS", "IP", "NEWEST_VERSION", "OLDEST_VERSION", "OPAQUE_TYPES", "OVERLOADS", "TYPE_NAMES",
           "URL", "Format", "Image", "Quantity", "Semver", "declarations", "descriptor_pool", "extension"]
