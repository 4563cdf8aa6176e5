"""A checked expression as one generated Python function: the fast path in front of the planned closures.

The planner (webhook.cel.compiler) builds a tree of closures that implements CEL's semantics exactly, errors as
values included. Most evaluations raise no error at all, and for those a tree of ~1,000 Python calls per review
is mostly call overhead. So each expression is also translated, once at load, into the source of one Python
function (compiled with `compile()`; the source is made from the checked tree alone, never from request data)
that evaluates the same expression with operators inline, comprehensions as `for` loops, and field selection
as plain subscripts on the review's JSON values.

The generated function is exact whenever it returns: it raises as soon as anything is not the plain case (an
error, a value of an unexpected type, a missing key), and the program then evaluates the closures, which decide
what CEL says (an error `&&` absorbs, the first false among errors in `all`, cel-go's error text). Cost is charged
exactly as the closures charge it (the static count at the start, each macro's loop body per iteration), so a
fast evaluation that passes the limit would have passed it on the closures too: that ends the evaluation at once.

Not translated (the closures serve those expressions whole): unchecked trees, the general comprehension fold and
the two-variable comprehensions, message construction, optional list and map entries.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from webhook.cel import stdlib
from webhook.cel.codegen_operators import BOOL, INLINE, typed_call
from webhook.cel.comprehensions import CostLimitExceeded, Shape, classify, comprehension_range, is_two_variable_call
from webhook.cel.nodes import constant, constant_list, dispatcher
from webhook.cel.proto import checked_pb2, syntax_pb2
from webhook.cel.values import CelError, NoSuchOverload, Optional, UInt

if TYPE_CHECKING:
    from webhook.cel.compiler import Planner

FastPath = Callable[[Mapping[str, Any], int], tuple[Any, int]]



_SERIAL = itertools.count(1)


class Unsupported(Exception):
    """The expression uses a form the generator leaves to the closures."""


class Fallback(Exception):
    """Raised by generated code where a value is not the plain case: the closures evaluate the expression."""


FALLBACKS = (CelError, LookupError, TypeError, ValueError, ArithmeticError, AttributeError, RecursionError, Fallback)


def _has(value: Any, field: str) -> bool:
    """`has(x.f)` where x is not a plain dict (a lazily computed map, an optional, or an error)."""
    if isinstance(value, dict):
        return field in value
    if type(value) is Optional and value.present and isinstance(value.value, dict):
        return field in value.value
    raise Fallback


UNSET = object()  # a variable not computed yet (see generate_linked)
LinkedPath = Callable[[Mapping[str, Any], list[Any], int], tuple[Any, int]]


def generate(planner: Planner, expr: syntax_pb2.Expr, static_cost: int) -> FastPath | None:
    """The fast path of a checked tree that `planner` has planned; None where the closures must serve it."""
    found = _module([(planner, expr, static_cost)], {})
    return None if found is None else found[0]


def generate_linked(parts: Sequence[tuple[Planner, syntax_pb2.Expr, int]], variables: Sequence[str]
                    ) -> list[LinkedPath] | None:
    """Fast paths for the expressions of one policy, which read its variables without a map in between: each is
    `f(bindings, V, limit) -> (value, cost)`, where `variables.NAME` (the i-th of `variables`, whose expression is
    `parts[i]`) reads `V[i]`, and at its first use computes it (V[i] is UNSET until then) and adds its cost to
    `V[-1]`. None when any of them cannot be generated."""
    found = _module(parts, {name: index for index, name in enumerate(variables)})
    return None if found is None else found


def _module(parts: Sequence[tuple[Planner, syntax_pb2.Expr, int]], slots: Mapping[str, int]
            ) -> list[Callable[..., tuple[Any, int]]] | None:
    if not all(planner.types for planner, _, _ in parts):
        return None  # an unchecked tree (conformance tests only): names resolve at run time
    namespace: dict[str, Any] = {"_has": _has, "_range": comprehension_range, "_Cost": CostLimitExceeded,
                                 "_Fallback": Fallback, "_U": UNSET, "_dict": dict, "_list": list, "_str": str}
    constants: dict[tuple[type, str], str] = {}
    sources = []
    arguments = "b, V, L" if slots else "b, L"
    try:
        for index, (planner, expr, static_cost) in enumerate(parts):
            generator = Generator(planner, namespace, constants, slots)
            result = generator.expression(expr)
            generator.emit(f"return {result}, c")
            sources.append("\n".join([f"def f{index}({arguments}):", f"    c = {static_cost}", *generator.lines]))
        source = "\n\n".join(sources)
        code = compile(source, f"<cel {next(_SERIAL)}>", "exec")  # a name of its own, for profiles
    except (Unsupported, SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    exec(code, namespace)  # noqa: S102 - source built from checked trees at load, never from request data
    functions = [namespace[f"f{index}"] for index in range(len(parts))]
    for function, text in zip(functions, sources, strict=True):
        function.__doc__ = text  # for reading what was generated
    return functions


class Generator:
    def __init__(self, planner: Planner, namespace: dict[str, Any], constants: dict[tuple[type, str], str],
                 slots: Mapping[str, int]) -> None:
        self.planner = planner
        self.namespace = namespace  # the generated module's globals: constants and functions by name
        self._constants = constants
        self.slots = slots  # a policy's variables: name -> index in V (generate_linked)
        self.lines: list[str] = []
        self.indent = 1
        self.names = itertools.count()
        self.scopes: list[dict[str, str]] = []  # CEL comprehension variable -> Python local

    # --- emission ---------------------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.emit(header)
        self.indent += 1
        mark = len(self.lines)
        try:
            yield
        finally:
            if len(self.lines) == mark:
                self.emit("pass")
            self.indent -= 1

    def local(self, prefix: str = "t") -> str:
        return f"{prefix}{next(self.names)}"

    def hold(self, code: str, *, literals: bool = True) -> str:
        """`code` in a local (evaluated once, here), unless it is a local (or a literal, unless `literals` is
        False: an `is` test must not meet a literal)."""
        if code.isidentifier() or (literals and _is_literal(code)):
            return code
        name = self.local()
        self.emit(f"{name} = {code}")
        return name

    def value(self, value: Any) -> str:
        """A constant as source: a literal for the plain types, else a name bound in the function's globals."""
        kind = type(value)
        if value is None or kind is bool or kind is int or kind is str:
            return repr(value)
        key = (kind, repr(value))
        name = self._constants.get(key)
        if name is None:
            name = f"k{len(self._constants)}"
            self._constants[key] = name
            self.namespace[name] = value
        return name

    def function(self, implementation: Callable[..., Any]) -> str:
        return self.value(implementation)

    # --- types the checker proved -----------------------------------------------------------------------

    def primitive(self, expr: syntax_pb2.Expr) -> int | None:
        found: checked_pb2.Type | None = self.planner.types.get(expr.id)
        if found is None or found.WhichOneof("type_kind") != "primitive":
            return None
        return int(found.primitive)

    def kind(self, expr: syntax_pb2.Expr) -> str | None:
        found: checked_pb2.Type | None = self.planner.types.get(expr.id)
        return None if found is None else found.WhichOneof("type_kind")

    # --- nodes ------------------------------------------------------------------------------------------

    def expression(self, expr: syntax_pb2.Expr) -> str:
        """Statements that compute `expr` (emitted here), and a Python expression for its value, to be used
        once."""
        kind = expr.WhichOneof("expr_kind")
        if kind == "const_expr":
            return self.value(constant(expr.const_expr))
        if kind == "ident_expr":
            return self.ident(expr.id, expr.ident_expr.name)
        if kind == "select_expr":
            return self.select(expr)
        if kind == "call_expr":
            return self.call(expr)
        if kind == "list_expr":
            return self.list_literal(expr.list_expr)
        if kind == "struct_expr":
            return self.map_literal(expr.struct_expr)
        if kind == "comprehension_expr":
            return self.comprehension(expr.id, expr.comprehension_expr)
        raise Unsupported(kind)

    def ident(self, node: int, name: str) -> str:
        if not name.startswith("."):
            for scope in reversed(self.scopes):
                if name in scope:
                    return scope[name]
        reference = self.planner.references.get(node)
        if reference is None or not reference.name:
            raise Unsupported("an unresolved name")
        name = reference.name.lstrip(".")
        if reference.HasField("value"):
            return self.value(constant(reference.value))
        if self.slots and name == "variables":
            raise Unsupported("`variables` other than as variables.NAME")
        if name in self.planner.variables or name not in self.planner.type_names:
            return f"b[{name!r}]"
        return self.value(self.planner.type_names[name])

    def select(self, expr: syntax_pb2.Expr) -> str:
        select = expr.select_expr
        reference = self.planner.references.get(expr.id)
        if reference is not None and reference.name and not reference.overload_id:
            return self.ident(expr.id, reference.name)
        if self.slots and self.is_variables(select.operand):
            return self.variable(select.field, test_only=select.test_only)
        if not select.test_only:
            # A dict gives the field or KeyError; anything else (a list, a string, an optional, null) raises.
            return f"{self.expression(select.operand)}[{select.field!r}]"
        operand = self.hold(self.expression(select.operand))
        return f"({select.field!r} in {operand} if type({operand}) is _dict else _has({operand}, {select.field!r}))"

    def is_variables(self, expr: syntax_pb2.Expr) -> bool:
        """`expr` is the policy's `variables` (not a comprehension variable of that name)."""
        if expr.WhichOneof("expr_kind") != "ident_expr" or expr.ident_expr.name != "variables" or \
                any("variables" in scope for scope in self.scopes):
            return False
        reference = self.planner.references.get(expr.id)
        return reference is not None and reference.name.lstrip(".") == "variables"

    def variable(self, name: str, *, test_only: bool) -> str:
        """`variables.NAME` in a linked policy: V[i], computed by its own function at first use."""
        index = self.slots.get(name)
        if index is None:
            raise Unsupported(f"no variable {name}")
        if test_only:
            return "True"  # a declared variable is present, computed or not
        value, cost = self.local(), self.local()
        self.emit(f"{value} = V[{index}]")
        with self.block(f"if {value} is _U:"):
            self.emit(f"{value}, {cost} = f{index}(b, V, L)")
            self.emit(f"V[{index}] = {value}")
            self.emit(f"V[-1] += {cost}")
        return value

    def call(self, expr: syntax_pb2.Expr) -> str:
        call = expr.call_expr
        function = call.function
        raw = ([call.target] if call.HasField("target") else []) + list(call.args)
        if is_two_variable_call(call):
            raise Unsupported("two-variable comprehension")
        special = _SPECIAL.get(function)
        if special is not None and len(raw) == special[1]:
            return special[0](self, raw)
        reference = self.planner.references.get(expr.id)
        ids = list(reference.overload_id) if reference is not None else []
        overloads = [found for found in (self.planner.functions.get(i) for i in ids) if found is not None]
        implementation = stdlib.STANDARD.get(function)
        if overloads:
            args = [self.hold(self.expression(arg)) for arg in raw]
            unresolved = len(overloads) < len(ids)
            if len(overloads) == 1 and not unresolved and all(self.planner.typed(arg) for arg in raw):
                return f"{self.function(overloads[0].impl)}({', '.join(args)})"
            fallback = implementation if unresolved else None
            call_any = self.function(dispatcher(function, overloads, fallback=fallback))
            if fallback is not None and not any(kind is not None and (dict in kind or list in kind)
                                                for overload in overloads for kind in overload.kinds):
                call_any = self.function(fallback)  # no overload takes a subclass: the type tests decide alone
            return typed_call(self, overloads, args, f"{call_any}({', '.join(args)})")
        inline = INLINE.get(function)
        if inline is not None and len(raw) == inline[1]:
            found = inline[0](self, raw)
            if found is not None:
                return found
        if implementation is None:
            raise Unsupported(f"unbound function {function}")
        args = [self.hold(self.expression(arg)) for arg in raw]
        return f"{self.function(implementation)}({', '.join(args)})"

    # --- logic ------------------------------------------------------------------------------------------

    def boolean(self, expr: syntax_pb2.Expr) -> str:
        """A local holding the value of `expr`, checked to be a bool (else the closures decide)."""
        code = self.expression(expr)
        if self.primitive(expr) == BOOL:
            return self.hold(code, literals=False)
        held = self.hold(code, literals=False)
        self.emit(f"if {held} is not True and {held} is not False: raise _Fallback")
        return held

    def logical(self, raw: Sequence[syntax_pb2.Expr], *, absorbing: bool) -> str:
        """`&&` (absorbing False) and `||` (absorbing True): the left side decides alone when it is the absorbing
        value; an error on either side goes to the closures (which know when the other side absorbs it)."""
        result = self.local("r")
        first = self.boolean(raw[0])
        with self.block(f"if not {first}:" if absorbing else f"if {first}:"):
            self.emit(f"{result} = {self.boolean(raw[1])}")
        with self.block("else:"):
            self.emit(f"{result} = {absorbing}")
        return result

    def conditional(self, raw: Sequence[syntax_pb2.Expr]) -> str:
        result = self.local("r")
        test = self.boolean(raw[0])
        with self.block(f"if {test}:"):
            self.emit(f"{result} = {self.expression(raw[1])}")
        with self.block("else:"):
            self.emit(f"{result} = {self.expression(raw[2])}")
        return result

    def negation(self, raw: Sequence[syntax_pb2.Expr]) -> str:
        return f"(not {self.boolean(raw[0])})"

    def optional_or(self, raw: Sequence[syntax_pb2.Expr], *, unwrap: bool) -> str:
        result = self.local("r")
        first = self.hold(self.expression(raw[0]))
        self.emit(f"if type({first}) is not {self.value(Optional)}: raise _Fallback")
        with self.block(f"if {first}.present:"):
            self.emit(f"{result} = {first}.value" if unwrap else f"{result} = {first}")
        with self.block("else:"):
            second = self.hold(self.expression(raw[1]))
            if not unwrap:
                self.emit(f"if type({second}) is not {self.value(Optional)}: raise _Fallback")
            self.emit(f"{result} = {second}")
        return result

    # --- literals ---------------------------------------------------------------------------------------

    def list_literal(self, literal: syntax_pb2.Expr.CreateList) -> str:
        if literal.optional_indices:
            raise Unsupported("optional list elements")
        constants = constant_list(literal)
        if constants is not None and constants:  # never changed in place: one list serves every evaluation
            return self.value(constants)
        return "[" + ", ".join(self.hold(self.expression(element)) for element in literal.elements) + "]"

    def map_literal(self, literal: syntax_pb2.Expr.CreateStruct) -> str:
        if literal.message_name:
            raise Unsupported("message construction")
        keys = []
        for entry in literal.entries:
            if entry.optional_entry or not entry.HasField("map_key") or \
                    entry.map_key.WhichOneof("expr_kind") != "const_expr" or \
                    entry.map_key.const_expr.WhichOneof("constant_kind") != "string_value":
                raise Unsupported("a map literal with keys other than string literals")
            keys.append(entry.map_key.const_expr.string_value)
        if len(set(keys)) != len(keys):
            raise Unsupported("repeated keys")  # an error at run time, which the closures raise
        values = [self.hold(self.expression(entry.value)) for entry in literal.entries]
        return "{" + ", ".join(f"{key!r}: {value}" for key, value in zip(keys, values, strict=True)) + "}"

    # --- comprehensions ---------------------------------------------------------------------------------

    def comprehension(self, node_id: int, node: syntax_pb2.Expr.Comprehension) -> str:
        shape = classify(node)
        if shape.kind == "bind":
            variable = self.local("v")
            self.emit(f"{variable} = {self.expression(node.accu_init)}")
            self.scopes.append({node.accu_var: variable})
            try:
                return self.hold(self.expression(node.result))
            finally:
                self.scopes.pop()
        if shape.kind == "fold":
            raise Unsupported("the general comprehension")
        body_cost = self.planner.body_costs[node_id]
        items = self.hold(self.expression(node.iter_range))
        variable, result = self.local("v"), self.local("r")
        initial = {"all": "True", "exists": "False", "exists_one": "0"}.get(shape.kind, "[]")
        self.emit(f"{result} = {initial}")
        self.scopes.append({node.iter_var: variable})
        try:
            with self.block(f"for {variable} in ({items} if type({items}) is _list else _range({items})):"):
                self.emit(f"c += {body_cost}")
                self.emit("if c > L: raise _Cost(c)")
                _loop_body(self, shape, result)
        finally:
            self.scopes.pop()
        return f"({result} == 1)" if shape.kind == "exists_one" else result


