"""Comprehensions: the macros recognised by their expanded shape and run as Python loops, and the general fold.

Each form keeps CEL's semantics exactly: `all` and `exists` stop at the first deciding element and keep the
first error only if nothing decides; `exists_one`, `map` and `filter` fail with the first error. Every iteration
charges the loop body's static cost, so that a runaway nesting ends at the cost limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from webhook.cel.nodes import Eval, Frame, Held, walk
from webhook.cel.proto import syntax_pb2
from webhook.cel.values import CelError, NoSuchOverload

if TYPE_CHECKING:
    from webhook.cel.compiler import Planner


class CostLimitExceeded(Exception):
    """The evaluation's cost passed its limit: it ends here, whatever `&&` or `||` would absorb."""


def charge(frame: Frame, cost: int) -> None:
    frame.cost += cost
    if frame.cost > frame.limit:
        raise CostLimitExceeded


def comprehension_range(value: Any) -> Iterable[Any]:
    if isinstance(value, list | tuple | dict):
        return value
    raise NoSuchOverload("comprehension range")


def _is_ident(expr: syntax_pb2.Expr, name: str) -> bool:
    return expr.WhichOneof("expr_kind") == "ident_expr" and expr.ident_expr.name == name


def _is_call(expr: syntax_pb2.Expr, function: str, arity: int) -> bool:
    if expr.WhichOneof("expr_kind") != "call_expr":
        return False
    call = expr.call_expr
    return call.function == function and len(call.args) == arity and not call.HasField("target")


def _is_const(expr: syntax_pb2.Expr, value: Any) -> bool:
    if expr.WhichOneof("expr_kind") != "const_expr":
        return value == [] and expr.WhichOneof("expr_kind") == "list_expr" and not expr.list_expr.elements
    constant = expr.const_expr
    kind = constant.WhichOneof("constant_kind")
    return kind is not None and type(getattr(constant, kind)) is type(value) and getattr(constant, kind) == value


def _appended(expr: syntax_pb2.Expr, accu: str) -> syntax_pb2.Expr | None:
    """F when `expr` is `accu + [F]`."""
    if not _is_call(expr, "_+_", 2) or not _is_ident(expr.call_expr.args[0], accu):
        return None
    added = expr.call_expr.args[1]
    if added.WhichOneof("expr_kind") != "list_expr" or len(added.list_expr.elements) != 1 or \
            added.list_expr.optional_indices:
        return None
    return added.list_expr.elements[0]


def _conditional_step(step: syntax_pb2.Expr, accu: str) -> tuple[syntax_pb2.Expr, syntax_pb2.Expr] | None:
    """(P, X) when `step` is `P ? X : accu`."""
    if not _is_call(step, "_?_:_", 3) or not _is_ident(step.call_expr.args[2], accu):
        return None
    return step.call_expr.args[0], step.call_expr.args[1]


class Shape(NamedTuple):
    """What a comprehension's expanded form is: `bind`, `all`, `exists`, `exists_one` (with their `predicate`),
    `map` (a `transform`, and a `guard` for `map(x, p, f)` and `filter`), or the general `fold`."""

    kind: str
    predicate: syntax_pb2.Expr | None = None
    guard: syntax_pb2.Expr | None = None
    transform: syntax_pb2.Expr | None = None


def classify(node: syntax_pb2.Expr.Comprehension) -> Shape:
    accu, step, condition, result = node.accu_var, node.loop_step, node.loop_condition, node.result
    if node.iter_var2 == "" and node.iter_range.WhichOneof("expr_kind") == "list_expr" and \
            not node.iter_range.list_expr.elements and _is_const(condition, False):
        return Shape("bind")
    simple = node.iter_var2 == "" and _is_ident(result, accu)
    if simple and _is_const(node.accu_init, True) and _is_call(condition, "@not_strictly_false", 1) and \
            _is_ident(condition.call_expr.args[0], accu) and _is_call(step, "_&&_", 2) and \
            _is_ident(step.call_expr.args[0], accu):
        return Shape("all", predicate=step.call_expr.args[1])
    if simple and _is_const(node.accu_init, False) and _is_call(condition, "@not_strictly_false", 1) and \
            _is_call(condition.call_expr.args[0], "!_", 1) and _is_call(step, "_||_", 2) and \
            _is_ident(step.call_expr.args[0], accu):
        return Shape("exists", predicate=step.call_expr.args[1])
    if simple and _is_const(node.accu_init, []) and _is_const(condition, True):
        mapped = _appended(step, accu)
        if mapped is not None:
            return Shape("map", transform=mapped)
        guarded = _conditional_step(step, accu)
        if guarded is not None:
            transform = _appended(guarded[1], accu)
            if transform is not None:
                return Shape("map", guard=guarded[0], transform=transform)
    if node.iter_var2 == "" and _is_const(node.accu_init, 0) and _is_const(condition, True) and \
            _is_call(result, "_==_", 2) and _is_ident(result.call_expr.args[0], accu) and \
            _is_const(result.call_expr.args[1], 1):
        guarded = _conditional_step(step, accu)
        if guarded is not None and _is_call(guarded[1], "_+_", 2) and \
                _is_ident(guarded[1].call_expr.args[0], accu) and _is_const(guarded[1].call_expr.args[1], 1):
            return Shape("exists_one", predicate=guarded[0])
    return Shape("fold")


