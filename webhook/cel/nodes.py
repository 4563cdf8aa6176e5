"""The closures the planner (webhook.cel.compiler) builds, one constructor per kind of node, and the frame they
evaluate in: identifiers and comprehension slots, field selection (chains in one closure), presence tests,
`&&`/`||` with commutative error absorption, calls (by overload, checked only where the checker left the
argument types open), and the specialised forms of the commonest exact cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from webhook.cel import stdlib
from webhook.cel.functions import Overload
from webhook.cel.proto import syntax_pb2
from webhook.cel.values import CelError, NoSuchOverload, Optional, UInt

COST_LIMIT_MESSAGE = "operation cancelled: actual cost limit exceeded"


class Frame:
    """The state of one evaluation: variable bindings, comprehension slots, cost so far and its limit."""

    __slots__ = ("bindings", "cost", "limit", "slots")

    def __init__(self, bindings: Mapping[str, Any], slot_count: int, limit: int) -> None:
        self.bindings = bindings
        self.slots: list[Any] = [None] * slot_count
        self.cost = 0
        self.limit = limit


Eval = Callable[[Frame], Any]


class PlanError(Exception):
    """The tree uses something this runtime does not implement (reported as a compile error)."""


class Held:
    """An error kept as a comprehension accumulator's value, raised again where the accumulator is read."""

    __slots__ = ("error",)

    def __init__(self, error: CelError) -> None:
        self.error = error


MISSING = object()


EXACT_TYPE_KINDS = frozenset({"primitive", "list_type", "map_type", "well_known", "null", "message_type"})


def constant_list(literal: syntax_pb2.Expr.CreateList) -> list[Any] | None:
    if literal.optional_indices or not all(e.WhichOneof("expr_kind") == "const_expr" for e in literal.elements):
        return None
    return [constant(element.const_expr) for element in literal.elements]


def constant_value(expr: syntax_pb2.Expr) -> tuple[bool, Any]:
    if expr.WhichOneof("expr_kind") == "const_expr":
        return True, constant(expr.const_expr)
    if expr.WhichOneof("expr_kind") == "list_expr":
        constants = constant_list(expr.list_expr)
        return constants is not None, constants
    return False, None


def specialised(function: str, raw: Sequence[syntax_pb2.Expr], args: Sequence[Eval]) -> Eval | None:
    """Faster closures for the commonest exact cases: equality with a string or integer literal, `in` a list
    of string literals, size()."""
    if function in ("_==_", "_!=_") and len(raw) == 2:
        for side in (0, 1):
            known, constant = constant_value(raw[side])
            if known and type(constant) is str:
                other = args[1 - side]
                if function == "_==_":
                    return lambda frame: other(frame) == constant  # a str equals only a str, as in CEL
                return lambda frame: other(frame) != constant
    if function == "@in" and len(raw) == 2:
        known, constant = constant_value(raw[1])
        if known and isinstance(constant, list) and constant and all(type(c) is str for c in constant):
            item, members, listed = args[0], frozenset(constant), constant

            def contained(frame: Frame) -> bool:
                value = item(frame)
                if type(value) is str:
                    return value in members
                return stdlib.contained_in(value, listed)

            return contained
    if function == "size" and len(raw) == 1:
        (operand,) = args

        def size(frame: Frame) -> int:
            value = operand(frame)
            if type(value) in (list, dict, str):
                return len(value)
            return stdlib.size(value)

        return size
    return None


def qualified_name(expr: syntax_pb2.Expr) -> str | None:
    parts = []
    while expr.WhichOneof("expr_kind") == "select_expr":
        parts.append(expr.select_expr.field)
        expr = expr.select_expr.operand
    if expr.WhichOneof("expr_kind") != "ident_expr":
        return None
    parts.append(expr.ident_expr.name)
    return ".".join(reversed(parts))


def constant(constant: syntax_pb2.Constant) -> Any:
    kind = constant.WhichOneof("constant_kind")
    if kind == "null_value":
        return None
    if kind == "uint64_value":
        return UInt(constant.uint64_value)
    if kind in ("bool_value", "int64_value", "double_value", "string_value", "bytes_value"):
        return getattr(constant, kind)
    raise PlanError(f"unsupported constant {kind}")


def unbound(function: str) -> Eval:
    def unbound(frame: Frame) -> Any:
        raise CelError(f"unbound function: {function}")

    return unbound


def slot_reader(slot: int, may_hold_error: bool) -> Eval:
    if not may_hold_error:
        return lambda frame: frame.slots[slot]

    def read(frame: Frame) -> Any:
        value = frame.slots[slot]
        if type(value) is Held:
            raise value.error
        return value

    return read


def binding_reader(name: str) -> Eval:
    def read(frame: Frame) -> Any:
        try:
            return frame.bindings[name]
        except KeyError:
            raise CelError(f"no such attribute(s): {name}") from None

    return read


def select_field(operand: Eval, field: str) -> Eval:
    def select(frame: Frame) -> Any:
        value = operand(frame)
        if type(value) is dict:
            try:
                return value[field]
            except KeyError:
                raise CelError(f"no such key: {field}") from None
        if isinstance(value, dict):  # a map computed on access (the `variables` of a policy)
            return value[field]
        if type(value) is Optional:  # within an optional chain (`a.?b.c`), selection stays optional
            return stdlib.optional_select(value, field)
        raise no_field(value, field)

    return select