def _is_literal(code: str) -> bool:
    return code in ("None", "True", "False") or (len(code) >= 2 and code[0] in "'\"" and code[-1] == code[0]) or \
        code.lstrip("-").isdigit()


def _loop_body(generator: Generator, shape: Shape, result: str) -> None:
    """One iteration of a macro's loop, adding to (or deciding) `result`."""
    if shape.kind in ("all", "exists") and shape.predicate is not None:
        deciding = shape.kind == "exists"
        with generator.block(f"if {generator.boolean(shape.predicate)} is {deciding}:"):
            generator.emit(f"{result} = {deciding}")
            generator.emit("break")
    elif shape.kind == "exists_one" and shape.predicate is not None:
        with generator.block(f"if {generator.boolean(shape.predicate)}:"):
            generator.emit(f"{result} += 1")
    elif shape.kind == "map" and shape.transform is not None:
        if shape.guard is None:
            generator.emit(f"{result}.append({generator.expression(shape.transform)})")
        else:
            with generator.block(f"if {generator.boolean(shape.guard)}:"):
                generator.emit(f"{result}.append({generator.expression(shape.transform)})")
    else:
        raise Unsupported(shape.kind)


_SPECIAL: dict[str, tuple[Callable[[Generator, Sequence[syntax_pb2.Expr]], str], int]] = {
    "_&&_": (lambda generator, raw: generator.logical(raw, absorbing=False), 2),
    "_||_": (lambda generator, raw: generator.logical(raw, absorbing=True), 2),
    "_?_:_": (Generator.conditional, 3),
    "!_": (Generator.negation, 1),
    "or": (lambda generator, raw: generator.optional_or(raw, unwrap=False), 2),
    "orValue": (lambda generator, raw: generator.optional_or(raw, unwrap=True), 2),
    "dyn": (lambda generator, raw: generator.expression(raw[0]), 1),
}


__all__ = ["FALLBACKS", "UNSET", "FastPath", "LinkedPath", "NoSuchOverload", "UInt", "generate", "generate_linked"]
