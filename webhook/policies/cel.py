"""The one boundary to the CEL engines: `cel-expr-python` (default, type-checked) and `cel-python` (portable).

Both compile once at load. cel-expr-python converts a bound object on first use and caches the result in the
activation, so it evaluates every policy of a request against one shared activation: a policy's `params` and
`variables` are bound inside each compiled expression with `cel.bind` (see `scope.closed_source`). cel-python, whose
conversion we do ourselves once per request, gets a cheap activation per policy instead. Errors of either
kind, returned or raised, come out as `CelEvaluationError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from webhook.cel.environment import CelCompileError as CelCompileError  # one class for every engine
from webhook.policies.scope import (
    LAZY_FUNCTION,
    LAZY_RUN,
    PARAMS_BY_POLICY,
    STATUS_PREFIX,
    PolicyScope,
    closed_source,
    lazy_variable,
    outside_strings,
    referenced_variables,
)

ENGINE_NAMES = ("builtin", "cel-expr-python", "cel-python")
DEFAULT_ENGINE = "builtin"
EngineName = Literal["builtin", "cel-expr-python", "cel-python"]
ExpectedType = Literal["bool", "string", "list", "any"]
# Every name an expression can refer to, as in the Kubernetes API server.
VARIABLE_NAMES = ("object", "oldObject", "request", "params", "namespaceObject", "variables")
# ... and, on the builtin engine with a cluster connection, the authorizer's (webhook.cel.kubernetes.authz).
AUTHORIZER_NAMES = ("authorizer", "authorizer.requestResource")
# Why a policy that uses `authorizer` is refused at load (Engine.authorizer_problem).
NO_CLUSTER_FOR_AUTHORIZER = (
    "`authorizer` needs a connection to a cluster (its checks are SubjectAccessReviews): start `webhook serve` "
    "with --kubeconfig, --kube-context or --in-cluster (webhook lint and webhook test have none); see README, "
    "Kubernetes policies")
BUILTIN_ONLY_AUTHORIZER = ("`authorizer` is available on the builtin CEL engine only (--cel-engine builtin); this "
                           "server uses {engine}")
_MAX_MESSAGE = 500
class CelEvaluationError(Exception):
    """An expression that failed at run time (an error value or a raised error), or a wrong result type."""


class Program(Protocol):
    source: str

    def evaluate(self, activation: Any) -> Any:
        """The engine-native result; raises CelEvaluationError."""
        ...


class Engine(Protocol):
    name: EngineName
    shares_activation: bool  # True: one activation per request, params and variables bound in each program
    bounded: bool  # True: evaluation has a cost limit and can be interrupted anywhere (no nesting limit needed)
    authorizer_problem: str | None  # None: expressions may use `authorizer`; else why a policy using it is refused

    def compile(self, source: str, *, expect: ExpectedType, scope: PolicyScope | None = None) -> Program: ...

    def prepare(self, value: Any) -> Any:
        """Convert plain JSON-like data into what this engine binds (done once per request or per load)."""
        ...

    def activation(self, bindings: Mapping[str, Any]) -> Any:
        """An activation over prepared values, shared by every expression evaluated with it."""
        ...

    def to_plain(self, value: Any) -> Any:
        """An engine-native result as plain Python (dict, list, str, int, float, bool, None)."""
        ...

    def bind_variables(self, values: Mapping[str, Any]) -> Any:
        """The `variables` binding from evaluated (engine-native) variable values."""
        ...

    def lazy_variables(self, compute: Callable[[str], Any], names: frozenset[str]) -> Any:
        """A `variables` binding whose entries (`names`) are computed on first access by `compute(name)` (which
        raises CelEvaluationError for a failed variable); only for engines that do not share activations."""
        ...

    def evaluate_with_variables(self, program: Program, activation: Any, variables: Mapping[str, Program],
                                memo: dict[str, tuple[Any, str | None]]) -> Any:
        """Evaluate a program of a shared activation, its variables bound inside it (shares_activation only)."""
        ...


def shorten(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


PLAIN_TYPES: dict[str, type | tuple[type, ...] | None] = {"bool": bool, "string": str, "list": (list, tuple),
                                                          "any": None}


def check_plain_type(value: Any, expect: ExpectedType, source: str) -> None:
    wanted = PLAIN_TYPES[expect]
    if wanted is not None and not isinstance(value, wanted):
        raise CelEvaluationError(
            f"expression must evaluate to {expect}, but it evaluated to {type(value).__name__}: {shorten(source)}"
        )


def check_return_type(cel: Any, return_type: Any, expect: ExpectedType) -> None:
    """Refuse at load an expression whose checked type (a cel_expr_python Type; None when unchecked) cannot be
    what the field needs; `dyn` is left to the run-time check."""
    if expect == "any" or return_type is None or return_type == cel.Type.DYN:
        return
    shown = str(return_type).lower()
    if expect == "bool" and return_type != cel.Type.BOOL:
        raise CelCompileError(f"expression must evaluate to bool, but it evaluates to {shown}")
    if expect == "string" and return_type != cel.Type.STRING:
        raise CelCompileError(f"expression must evaluate to string, but it evaluates to {shown}")
    if expect == "list" and not return_type.name().lower().startswith("list"):
        raise CelCompileError(f"expression must evaluate to a list, but it evaluates to {shown}")


# --- cel-expr-python --------------------------------------------------------------------------------

_TOO_DEEP = re.compile(r"recursion (?:depth|limit)")  # the parser's nesting limit (see closed_source)
_ERROR_POSITION = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")


@dataclass(slots=True)
class _ExprProgram:
    source: str
    expression: Any
    expect: ExpectedType
    error_type: Any
    calls: bool = False  # reaches variables through `__variable` calls (see closed_source)

    def evaluate(self, activation: Any) -> Any:
        try:
            value = self.expression.eval(activation)
        except Exception as error:  # the binding raises for failures inside custom functions
            raise CelEvaluationError(shorten(STATUS_PREFIX.sub("", str(error)))) from error
        if value.type() == self.error_type:
            raise CelEvaluationError(shorten(STATUS_PREFIX.sub("", str(value.value()))))
        plain = value.plain_value()
        check_plain_type(plain, self.expect, self.source)
        return plain


class CelExprEngine:
    """cel-expr-python: the official CEL runtime over cel-cpp, with type checking at compile time."""

    name: EngineName = "cel-expr-python"
    shares_activation = True
    bounded = False  # its C++ loops run to their end: the loader limits comprehension nesting
    authorizer_problem: str | None = NO_CLUSTER_FOR_AUTHORIZER

    def __init__(self) -> None:
        from cel_expr_python import cel
        from cel_expr_python.ext import ext_bindings, ext_math, ext_optional, ext_strings

        from webhook.policies.k8s_library import cel_expr_extension

        self._cel = cel
        self._env = cel.NewEnv(
            variables={name: cel.Type.DYN for name in (*VARIABLE_NAMES, PARAMS_BY_POLICY)},
            extensions=[ext_strings.ExtStrings(), ext_optional.ExtOptional(), ext_bindings.ExtBindings(),
                        ext_math.ExtMath(), cel_expr_extension(cel)],
            functions=[cel.FunctionDecl(LAZY_FUNCTION, [cel.Overload(
                f"{LAZY_FUNCTION}_string", cel.Type.DYN, [cel.Type.STRING], impl=lazy_variable)])],
        )

    def compile(self, source: str, *, expect: ExpectedType, scope: PolicyScope | None = None) -> Program:
        source = _substring(source)
        expression = self._compile(source)
        check_return_type(self._cel, expression.return_type(), expect)
        if "find" in source:  # find and findAll run on Python's re: refuse a literal pattern it cannot match as RE2
            _check_regex_literals(source, frozenset({"find", "findAll"}))
        calls = False
        if scope is not None and (scope.params_key is not None or referenced_variables(source)):
            try:
                expression = self._compile(_substring(closed_source(source, scope)))  # variables inlined too
            except CelCompileError as error:
                if not _TOO_DEEP.search(error.message):  # positions in the closed text mean nothing to authors
                    raise CelCompileError(f"with params and variables bound: {error.message}") from error
                calls = True
                try:
                    expression = self._compile(closed_source(source, scope, calls=True))
                except CelCompileError as again:
                    raise CelCompileError(f"with params and variables bound: {again.message}") from again
        return _ExprProgram(source, expression, expect, self._cel.Type.ERROR, calls)

    def _compile(self, source: str) -> Any:
        try:
            return self._env.compile(source)
        except RuntimeError as error:
            text = str(error)
            found = _ERROR_POSITION.search(text)
            if found is None:
                raise CelCompileError(shorten(text)) from error
            raise CelCompileError(found.group(3).strip(), line=int(found.group(1)),
                                  column=int(found.group(2))) from error

    def prepare(self, value: Any) -> Any:
        return value

    def activation(self, bindings: Mapping[str, Any]) -> Any:
        return self._env.Activation(dict(bindings))

    def bind_variables(self, values: Mapping[str, Any]) -> Any:
        return dict(values)

    def lazy_variables(self, compute: Callable[[str], Any], names: frozenset[str]) -> Any:
        raise NotImplementedError("cel-expr-python binds variables inside each program (see closed_source)")

    def evaluate_with_variables(self, program: Program, activation: Any, variables: Mapping[str, Program],
                                memo: dict[str, tuple[Any, str | None]]) -> Any:
        """Evaluate a closed `program` (its variables bound inside it, or reached through calls that keep their
        values in `memo`); a failure that comes from a variable names the variable, as `variables.NAME: error`
        (found by evaluating the variables it uses again, at no cost to an expression that succeeds)."""
        run = (activation, memo, variables)
        token = LAZY_RUN.set(run) if isinstance(program, _ExprProgram) and program.calls else None
        try:
            return program.evaluate(activation)
        except CelEvaluationError as error:
            if token is None:  # the variables evaluated again may reach others through calls
                token = LAZY_RUN.set(run)
            raise CelEvaluationError(_attributed(str(error), program.source, activation, variables)) from error
        finally:
            if token is not None:
                LAZY_RUN.reset(token)

    def to_plain(self, value: Any) -> Any:
        return value


def _substring(source: str) -> str:
    """See k8s_library "subString": the engine's own `substring` refuses end == size()."""
    if ".substring(" not in source:
        return source
    return outside_strings(source, lambda text: text.replace(".substring(", ".subString("))


