"""A CEL environment: cel-expr-python's parser and type checker in front, our planner and runtime behind.

The checker gives exact compile errors with positions and resolves every call to its overload ids; the checked
tree (`Expression.serialize()`, a `google.protobuf.Any` holding `cel.expr.CheckedExpr`) is planned once into
closures (webhook.cel.compiler) that evaluate on the review's plain JSON values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import any_pb2

from webhook.cel import ext_encoders, ext_math, ext_strings, kubernetes
from webhook.cel.codegen import FALLBACKS, FastPath, generate
from webhook.cel.compiler import Planner
from webhook.cel.comprehensions import (
    CostLimitExceeded,
    declare_two_variable,
    is_two_variable_call,
    two_variable_names,
)
from webhook.cel.functions import FunctionTable
from webhook.cel.nodes import COST_LIMIT_MESSAGE, Eval, Frame, PlanError, walk
from webhook.cel.proto import checked_pb2, syntax_pb2
from webhook.cel.validators import LiteralError, check_literals
from webhook.cel.values import TYPE_NAMES, CelError

PER_CALL_LIMIT = 1_000_000  # Kubernetes' PerCallLimit: the cost one expression may take
_TYPE_NAMES = {**TYPE_NAMES, **kubernetes.TYPE_NAMES}  # type identifiers: CEL's and the Kubernetes library's
_ERROR_POSITION = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")


class CelCompileError(Exception):
    """An expression that does not compile; `line` and `column` are 1-based within the expression."""

    def __init__(self, message: str, *, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class Program:
    """One planned expression; `evaluate` may run in any number of threads at once.

    It runs its generated fast path (webhook.cel.codegen) when it has one, and the planned closures when the fast
    path gives way (any error or unexpected value) or was not generated."""

    __slots__ = ("_root", "_slot_count", "_static_cost", "fast", "parts", "return_type", "source")

    def __init__(self, *, source: str, root: Eval, slot_count: int, static_cost: int, return_type: Any,
                 fast: FastPath | None = None, parts: tuple[Planner, syntax_pb2.Expr, int] | None = None) -> None:
        self.source = source
        self.return_type = return_type  # the checker's cel_expr_python Type (None when unchecked)
        self.fast = fast
        self.parts = parts  # what generated the fast path, to link it with others (codegen.generate_linked)
        self._root = root
        self._slot_count = slot_count
        self._static_cost = static_cost

    def evaluate(self, bindings: Mapping[str, Any], *, cost_limit: int = PER_CALL_LIMIT) -> Any:
        """The value; raises CelError (cel-go's wording), also when the cost passes `cost_limit`."""
        return self.evaluate_with_cost(bindings, cost_limit=cost_limit)[0]

    def evaluate_with_cost(self, bindings: Mapping[str, Any], *, cost_limit: int = PER_CALL_LIMIT
                           ) -> tuple[Any, int]:
        fast = self.fast
        if fast is not None and self._static_cost <= cost_limit:
            try:
                return fast(bindings, cost_limit)
            except CostLimitExceeded as exceeded:  # charged as the closures charge: they would end here too
                failure = CelError(COST_LIMIT_MESSAGE)
                failure.cost = exceeded.args[0] if exceeded.args else cost_limit + 1
                raise failure from None
            except FALLBACKS:
                pass
        return self.evaluate_planned(bindings, cost_limit=cost_limit)

    def evaluate_planned(self, bindings: Mapping[str, Any], *, cost_limit: int = PER_CALL_LIMIT
                         ) -> tuple[Any, int]:
        """The planned closures alone (exact in every case): the value and its cost."""
        frame = Frame(bindings, self._slot_count, cost_limit)
        frame.cost = self._static_cost
        try:
            if frame.cost > cost_limit:
                raise CostLimitExceeded
            return self._root(frame), frame.cost
        except CostLimitExceeded:
            failure = CelError(COST_LIMIT_MESSAGE)
        except CelError as error:
            error.cost = frame.cost
            raise
        except RecursionError:
            failure = CelError("max recursion depth exceeded")
        except (ArithmeticError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            failure = CelError(f"internal error: {type(error).__name__}: {error}")
        failure.cost = frame.cost
        raise failure


def standard_functions() -> FunctionTable:
    """Every overload by id besides the standard operators (webhook.cel.stdlib): the extension libraries and
    the Kubernetes library."""
    table = FunctionTable()
    for library in (ext_strings.FUNCTIONS, ext_math.FUNCTIONS, ext_encoders.FUNCTIONS, kubernetes.FUNCTIONS):
        table.update(library)
    return table


class Environment:
    """Declared variables (name -> cel_expr_python Type), CEL's standard library with the strings, math,
    optional, bindings and encoders extensions, and the Kubernetes library as an API server of
    `kubernetes_version` (major, minor) declares it: the format library and authz selectors from 1.31, two-variable
    comprehensions from 1.32, semver and image from 1.33 (a function a version lacks is a compile error, as there).
    """

    def __init__(self, variables: Mapping[str, Any] | None = None, *, container: str = "",
                 functions: FunctionTable | None = None, declarations: Sequence[Any] = (),
                 kubernetes_version: tuple[int, int] = kubernetes.NEWEST_VERSION) -> None:
        from cel_expr_python import cel

        if not kubernetes.OLDEST_VERSION <= kubernetes_version <= kubernetes.NEWEST_VERSION:
            raise ValueError(f"Kubernetes {kubernetes_version[0]}.{kubernetes_version[1]} is not supported: "
                             f"{version_text(kubernetes.OLDEST_VERSION)} to {version_text(kubernetes.NEWEST_VERSION)}")
        self._cel = cel
        self.kubernetes_version = kubernetes_version
        self.variables = dict(variables or {})
        self.container = container
        self.functions = functions if functions is not None else standard_functions()
        # The opaque types are messages of this pool (see webhook.cel.kubernetes.declarations).
        self._options: dict[str, Any] = {"descriptor_pool": kubernetes.descriptor_pool()}
        if container:
            self._options["container"] = container
        self._declarations = [*kubernetes.declarations(cel, kubernetes_version), *declarations]
        self._env = cel.NewEnv(variables=self.variables, extensions=self._extensions(),
                               functions=self._declarations, **self._options)
        self._two_variable_envs: dict[frozenset[str], Any] = {}
        self._arguments: dict[str, Any] = {"container": container, "functions": self.functions,
                                           "declarations": declarations}

    def _versioned(self, error: CelCompileError, source: str) -> CelCompileError:
        """The error, saying so when a newer Kubernetes would compile the expression (a function this version lacks)."""
        for minor in range(self.kubernetes_version[1] + 1, kubernetes.NEWEST_VERSION[1] + 1):
            newer = Environment(self.variables, kubernetes_version=(1, minor), **self._arguments)
            try:
                newer._environment_for(source).compile(source)
            except RuntimeError:
                continue
            error.message = f"{error.message} (Kubernetes 1.{minor} has it; this environment is Kubernetes " \
                            f"{version_text(self.kubernetes_version)}: --kubernetes-version)"
            error.args = (error.message,)
            return error
        return error

    def compile(self, source: str, *, disable_check: bool = False) -> Program:
        env = self._env if disable_check else self._environment_for(source)
        try:
            expression = env.compile(source, disable_check=disable_check)
        except RuntimeError as error:
            raise self._versioned(_compile_error(str(error)), source) from error
        envelope = any_pb2.Any()
        envelope.ParseFromString(expression.serialize())
        references: Mapping[int, checked_pb2.Reference] = {}
        types: Mapping[int, checked_pb2.Type] = {}
        if envelope.type_url.endswith("/cel.expr.CheckedExpr"):
            checked = checked_pb2.CheckedExpr()
            envelope.Unpack(checked)
            tree, references, types = checked.expr, checked.reference_map, checked.type_map
            try:
                return_type = expression.return_type()
            except RuntimeError:  # a type cel-expr-python cannot express (a map with null, double or list keys)
                return_type = None
            try:
                check_literals(tree)
            except LiteralError as error:
                raise _literal_error(source, error, checked.source_info.positions.get(error.node, 0)) from None
        else:
            parsed = syntax_pb2.ParsedExpr()
            envelope.Unpack(parsed)
            tree, return_type = parsed.expr, None
        planner = Planner(functions=self.functions, references=references, types=types,
                          variables=frozenset(self.variables), container=self.container, type_names=_TYPE_NAMES)
        try:
            root = planner.plan(tree)
        except PlanError as error:
            raise CelCompileError(str(error)) from error
        fast = generate(planner, tree, planner.static_cost)
        return Program(source=source, root=root, slot_count=planner.slot_count, static_cost=planner.static_cost,
                       return_type=return_type, fast=fast,
                       parts=(planner, tree, planner.static_cost) if fast is not None else None)


    def _extensions(self) -> list[Any]:
        """cel-expr-python's extensions (declarations only: their functions run here), then the Kubernetes
        library's overloads of functions that the strings extension declares too."""
        from cel_expr_python.ext import ext_bindings, ext_encoders, ext_math, ext_optional, ext_strings

        return [ext_strings.ExtStrings(), ext_optional.ExtOptional(), ext_bindings.ExtBindings(), ext_math.ExtMath(),
                ext_encoders.ExtEncoders(), kubernetes.extension(self._cel)]

    def _environment_for(self, source: str) -> Any:
        """The checker's environment for `source`: with two-variable comprehensions (which cel-expr-python's
        parser leaves as calls), one that also declares them and their iteration variables (as dyn)."""
        if not _TWO_VARIABLE_HINT.search(source) or self.kubernetes_version < TWO_VARIABLE_VERSION:
            return self._env
        try:
            parsed = self._env.compile(source, disable_check=True)
        except RuntimeError:
            return self._env  # a syntax error: reported by the checker as usual
        envelope = any_pb2.Any()
        envelope.ParseFromString(parsed.serialize())
        tree = syntax_pb2.ParsedExpr()
        envelope.Unpack(tree)
        names = frozenset(two_variable_names(tree.expr) - set(self.variables))
        if not names and not any(node.WhichOneof("expr_kind") == "call_expr" and
                                 is_two_variable_call(node.call_expr) for node in walk(tree.expr)):
            return self._env
        env = self._two_variable_envs.get(names)
        if env is None:
            env = self._cel.NewEnv(variables={**self.variables, **dict.fromkeys(names, self._cel.Type.DYN)},
                                   extensions=self._extensions(), functions=[
                                       *self._declarations, *declare_two_variable(self._cel)], **self._options)
            if len(self._two_variable_envs) < 64:
                self._two_variable_envs[names] = env
        return env


TWO_VARIABLE_VERSION = (1, 32)  # ext.TwoVarComprehensions in Kubernetes' base environment


def version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def parse_version(text: str) -> tuple[int, int]:
    """`1.31` as (1, 31); ValueError with the supported range for anything else."""
    found = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", text.strip())
    supported = f"{version_text(kubernetes.OLDEST_VERSION)} to {version_text(kubernetes.NEWEST_VERSION)}"
    if found is None:
        raise ValueError(f"not a Kubernetes version (major.minor): {text!r}; supported: {supported}")
    version = (int(found.group(1)), int(found.group(2)))
    if not kubernetes.OLDEST_VERSION <= version <= kubernetes.NEWEST_VERSION:
        raise ValueError(f"Kubernetes {version_text(version)} is not supported: {supported}")
    return version


_TWO_VARIABLE_HINT = re.compile(
    r"\b(?:all|exists|existsOne|exists_one|transformList|transformMap|transformMapEntry)\s*\(")


def _literal_error(source: str, error: LiteralError, offset: int) -> CelCompileError:
    """The error at the literal's place: `offset` counts code points from the start of `source`."""
    line_start = source.rfind("\n", 0, offset) + 1
    return CelCompileError(error.message, line=source.count("\n", 0, offset) + 1, column=offset - line_start + 1)


def _compile_error(text: str) -> CelCompileError:
    found = _ERROR_POSITION.search(text)
    if found is None:
        return CelCompileError(_STATUS_PREFIX.sub("", " ".join(text.split())))
    return CelCompileError(found.group(3).strip(), line=int(found.group(1)), column=int(found.group(2)))
