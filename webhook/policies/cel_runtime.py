"""The `builtin` engine: webhook.cel (cel-expr-python's checker in front, our planner and runtime behind).

It evaluates on the review's plain JSON values (nothing converted per request), each policy run with an
activation of its own whose `variables` are computed on first use, and stops any expression at Kubernetes'
per-expression cost limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from webhook.cel.codegen import UNSET, generate_linked
from webhook.cel.environment import PER_CALL_LIMIT, Environment, Program
from webhook.cel.kubernetes import NEWEST_VERSION
from webhook.cel.kubernetes.authz import VARIABLES as AUTHORIZER_VARIABLES
from webhook.cel.values import CelError, UInt, type_of
from webhook.policies.cel import (
    NO_CLUSTER_FOR_AUTHORIZER,
    PLAIN_TYPES,
    VARIABLE_NAMES,
    CelEvaluationError,
    EngineName,
    ExpectedType,
    check_plain_type,
    check_return_type,
    shorten,
)
from webhook.policies.scope import PolicyScope

RUNTIME_BUDGET = 10_000_000  # Kubernetes' RuntimeCELCostBudget: one policy's evaluation, all expressions
OUT_OF_BUDGET = "validation failed due to running out of cost budget, no further validation rules will be run"
_BUDGET = "@budget"  # the activation's entry for the policy run's budget (not a CEL identifier: no collision)


class _Budget:
    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = RUNTIME_BUDGET


class _BuiltinProgram:
    __slots__ = ("expect", "program", "source", "wanted")

    def __init__(self, source: str, program: Program, expect: ExpectedType) -> None:
        self.source = source
        self.program = program
        self.expect = expect
        self.wanted = PLAIN_TYPES[expect]  # None: any value

    def evaluate(self, activation: Any) -> Any:
        """The value, within the per-expression limit and what is left of the policy run's budget."""
        budget = activation.get(_BUDGET)
        if budget is None:
            limit = PER_CALL_LIMIT
        else:
            limit = budget.remaining
            if limit <= 0:
                raise CelEvaluationError(OUT_OF_BUDGET)
            if limit > PER_CALL_LIMIT:
                limit = PER_CALL_LIMIT
        try:
            value, cost = self.program.evaluate_with_cost(activation, cost_limit=limit)
        except CelError as error:
            if budget is not None:
                budget.remaining -= error.cost
                if budget.remaining < 0 and limit < PER_CALL_LIMIT:
                    raise CelEvaluationError(OUT_OF_BUDGET) from None
            raise CelEvaluationError(shorten(error.message)) from None
        if budget is not None:
            budget.remaining -= cost
        if self.wanted is not None and not isinstance(value, self.wanted):
            check_plain_type(value, self.expect, self.source)
        return value


def link_validations(policy: Any) -> Callable[[dict[str, Any]], bool] | None:
    """A CompiledPolicy's validate phase as one fast path, for the common case: `fast(bindings)` (bindings with
    `params`) is True when the policy's result is clean (a matchCondition false, or every validation true, within
    the cost limits); False, or a raised FALLBACKS or CostLimitExceeded, when the policy must run as usual (a
    violation has messages to evaluate, an error may be absorbed, a fault must be worded). The variables are
    computed at first use as on the usual path, but held in a list rather than a lazily computed map. None when
    the policy has nothing to gain (Python, audit annotations) or an expression has no fast path."""
    if policy.python_function is not None or policy.audit_annotations or not policy.validations:
        return None
    programs = [variable.program for variable in policy.variables] + \
        [program for _, program in policy.match_conditions] + [check.program for check in policy.validations]
    if not all(isinstance(program, _BuiltinProgram) and program.program.parts is not None for program in programs):
        return None
    linked = generate_linked([program.program.parts for program in programs],
                             [variable.name for variable in policy.variables])
    if linked is None:
        return None
    count, first = len(policy.variables), len(policy.variables) + len(policy.match_conditions)
    conditions, validations = linked[count:first], linked[first:]

    def fast_validate(bindings: dict[str, Any]) -> bool:
        computed: list[Any] = [UNSET] * count + [0]  # the variables, then the cost so far
        for condition in conditions:
            value, cost = condition(bindings, computed, PER_CALL_LIMIT)
            computed[-1] += cost
            if value is not True:
                return value is False and computed[-1] <= RUNTIME_BUDGET  # the policy does not apply
        for validation in validations:
            value, cost = validation(bindings, computed, PER_CALL_LIMIT)
            computed[-1] += cost
            if value is not True or computed[-1] > RUNTIME_BUDGET:
                return False
        return True

    return fast_validate


