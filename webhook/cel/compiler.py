"""The checked expression tree, planned once into Python closures that evaluate on plain values.

As cel-go's planner does: one constructor per node kind, calls resolved by the overload ids the checker put in the
reference map, errors as `CelError` that `&&`, `||`, `@not_strictly_false` and comprehension accumulators catch
and hold as values. The common comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`, `cel.bind`)
are recognised by their expanded shape and run as plain Python loops; any other comprehension runs the general
loop. Comprehension variables live in numbered slots of the evaluation's frame, assigned at plan time.

Cost: every node is charged as it is planned (a static count), and a comprehension charges its loop body's count
for each iteration, against the frame's limit (Kubernetes' limits; not cel-go's per-function size estimates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from webhook.cel import stdlib
from webhook.cel.comprehensions import (
    TWO_VARIABLE_PREFIX,
    is_two_variable_call,
    plan_comprehension,
    plan_two_variable,
)
from webhook.cel.functions import FunctionTable
from webhook.cel.nodes import (
    COST_LIMIT_MESSAGE,
    EXACT_TYPE_KINDS,
    MISSING,
    Eval,
    Frame,
    PlanError,
    binding_reader,
    constant,
    constant_list,
    dispatch,
    logical,
    presence,
    qualified_name,
    select_field,
    select_fields,
    select_slot_fields,
    slot_reader,
    specialised,
    strict_call,
    unbound,
)
from webhook.cel.proto import checked_pb2, syntax_pb2
from webhook.cel.values import TYPE_NAMES, CelError, CelType, NoSuchOverload, Optional, map_get, type_of


class Planner:
    def __init__(self, *, functions: FunctionTable, references: Mapping[int, checked_pb2.Reference],
                 types: Mapping[int, checked_pb2.Type], variables: frozenset[str], container: str = "",
                 type_names: Mapping[str, CelType] = TYPE_NAMES) -> None:
        self.functions = functions
        self.references = references
        self.types = types
        self.variables = variables
        self.container = container
        self.type_names = type_names  # the type identifiers (`int`, `net.IP`, ...) and the types they denote
        self.scopes: list[dict[str, tuple[int, bool]]] = []  # name -> (slot, may hold an error)
        self.slot_count = 0
        self.static_cost = 0
        self.body_costs: dict[int, int] = {}  # comprehension node id -> its loop body's cost per iteration

    # --- entry ------------------------------------------------------------------------------------------

    def plan(self, expr: syntax_pb2.Expr) -> Eval:
        kind = expr.WhichOneof("expr_kind")
        if kind == "const_expr":
            value = constant(expr.const_expr)
            return lambda frame: value
        self.static_cost += 1
        if kind == "ident_expr":
            return self._ident(expr.id, expr.ident_expr.name)
        if kind == "select_expr":
            return self._select(expr)
        if kind == "call_expr":
            return self._call(expr)
        if kind == "list_expr":
            self.static_cost += 9
            return self._list(expr.list_expr)
        if kind == "struct_expr":
            self.static_cost += 29
            return self._struct(expr.struct_expr)
        if kind == "comprehension_expr":
            return plan_comprehension(self, expr.comprehension_expr, expr.id)
        raise PlanError(f"unsupported expression kind {kind}")

    # --- identifiers and selection ----------------------------------------------------------------------

    def _ident(self, node: int, name: str) -> Eval:
        if not name.startswith("."):  # `.name` is the global name, never a comprehension variable
            for scope in reversed(self.scopes):
                if name in scope:
                    return slot_reader(*scope[name])
        reference = self.references.get(node)
        if reference is not None and reference.name:
            name = reference.name.lstrip(".")
            if reference.HasField("value"):
                value = constant(reference.value)
                return lambda frame: value
        else:
            name = self._resolve(name)
        if name in self.variables or name not in self.type_names:
            return binding_reader(name)
        cel_type = self.type_names[name]
        return lambda frame: cel_type

    def _select(self, expr: syntax_pb2.Expr) -> Eval:
        select = expr.select_expr
        reference = self.references.get(expr.id)
        if reference is not None and reference.name and not reference.overload_id:
            return self._ident(expr.id, reference.name)  # a qualified name the checker resolved
        if not select.test_only and not self.references and self._is_name(expr):
            return binding_reader(self._resolve(qualified_name(expr) or ""))  # unchecked: a declared qualified name
        if select.test_only:
            return presence(self.plan(select.operand), select.field)
        fields = [select.field]  # a chain `a.b.c` runs as one loop (no closure call per step)
        operand_expr = select.operand
        while operand_expr.WhichOneof("expr_kind") == "select_expr" and not operand_expr.select_expr.test_only \
                and not self._is_name(operand_expr):
            fields.append(operand_expr.select_expr.field)
            operand_expr = operand_expr.select_expr.operand
        self.static_cost += len(fields) - 1
        fields.reverse()
        slot = self._plain_slot(operand_expr)
        if slot is not None:  # a comprehension variable: read its slot in the same closure
            self.static_cost += 1
            return select_slot_fields(slot, tuple(fields))
        operand = self.plan(operand_expr)
        return select_field(operand, fields[0]) if len(fields) == 1 else select_fields(operand, tuple(fields))

    def _plain_slot(self, expr: syntax_pb2.Expr) -> int | None:
        """The slot of an identifier that is a comprehension variable (never an error), else None."""
        if expr.WhichOneof("expr_kind") != "ident_expr" or expr.ident_expr.name.startswith("."):
            return None
        for scope in reversed(self.scopes):
            if expr.ident_expr.name in scope:
                slot, may_hold_error = scope[expr.ident_expr.name]
                return None if may_hold_error else slot
        return None

    def _is_name(self, expr: syntax_pb2.Expr) -> bool:
        """A select node that the checker resolved to a (qualified) identifier, or an unchecked one that names a
        declared variable."""
        reference = self.references.get(expr.id)
        if reference is not None:
            return bool(reference.name) and not reference.overload_id
        if self.references:
            return False
        qualified = qualified_name(expr)
        return qualified is not None and not self._bound(qualified) and self._resolve(qualified) in self.variables

    def _bound(self, name: str) -> bool:
        root = name.split(".", 1)[0]
        return any(root in scope for scope in self.scopes)

    def _resolve(self, name: str) -> str:
        """An unchecked tree's name as the container resolves it: `a.b.name`, then `a.name`, then `name`."""
        if name.startswith("."):
            return name[1:]
        parts = self.container.split(".") if self.container else []
        for end in range(len(parts), 0, -1):
            candidate = ".".join([*parts[:end], name])
            if candidate in self.variables:
                return candidate
        return name

    # --- calls ------------------------------------------------------------------------------------------

    def _call(self, expr: syntax_pb2.Expr) -> Eval:
        call = expr.call_expr
        function = call.function
        raw = ([call.target] if call.HasField("target") else []) + list(call.args)
        reference = self.references.get(expr.id)
        ids = list(reference.overload_id) if reference is not None else []
        if is_two_variable_call(call) and (not ids or ids[0].startswith(TWO_VARIABLE_PREFIX)):
            return plan_two_variable(self, call)
        special = _SPECIAL.get(function)
        if special is not None and len(raw) == special[1]:
            return special[0](self, raw)
        args = [self.plan(arg) for arg in raw]
        overloads = [found for found in (self.functions.get(i) for i in ids) if found is not None]
        if not overloads and not ids:  # an unchecked tree: every overload of that name
            overloads = [o for o in self.functions.by_function(function) if len(o.kinds) == len(args)]
        implementation = stdlib.STANDARD.get(function)
        if overloads:
            unresolved = len(overloads) < len(ids)
            if len(overloads) == 1 and not unresolved and all(self.typed(arg) for arg in raw):
                return strict_call(overloads[0].impl, args)  # the checker proved the argument types
            return dispatch(function, overloads, args, fallback=implementation if unresolved else None)
        fast = specialised(function, raw, args)
        if fast is not None:
            return fast
        if implementation is None:  # declared without an implementation, or unchecked: an error where called
            return unbound(function)
        return strict_call(implementation, args)

    def typed(self, expr: syntax_pb2.Expr) -> bool:
        """The checker knows the node's type exactly (not dyn, a type parameter, or an error)."""
        found = self.types.get(expr.id)
        return found is not None and found.WhichOneof("type_kind") in EXACT_TYPE_KINDS

    def _and(self, raw: Sequence[syntax_pb2.Expr]) -> Eval:
        return logical(self.plan(raw[0]), self.plan(raw[1]), absorbing=False)

    def _or(self, raw: Sequence[syntax_pb2.Expr]) -> Eval:
        return logical(self.plan(raw[0]), self.plan(raw[1]), absorbing=True)

    def _conditional(self, raw: Sequence[syntax_pb2.Expr]) -> Eval:
        condition, then, otherwise = (self.plan(arg) for arg in raw)

        def conditional(frame: Frame) -> Any:
            test = condition(frame)
            if test is True:
                return then(frame)
            if test is False:
                return otherwise(frame)
            raise NoSuchOverload("_?_:_")

        return conditional

    def _not_strictly_false(self, raw: Sequence[syntax_pb2.Expr]) -> Eval:
        operand = self.plan(raw[0])

        def not_strictly_false(frame: Frame) -> bool:
            try:
                return operand(frame) is not False
            except CelError:
                return True

        return not_strictly_false

    def _optional_or(self, raw: Sequence[syntax_pb2.Expr], *, unwrap: bool) -> Eval:
        first, second = self.plan(raw[0]), self.plan(raw[1])

        def optional_or(frame: Frame) -> Any:
            value = first(frame)
            if type(value) is not Optional:
                raise NoSuchOverload("orValue" if unwrap else "or")
            if value.present:
                return value.value if unwrap else value
            alternative = second(frame)
            if not unwrap and type(alternative) is not Optional:
                raise NoSuchOverload("or")
            return alternative

        return optional_or

    # --- literals ---------------------------------------------------------------------------------------

    def _list(self, literal: syntax_pb2.Expr.CreateList) -> Eval:
        elements = [self.plan(element) for element in literal.elements]
        optional = frozenset(literal.optional_indices)
        if not optional:
            if not elements:
                return lambda frame: []  # a new list each time: comprehensions append to their own in place
            constants = constant_list(literal)
            if constants is not None:  # values are never changed in place: one list serves every evaluation
                return lambda frame: constants
            return lambda frame: [element(frame) for element in elements]
        marked = [(element, index in optional) for index, element in enumerate(elements)]

        def create(frame: Frame) -> list[Any]:
            out = []
            for element, is_optional in marked:
                value = element(frame)
                if is_optional:
                    if type(value) is not Optional:
                        raise NoSuchOverload("optional list element")
                    if not value.present:
                        continue
                    value = value.value
                out.append(value)
            return out

        return create

    def _struct(self, literal: syntax_pb2.Expr.CreateStruct) -> Eval:
        if literal.message_name:
            raise PlanError(f"message construction ({literal.message_name}) is not supported: Kubernetes objects "
                            "are maps")
        entries = [(self.plan(entry.map_key), self.plan(entry.value), entry.optional_entry)
                   for entry in literal.entries]

        def create(frame: Frame) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for key_of, value_of, is_optional in entries:
                key = key_of(frame)
                if not isinstance(key, str | int) or isinstance(key, float):
                    raise CelError(f"unsupported key type: {type_of(key).name}")
                value = value_of(frame)
                if is_optional:
                    if type(value) is not Optional:
                        raise NoSuchOverload("optional map entry")
                    if not value.present:  # no entry, so no repeat either
                        continue
                    value = value.value
                if map_get(out, key, MISSING) is not MISSING:
                    raise CelError(f"Failed with repeated key: {str(key).lower() if type(key) is bool else key}")
                if key in out:  # true and 1, or false and 0: distinct CEL keys, one key of a Python dict
                    raise CelError("unsupported map literal: true and 1 (or false and 0) as keys of one map")
                out[key] = value
            return out

        return create

    # --- comprehensions ---------------------------------------------------------------------------------

    def allocate(self) -> int:
        self.slot_count += 1
        return self.slot_count - 1


_SPECIAL: dict[str, tuple[Callable[[Planner, Sequence[syntax_pb2.Expr]], Eval], int]] = {
    "_&&_": (Planner._and, 2),
    "_||_": (Planner._or, 2),
    "_?_:_": (Planner._conditional, 3),
    "@not_strictly_false": (Planner._not_strictly_false, 1),
    "or": (lambda planner, raw: planner._optional_or(raw, unwrap=False), 2),
    "orValue": (lambda planner, raw: planner._optional_or(raw, unwrap=True), 2),
}

__all__ = ["COST_LIMIT_MESSAGE", "CelType", "Eval", "Frame", "PlanError", "Planner"]