def plan_comprehension(planner: Planner, node: syntax_pb2.Expr.Comprehension, node_id: int = 0) -> Eval:
    shape = classify(node)
    if shape.kind == "bind":
        return _bind(planner, node)
    if shape.kind in ("all", "exists"):
        return _quantifier(planner, node, shape.predicate, deciding=shape.kind == "exists",  # type: ignore[arg-type]
                           node_id=node_id)
    if shape.kind == "map":
        return _map(planner, node, shape.guard, shape.transform, node_id=node_id)  # type: ignore[arg-type]
    if shape.kind == "exists_one":
        return _exists_one(planner, node, shape.predicate, node_id=node_id)  # type: ignore[arg-type]
    return _fold(planner, node)


def _loop_body(planner: Planner, node: syntax_pb2.Expr.Comprehension,
               plan_body: Callable[[], tuple[Eval, ...]], node_id: int) -> tuple[Eval, int, int, tuple[Eval, ...]]:
    """The range (planned outside the loop's scope), the body's cost per iteration (kept in the planner's
    `body_costs` by node id, for the generated fast path), the iteration variable's slot, and the body's planned
    parts."""
    iter_range = planner.plan(node.iter_range)
    slot = planner.allocate()
    planner.scopes.append({node.iter_var: (slot, False)})
    before = planner.static_cost
    try:
        parts = plan_body()
    finally:
        planner.scopes.pop()
    body_cost = max(1, planner.static_cost - before)
    planner.static_cost = before
    planner.body_costs[node_id] = body_cost
    return iter_range, body_cost, slot, parts


def _quantifier(planner: Planner, node: syntax_pb2.Expr.Comprehension, predicate: syntax_pb2.Expr,
                *, deciding: bool, node_id: int) -> Eval:
    """`all` (deciding=False: the first false decides) and `exists` (deciding=True)."""
    iter_range, body_cost, index, (test,) = _loop_body(planner, node, lambda: (planner.plan(predicate),), node_id)

    def quantifier(frame: Frame) -> bool:
        first_error: CelError | None = None
        slots = frame.slots
        for item in comprehension_range(iter_range(frame)):
            frame.cost += body_cost
            if frame.cost > frame.limit:
                raise CostLimitExceeded
            slots[index] = item
            try:
                value = test(frame)
            except CelError as error:
                if first_error is None:
                    first_error = error
                continue
            if value is deciding:
                return bool(deciding)
            if type(value) is not bool and first_error is None:
                first_error = NoSuchOverload("_||_" if deciding else "_&&_")
        if first_error is not None:
            raise first_error
        return not deciding

    return quantifier


def _map(planner: Planner, node: syntax_pb2.Expr.Comprehension, guard: syntax_pb2.Expr | None,
         transform: syntax_pb2.Expr, *, node_id: int) -> Eval:
    """`map(x, f)`, `map(x, p, f)` and `filter(x, p)` (whose transform is `x` itself)."""

    def body() -> tuple[Eval, ...]:
        return (planner.plan(transform), planner.plan(guard) if guard is not None else _always_true)

    iter_range, body_cost, index, (produce, keep) = _loop_body(planner, node, body, node_id)
    if guard is None:
        def mapped(frame: Frame) -> list[Any]:
            slots = frame.slots
            out = []
            for item in comprehension_range(iter_range(frame)):
                frame.cost += body_cost
                if frame.cost > frame.limit:
                    raise CostLimitExceeded
                slots[index] = item
                out.append(produce(frame))
            return out

        return mapped

    def filtered(frame: Frame) -> list[Any]:
        slots = frame.slots
        out = []
        for item in comprehension_range(iter_range(frame)):
            frame.cost += body_cost
            if frame.cost > frame.limit:
                raise CostLimitExceeded
            slots[index] = item
            test = keep(frame)
            if test is True:
                out.append(produce(frame))
            elif test is not False:
                raise NoSuchOverload("_?_:_")
        return out

    return filtered