class _LazyVariables(dict[str, Any]):
    """`variables` of one policy run: each entry computed on first access (a failure is a CEL error where the
    expression reads it, which `&&` and `||` may absorb, as in the API server)."""

    __slots__ = ("_compute", "_names")

    def __init__(self, compute: Callable[[str], Any], names: frozenset[str]) -> None:
        super().__init__()
        self._compute = compute
        self._names = names

    def __missing__(self, name: str) -> Any:
        try:
            value = self._compute(name)
        except CelEvaluationError as error:
            raise CelError(str(error)) from None
        self[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._names  # a declared variable is present, computed or not, failed or not


class BuiltinEngine:
    """Our own runtime (webhook.cel): the default."""

    name: EngineName = "builtin"
    shares_activation = False
    bounded = True  # cost-limited and interruptible: no nesting limit needed at load

    def __init__(self, *, authorizer: bool = False, kubernetes_version: tuple[int, int] | None = None) -> None:
        """`authorizer`: the server has a cluster connection, so policies may use `authorizer` (it is declared,
        with Kubernetes' types, either way: the loader refuses it without one); `kubernetes_version`: whose CEL
        environment to declare (None: the newest supported)."""
        from cel_expr_python import cel

        self._cel = cel
        self.authorizer_problem: str | None = None if authorizer else NO_CLUSTER_FOR_AUTHORIZER
        self._environment = Environment({**{name: cel.Type.DYN for name in VARIABLE_NAMES},
                                         **{name: cel.Type(type_name)
                                            for name, type_name in AUTHORIZER_VARIABLES.items()}},
                                        kubernetes_version=kubernetes_version or NEWEST_VERSION)

    def compile(self, source: str, *, expect: ExpectedType, scope: PolicyScope | None = None) -> _BuiltinProgram:
        program = self._environment.compile(source)  # raises CelCompileError
        check_return_type(self._cel, program.return_type, expect)
        return _BuiltinProgram(source, program, expect)

    def prepare(self, value: Any) -> Any:
        return value

    def link(self, policy: Any) -> Callable[[dict[str, Any]], bool] | None:
        return link_validations(policy)

    def activation(self, bindings: Mapping[str, Any]) -> Any:
        """A policy run's bindings, with its cost budget (a dict built for the call is used as it is)."""
        activation = bindings if type(bindings) is dict else dict(bindings)
        activation[_BUDGET] = _Budget()
        return activation

    def to_plain(self, value: Any) -> Any:
        """The value as JSON-like Python; a value JSON cannot hold (bytes, a duration, a timestamp, a type, an
        optional, a Kubernetes library value) anywhere in it is a fault, as on the other engines."""
        kind = type(value)
        if kind is bool or kind is str or value is None:
            return value
        return _plain(value)

    def bind_variables(self, values: Mapping[str, Any]) -> Any:
        return dict(values)

    def lazy_variables(self, compute: Callable[[str], Any], names: frozenset[str]) -> Any:
        return _LazyVariables(compute, names)

    def evaluate_with_variables(self, program: Any, activation: Any, variables: Mapping[str, Any],
                                memo: dict[str, tuple[Any, str | None]]) -> Any:
        raise NotImplementedError("the builtin engine gives each policy run its own activation")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool | str | float | int) or value is None:
        return int(value) if type(value) is UInt else value
    raise CelEvaluationError(f"a value of type {type_of(value).name} cannot be represented in JSON")