def _attributed(message: str, source: str, activation: Any, variables: Mapping[str, Program]) -> str:
    """`message` of a failed expression, prefixed `variables.NAME: ` for each variable (outermost first) of
    the chain the failure came from: the first variable the source uses that fails alone with that message."""
    for name in referenced_variables(source):
        variable = variables.get(name)
        if variable is None:
            continue
        try:
            variable.evaluate(activation)
        except CelEvaluationError as error:
            if str(error) == message:
                return f"variables.{name}: {_attributed(message, variable.source, activation, variables)}"
    return message


def _check_regex_literals(source: str, names: frozenset[str]) -> None:
    """Refuse a literal pattern of `names` that the library's regex engine cannot match as RE2 does."""
    import celpy
    from celpy.celparser import CELParseError

    from webhook.policies.celpy_library import regex_literal_error

    try:
        tree = celpy.Environment().compile(source)
    except CELParseError:  # syntax cel-python cannot read (optional types): the pattern is checked at run time
        return
    error = regex_literal_error(tree, names)
    if error:
        raise CelCompileError(error)


_MACRO_CALL = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(")


def comprehension_depth(source: str, *, at_least: int) -> int:
    """How deeply comprehensions nest in `source` (0 when it cannot be parsed here, or when a quick count shows
    fewer than `at_least` of them; parsing costs milliseconds, so it is done only when it can matter)."""
    if len(_MACRO_CALL.findall(source)) < at_least:
        return 0
    import celpy
    from celpy.celparser import CELParseError

    from webhook.policies.celpy_library import comprehension_depth as depth

    try:
        return depth(celpy.Environment().compile(source))
    except CELParseError:
        return 0


# --- cel-python -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _CelpyProgram:
    source: str
    runner: Any
    expect: ExpectedType
    engine: CelpyEngine

    def evaluate(self, activation: Any) -> Any:
        from celpy.evaluation import CELEvalError

        try:
            value = self.runner.evaluate(activation)
        except CELEvalError as error:
            raise CelEvaluationError(shorten(str(error.args[0] if error.args else error))) from error
        except Exception as error:  # celpy raises plain Python errors for some type mismatches
            raise CelEvaluationError(shorten(f"{type(error).__name__}: {error}")) from error
        if isinstance(value, CELEvalError):
            raise CelEvaluationError(shorten(str(value.args[0] if value.args else value)))
        check_plain_type(self.engine.to_plain(value), self.expect, self.source)
        return value


class CelpyEngine:
    """cel-python: pure Python, portable, no type checking before run time."""

    name: EngineName = "cel-python"
    shares_activation = False
    bounded = False
    authorizer_problem: str | None = NO_CLUSTER_FOR_AUTHORIZER

    def __init__(self) -> None:
        import celpy
        from celpy import celtypes

        self._celpy = celpy
        self._types = celtypes
        self._env = celpy.Environment()

    def compile(self, source: str, *, expect: ExpectedType, scope: PolicyScope | None = None) -> Program:
        from celpy.celparser import CELParseError

        try:
            tree = self._env.compile(source)
        except CELParseError as error:
            if ".?" in source or "[?" in source:
                raise CelCompileError("the cel-python engine has no optional types (?. and [?]); use --cel-engine "
                                      "cel-expr-python or rewrite the expression") from error
            first_line = str(error.args[0]).splitlines()[0] if error.args else "syntax error"
            message = f"Syntax error near {first_line.strip()!r}"
            raise CelCompileError(message, line=error.line or 1, column=error.column or 1) from error
        from webhook.policies.celpy_library import FUNCTIONS, prepare, regex_literal_error

        refused = prepare(tree)
        if refused:
            raise CelCompileError(f"{refused}; use --cel-engine cel-expr-python or rewrite the expression")
        regex_error = regex_literal_error(tree, frozenset({"find", "findAll", "matches"}))
        if regex_error:
            raise CelCompileError(regex_error)
        return _CelpyProgram(source, self._env.program(tree, functions=FUNCTIONS), expect, self)

    def prepare(self, value: Any) -> Any:
        return self._convert(value)

    def _convert(self, value: Any) -> Any:
        types = self._types
        if isinstance(value, dict):
            return types.MapType({types.StringType(k): self._convert(v) for k, v in value.items()})
        if isinstance(value, list | tuple):
            return types.ListType([self._convert(item) for item in value])
        if isinstance(value, bool):
            return types.BoolType(value)
        if isinstance(value, int):  # as cel-expr-python takes JSON integers past int64: uint, then double
            if -(2**63) <= value < 2**63:
                return types.IntType(value)
            return types.UintType(value) if 0 <= value < 2**64 else types.DoubleType(float(value))
        if isinstance(value, float):
            return types.DoubleType(value)
        if isinstance(value, str):
            return types.StringType(value)
        if value is None:
            return None
        return self._celpy.json_to_cel(value)  # type: ignore[attr-defined]

    def activation(self, bindings: Mapping[str, Any]) -> Any:
        return dict(bindings)

    def bind_variables(self, values: Mapping[str, Any]) -> Any:
        return self._types.MapType({self._types.StringType(k): v for k, v in values.items()})

    def lazy_variables(self, compute: Callable[[str], Any], names: frozenset[str]) -> Any:
        from celpy.evaluation import CELEvalError

        types = self._types

        class LazyVariables(types.MapType):  # type: ignore[misc, name-defined]
            """celpy reads `variables.NAME` with __getitem__: compute it then; a failure is an error value,
            which celpy propagates only where the value is used."""

            def __getitem__(self, key: Any) -> Any:
                try:
                    return compute(str(key))
                except CelEvaluationError as error:
                    return CELEvalError(str(error), ValueError, None)

        return LazyVariables({})

    def evaluate_with_variables(self, program: Program, activation: Any, variables: Mapping[str, Program],
                                memo: dict[str, tuple[Any, str | None]]) -> Any:
        raise NotImplementedError("cel-python gives each policy run its own activation (see lazy_variables)")

    def to_plain(self, value: Any) -> Any:
        types = self._types
        if isinstance(value, types.BoolType):
            return bool(value)
        if isinstance(value, dict):
            return {self.to_plain(k): self.to_plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.to_plain(item) for item in value]
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, bytes):
            return bytes(value)
        return value


def make_engine(name: str, *, cluster: bool = False, kubernetes_version: tuple[int, int] | None = None) -> Engine:
    """The engine called `name` (one of ENGINE_NAMES); `cluster`: the server has a cluster connection, so the
    builtin engine lets expressions use `authorizer` (a SubjectAccessReview per check); `kubernetes_version`: the
    Kubernetes whose CEL environment the builtin engine declares (None: the newest supported; the other engines
    have fixed function sets of their own, docs/cel-library.md)."""
    engine: Engine
    if name == "builtin":
        from webhook.policies.cel_runtime import BuiltinEngine

        return BuiltinEngine(authorizer=cluster, kubernetes_version=kubernetes_version)
    if name == "cel-expr-python":
        engine = CelExprEngine()
    elif name == "cel-python":
        engine = CelpyEngine()
    else:
        raise ValueError(f"unknown CEL engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    if cluster:
        engine.authorizer_problem = BUILTIN_ONLY_AUTHORIZER.format(engine=name)
    return engine