def _always_true(frame: Frame) -> bool:
    return True


def _exists_one(planner: Planner, node: syntax_pb2.Expr.Comprehension, predicate: syntax_pb2.Expr, *,
                node_id: int) -> Eval:
    iter_range, body_cost, index, (test,) = _loop_body(planner, node, lambda: (planner.plan(predicate),), node_id)

    def exists_one(frame: Frame) -> bool:
        slots = frame.slots
        count = 0
        for item in comprehension_range(iter_range(frame)):
            frame.cost += body_cost
            if frame.cost > frame.limit:
                raise CostLimitExceeded
            slots[index] = item
            value = test(frame)
            if value is True:
                count += 1
            elif value is not False:
                raise NoSuchOverload("_?_:_")
        return count == 1

    return exists_one


def _bind(planner: Planner, node: syntax_pb2.Expr.Comprehension) -> Eval:
    """`cel.bind(name, init, result)`: init once (an error kept until the name is read), then result."""
    init = planner.plan(node.accu_init)
    slot = planner.allocate()
    planner.scopes.append({node.accu_var: (slot, True)})
    try:
        result = planner.plan(node.result)
    finally:
        planner.scopes.pop()

    def bind(frame: Frame) -> Any:
        try:
            frame.slots[slot] = init(frame)
        except CelError as error:
            frame.slots[slot] = Held(error)
        return result(frame)

    return bind


def _fold(planner: Planner, node: syntax_pb2.Expr.Comprehension) -> Eval:
    """The general comprehension, as the CEL specification defines it."""
    iter_range = planner.plan(node.iter_range)
    init = planner.plan(node.accu_init)
    accu_slot, item_slot = planner.allocate(), planner.allocate()
    second_slot = planner.allocate() if node.iter_var2 else -1
    loop_scope = {node.iter_var: (item_slot, False), node.accu_var: (accu_slot, True)}
    if node.iter_var2:
        loop_scope[node.iter_var2] = (second_slot, False)
    planner.scopes.append(loop_scope)
    before = planner.static_cost
    try:
        condition, step = planner.plan(node.loop_condition), planner.plan(node.loop_step)
    finally:
        planner.scopes.pop()
    body_cost = max(1, planner.static_cost - before)
    planner.static_cost = before
    planner.scopes.append({node.accu_var: (accu_slot, True)})
    try:
        result = planner.plan(node.result)
    finally:
        planner.scopes.pop()
    two = bool(node.iter_var2)

    def fold(frame: Frame) -> Any:
        slots = frame.slots
        collection = iter_range(frame)
        if isinstance(collection, dict):
            pairs: Iterable[tuple[Any, Any]] = collection.items() if two else ((k, None) for k in collection)
        elif isinstance(collection, list | tuple):
            pairs = enumerate(collection) if two else ((item, None) for item in collection)
        else:
            raise NoSuchOverload("comprehension range")
        try:
            slots[accu_slot] = init(frame)
        except CelError as error:
            slots[accu_slot] = Held(error)
        for first, second in pairs:
            charge(frame, body_cost)
            slots[item_slot] = first
            if two:
                slots[second_slot] = second
            keep_going = condition(frame)
            if keep_going is False:
                break
            if keep_going is not True:
                raise NoSuchOverload("comprehension condition")
            try:
                slots[accu_slot] = step(frame)
            except CelError as error:
                slots[accu_slot] = Held(error)
        return result(frame)

    return fold


# --- two-variable comprehensions (cel-go's ext.TwoVarComprehensions, Kubernetes 1.32) -----------------------

TWO_VARIABLE_PREFIX = "@two_var_"  # overload ids of the declarations that let the checker accept them
TWO_VARIABLE_FORMS: dict[str, tuple[int, ...]] = {  # function -> argument counts (iteration variables included)
    "all": (3,), "exists": (3,), "existsOne": (3,), "exists_one": (3,),
    "transformList": (3, 4), "transformMap": (3, 4), "transformMapEntry": (3, 4),
}
_ACCUMULATOR = "@result"