def select_fields(operand: Eval, fields: tuple[str, ...]) -> Eval:
    def select_chain(frame: Frame) -> Any:
        value = operand(frame)
        for field in fields:
            if type(value) is dict:
                try:
                    value = value[field]
                except KeyError:
                    raise CelError(f"no such key: {field}") from None
            elif isinstance(value, dict):
                value = value[field]
            elif type(value) is Optional:
                value = stdlib.optional_select(value, field)
            else:
                raise no_field(value, field)
        return value

    return select_chain


def select_slot_fields(slot: int, fields: tuple[str, ...]) -> Eval:
    if len(fields) == 1:
        (field,) = fields

        def select_slot(frame: Frame) -> Any:
            value = frame.slots[slot]
            if type(value) is dict:
                try:
                    return value[field]
                except KeyError:
                    raise CelError(f"no such key: {field}") from None
            return field_of(value, field)

        return select_slot
    return select_fields(lambda frame: frame.slots[slot], fields)


def field_of(value: Any, field: str) -> Any:
    if isinstance(value, dict):
        return value[field]
    if type(value) is Optional:
        return stdlib.optional_select(value, field)
    raise no_field(value, field)


def no_field(value: Any, field: str) -> CelError:
    if value is None:
        return CelError(f"no such key: {field}")
    return NoSuchOverload("select")


def presence(operand: Eval, field: str) -> Eval:
    def has(frame: Frame) -> bool:
        value = operand(frame)
        if type(value) is Optional:  # within an optional chain: absent when the chain is empty
            if not value.present:
                return False
            value = value.value
        if isinstance(value, dict):
            return field in value
        raise NoSuchOverload("has")

    return has


def logical(left: Eval, right: Eval, *, absorbing: bool) -> Eval:
    """`&&` (absorbing False) or `||` (absorbing True): an error on one side gives way to the absorbing value on
    the other, in either order; an operand that is not a bool is a `no such overload` error."""

    def logical(frame: Frame) -> bool:
        try:
            first = left(frame)
        except CelError as error:
            first_error: CelError | None = error
        else:
            if first is absorbing:
                return bool(absorbing)
            first_error = None if type(first) is bool else NoSuchOverload("_&&_" if not absorbing else "_||_")
        try:
            second = right(frame)
        except CelError:
            if first_error is not None:
                raise first_error from None
            raise
        if second is absorbing:
            return bool(absorbing)
        if type(second) is not bool:
            raise first_error or NoSuchOverload("_&&_" if not absorbing else "_||_")
        if first_error is not None:
            raise first_error
        return not absorbing

    return logical


def strict_call(implementation: Callable[..., Any], args: Sequence[Eval]) -> Eval:
    if len(args) == 0:
        return lambda frame: implementation()
    if len(args) == 1:
        (only,) = args
        return lambda frame: implementation(only(frame))
    if len(args) == 2:
        first, second = args
        return lambda frame: implementation(first(frame), second(frame))
    return lambda frame: implementation(*[arg(frame) for arg in args])


def dispatcher(function: str, overloads: Sequence[Overload], *, fallback: Callable[..., Any] | None = None
               ) -> Callable[..., Any]:
    """A call among `overloads` on argument values (by their types, where more than one remains), else `fallback`
    (a standard function that takes every type it is defined for)."""
    if len(overloads) == 1 and fallback is None:
        only = overloads[0]

        def checked_call(*values: Any) -> Any:
            if not only.accepts(values):
                raise NoSuchOverload(function)
            return only.impl(*values)

        return checked_call

    def dynamic_call(*values: Any) -> Any:
        for overload in overloads:
            if overload.accepts(values):
                return overload.impl(*values)
        if fallback is not None:
            return fallback(*values)
        raise NoSuchOverload(function)

    return dynamic_call


def dispatch(function: str, overloads: Sequence[Overload], args: Sequence[Eval],
              *, fallback: Callable[..., Any] | None = None) -> Eval:
    """A call among `overloads` (see `dispatcher`), its arguments evaluated in order."""
    if len(overloads) == 1 and fallback is None and all(kind is None for kind in overloads[0].kinds):
        return strict_call(overloads[0].impl, args)
    return strict_call(dispatcher(function, overloads, fallback=fallback), args)


def walk(expr: syntax_pb2.Expr) -> Iterator[syntax_pb2.Expr]:
    """Every node of the tree, parents before children."""
    pending = [expr]
    while pending:
        node = pending.pop()
        yield node
        kind = node.WhichOneof("expr_kind")
        if kind == "call_expr":
            if node.call_expr.HasField("target"):
                pending.append(node.call_expr.target)
            pending.extend(node.call_expr.args)
        elif kind == "select_expr":
            pending.append(node.select_expr.operand)
        elif kind == "list_expr":
            pending.extend(node.list_expr.elements)
        elif kind == "struct_expr":
            for entry in node.struct_expr.entries:
                if entry.HasField("map_key"):
                    pending.append(entry.map_key)
                pending.append(entry.value)
        elif kind == "comprehension_expr":
            comprehension = node.comprehension_expr
            pending.extend([comprehension.iter_range, comprehension.accu_init, comprehension.loop_condition,
                            comprehension.loop_step, comprehension.result])
