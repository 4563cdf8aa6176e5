"""The operators and standard functions that the generated fast path (webhook.cel.codegen) writes inline when
the checker proved the argument types, or behind cheap exact type tests: equality with a string literal or null,
ordering and `+` of strings and ints, `size`, `in`, indexing with a string literal, `startsWith`/`endsWith`/
`contains`, and the choice among a call's overloads. Each returns Python source (the arguments' statements
emitted through the generator), or None where the general call must serve."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from webhook.cel import stdlib
from webhook.cel.functions import Overload
from webhook.cel.nodes import constant, constant_list
from webhook.cel.proto import syntax_pb2

if TYPE_CHECKING:
    from webhook.cel.codegen import Generator

# The primitive types the checker can prove (checked.proto Type.PrimitiveType).
BOOL, INT, STRING, BYTES = 1, 2, 5, 6
COMPARISONS = {"_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">="}
STRING_METHODS = {"startsWith": "startswith", "endsWith": "endswith", "contains": ""}


def typed_call(generator: Generator, overloads: Sequence[Overload], args: Sequence[str], otherwise: str) -> str:
    """The overload whose parameter types the arguments have, chosen inline by exact type tests (the values
    of a JSON object are never subclasses); `otherwise` (the dispatcher) for anything else."""
    if len(overloads) > 3:
        return otherwise
    code = otherwise
    for overload in reversed(overloads):
        tests = [f"type({arg}) in {generator.value(kind)}" if len(kind) > 1 else
                 f"type({arg}) is {generator.value(kind[0])}"
                 for arg, kind in zip(args, overload.kinds, strict=True) if kind is not None]
        call = f"{generator.function(overload.impl)}({', '.join(args)})"
        code = f"({call} if {' and '.join(tests)} else {code})" if tests else call
    return code


def equality(generator: Generator, raw: Sequence[syntax_pb2.Expr], negated: bool) -> str | None:
    operator = "!=" if negated else "=="
    for side in (0, 1):
        other = raw[1 - side]
        if raw[side].WhichOneof("expr_kind") == "const_expr":
            value = constant(raw[side].const_expr)
            if type(value) is str:  # a string equals only an equal string, as in CEL
                return f"({generator.expression(other)} {operator} {value!r})"
            if value is None:
                held = generator.hold(generator.expression(other), literals=False)
                return f"({held} is {'not ' if negated else ''}None)"
    types = {generator.primitive(raw[0]), generator.primitive(raw[1])}
    if len(types) == 1 and types & {STRING, INT, BOOL}:
        left, right = generator.hold(generator.expression(raw[0])), generator.hold(generator.expression(raw[1]))
        return f"({left} {operator} {right})"
    return None


def comparison(generator: Generator, raw: Sequence[syntax_pb2.Expr], function: str) -> str | None:
    types = {generator.primitive(raw[0]), generator.primitive(raw[1])}
    if len(types) == 1 and types & {STRING, INT}:  # not doubles: ordering a NaN is an error in cel-go
        left, right = generator.hold(generator.expression(raw[0])), generator.hold(generator.expression(raw[1]))
        return f"({left} {COMPARISONS[function]} {right})"
    return None


def concatenation(generator: Generator, raw: Sequence[syntax_pb2.Expr]) -> str | None:
    if generator.primitive(raw[0]) == generator.primitive(raw[1]) == STRING or \
            generator.kind(raw[0]) == generator.kind(raw[1]) == "list_type":
        left, right = generator.hold(generator.expression(raw[0])), generator.hold(generator.expression(raw[1]))
        return f"({left} + {right})"
    return None


def size(generator: Generator, raw: Sequence[syntax_pb2.Expr]) -> str:
    value = generator.hold(generator.expression(raw[0]))
    if generator.primitive(raw[0]) in (STRING, BYTES) or generator.kind(raw[0]) in ("list_type", "map_type"):
        return f"len({value})"
    return f"(len({value}) if type({value}) is _list or type({value}) is _dict or type({value}) is _str " \
           f"else {generator.function(stdlib.size)}({value}))"


def membership(generator: Generator, raw: Sequence[syntax_pb2.Expr]) -> str:
    item_expr, container_expr = raw
    constants = constant_list(container_expr.list_expr) if \
        container_expr.WhichOneof("expr_kind") == "list_expr" else None
    if constants and all(type(value) is str for value in constants):
        item = generator.hold(generator.expression(item_expr))
        members = generator.value(frozenset(constants))
        return f"({item} in {members} if type({item}) is _str else " \
               f"{generator.function(stdlib.contained_in)}({item}, {generator.value(constants)}))"
    if generator.primitive(item_expr) == STRING or (item_expr.WhichOneof("expr_kind") == "const_expr" and
                                                item_expr.const_expr.WhichOneof("constant_kind") ==
                                                "string_value"):
        item = generator.hold(generator.expression(item_expr))
        container = generator.hold(generator.expression(container_expr))
        # a string is in a list only as an equal string, and is a map's key only as itself
        return f"({item} in {container} if type({container}) is _dict or type({container}) is _list else " \
               f"{generator.function(stdlib.contained_in)}({item}, {container}))"
    item = generator.hold(generator.expression(item_expr))
    container = generator.hold(generator.expression(container_expr))
    return f"({item} in {container} if type({item}) is _str and (type({container}) is _dict or " \
           f"type({container}) is _list) else {generator.function(stdlib.contained_in)}({item}, {container}))"


def index(generator: Generator, raw: Sequence[syntax_pb2.Expr]) -> str | None:
    key = raw[1]
    if key.WhichOneof("expr_kind") == "const_expr" and key.const_expr.WhichOneof("constant_kind") == \
            "string_value":
        return f"{generator.hold(generator.expression(raw[0]))}[{key.const_expr.string_value!r}]"
    return None


def string_test(generator: Generator, raw: Sequence[syntax_pb2.Expr], function: str) -> str:
    text, part = generator.hold(generator.expression(raw[0])), generator.hold(generator.expression(raw[1]))
    plain = f"({part} in {text})" if function == "contains" else f"{text}.{STRING_METHODS[function]}({part})"
    tests = [f"type({value}) is _str" for value, expr in ((text, raw[0]), (part, raw[1]))
             if generator.primitive(expr) != STRING]
    if not tests:
        return plain
    return f"({plain} if {' and '.join(tests)} else {generator.function(stdlib.STANDARD[function])}({text}, {part}))"


INLINE: dict[str, tuple[Callable[[Generator, Sequence[syntax_pb2.Expr]], str | None], int]] = {
    "_==_": (lambda generator, raw: equality(generator, raw, negated=False), 2),
    "_!=_": (lambda generator, raw: equality(generator, raw, negated=True), 2),
    **{name: (partial(comparison, function=name), 2)
       for name in COMPARISONS},
    "_+_": (concatenation, 2),
    "size": (size, 1),
    "@in": (membership, 2),
    "_[_]": (index, 2),
    **{name: (partial(string_test, function=name), 2)
       for name in STRING_METHODS},
}