def two_variable_names(expr: syntax_pb2.Expr) -> set[str]:
    """The iteration variable names of every two-variable comprehension in a parsed (unchecked) tree."""
    return {arg.ident_expr.name for node in walk(expr) if node.WhichOneof("expr_kind") == "call_expr"
            and is_two_variable_call(node.call_expr) for arg in node.call_expr.args[:2]}


def is_two_variable_call(call: syntax_pb2.Expr.Call) -> bool:
    return call.HasField("target") and len(call.args) in TWO_VARIABLE_FORMS.get(call.function, ()) and all(
        arg.WhichOneof("expr_kind") == "ident_expr" for arg in call.args[:2])


def declare_two_variable(cel: Any) -> list[Any]:
    """Declarations under which the checker accepts `x.all(k, v, p)` and the transforms as calls."""
    dyn, boolean = cel.Type.DYN, cel.Type.BOOL
    ranges = {"list": cel.Type.List(dyn), "map": cel.Type.Map(dyn, dyn)}
    results = {"all": boolean, "exists": boolean, "existsOne": boolean, "exists_one": boolean,
               "transformList": cel.Type.List(dyn), "transformMap": cel.Type.Map(dyn, dyn),
               "transformMapEntry": cel.Type.Map(dyn, dyn)}
    declarations = []
    for function, counts in TWO_VARIABLE_FORMS.items():
        overloads = []
        for count in counts:
            last = boolean if results[function] == boolean else (
                cel.Type.Map(dyn, dyn) if function == "transformMapEntry" else dyn)
            middle = [boolean] if count == 4 else []
            for name, range_type in ranges.items():
                overloads.append(cel.Overload(f"{TWO_VARIABLE_PREFIX}{function}_{name}_{count}", results[function],
                                              [range_type, dyn, dyn, *middle, last], is_member=True))
        declarations.append(cel.FunctionDecl(function, overloads))
    return declarations


def plan_two_variable(planner: Planner, call: syntax_pb2.Expr.Call) -> Eval:
    """Expand as cel-go's macros do, then plan the comprehension."""
    first, second = call.args[0].ident_expr.name, call.args[1].ident_expr.name
    rest = list(call.args[2:])
    function = call.function

    def ident(name: str) -> syntax_pb2.Expr:
        return syntax_pb2.Expr(ident_expr=syntax_pb2.Expr.Ident(name=name))

    def invoke(name: str, *args: syntax_pb2.Expr) -> syntax_pb2.Expr:
        return syntax_pb2.Expr(call_expr=syntax_pb2.Expr.Call(function=name, args=list(args)))

    def constant(**value: Any) -> syntax_pb2.Expr:
        return syntax_pb2.Expr(const_expr=syntax_pb2.Constant(**value))

    accu = ident(_ACCUMULATOR)
    if function == "all":
        init, condition = constant(bool_value=True), invoke("@not_strictly_false", accu)
        step, result = invoke("_&&_", accu, rest[0]), accu
    elif function == "exists":
        init, condition = constant(bool_value=False), invoke("@not_strictly_false", invoke("!_", accu))
        step, result = invoke("_||_", accu, rest[0]), accu
    elif function in ("existsOne", "exists_one"):
        init, condition = constant(int64_value=0), constant(bool_value=True)
        step = invoke("_?_:_", rest[0], invoke("_+_", accu, constant(int64_value=1)), accu)
        result = invoke("_==_", accu, constant(int64_value=1))
    else:
        transform = rest[-1]
        if function == "transformList":
            init = syntax_pb2.Expr(list_expr=syntax_pb2.Expr.CreateList())
            step = invoke("@listAppend", accu, transform)
        elif function == "transformMap":
            init = syntax_pb2.Expr(struct_expr=syntax_pb2.Expr.CreateStruct())
            step = invoke("cel.@mapInsert", accu, ident(first), transform)
        else:
            init = syntax_pb2.Expr(struct_expr=syntax_pb2.Expr.CreateStruct())
            step = invoke("cel.@mapInsert", accu, transform)
        if len(rest) == 2:
            step = invoke("_?_:_", rest[0], step, accu)
        condition, result = constant(bool_value=True), accu
    node = syntax_pb2.Expr.Comprehension(iter_var=first, iter_var2=second, iter_range=call.target,
                                         accu_var=_ACCUMULATOR, accu_init=init, loop_condition=condition,
                                         loop_step=step, result=result)
    return _fold(planner, node)
