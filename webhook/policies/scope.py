"""A policy's scope in a CEL expression: its params and variables, closed into one expression per source for the
engine that shares one activation per request (cel-expr-python; see `closed_source`)."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PARAMS_BY_POLICY = "__params"  # the shared activation's map from a policy's params key to its params
_VARIABLE_REFERENCE = re.compile(r"\bvariables\.([_a-zA-Z][_a-zA-Z0-9]*)")


@dataclass(frozen=True, slots=True)
class PolicyScope:
    """What one policy's expressions see besides the request: its params (by key) and earlier variables."""

    params_key: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)  # name -> source, in definition order


def referenced_variables(source: str) -> list[str]:
    """Names used as `variables.NAME` in a source, in order of first use."""
    return list(dict.fromkeys(_VARIABLE_REFERENCE.findall(source)))


STATUS_PREFIX = re.compile(r"\b(?:UNKNOWN|INVALID_ARGUMENT|NOT_FOUND|INTERNAL|FAILED_PRECONDITION|OUT_OF_RANGE|"
                            r"UNIMPLEMENTED|RESOURCE_EXHAUSTED): ")
_BOUND_PREFIX = "__var_"  # `variables.NAME` in a closed source is the identifier __var_NAME bound by cel.bind
LAZY_FUNCTION = "__variable"  # or, where binding would nest too deeply, a call that evaluates the variable


def outside_strings(source: str, replace: Callable[[str], str]) -> str:
    """Apply `replace` to the parts of a CEL source outside string literals."""
    out, start, index = [], 0, 0
    while index < len(source):
        char = source[index]
        if char in "'\"":
            out.append(replace(source[start:index]))
            quote = source[index] * 3 if source.startswith(source[index] * 3, index) else source[index]
            end = index + len(quote)
            while end < len(source) and not source.startswith(quote, end):
                end += 2 if source[end] == "\\" else 1
            end = min(end + len(quote), len(source))
            out.append(source[index:end])
            start = index = end
            continue
        index += 1
    out.append(replace(source[start:]))
    return "".join(out)


def closed_source(source: str, scope: PolicyScope, *, calls: bool = False) -> str:
    """`source` for one shared activation: its params bound in place, and each variable it reaches (directly or
    through other variables) bound with `cel.bind` to an identifier of its own, the earliest outermost.

    cel-cpp evaluates a `cel.bind` initialiser lazily, when evaluation first reaches the name, and once per
    evaluation, so these are the API server's lazy variables (one in an untaken branch never runs, and a
    failed one faults only the expressions that reach it), each with its own static type, and a variable's
    value never leaves the CEL runtime (converting a large pod spec to Python and back cost milliseconds).

    cel-cpp's parser refuses nesting deeper than 32 levels, and each binding is one. With `calls`, for an
    expression that would nest too deeply so, each `variables.NAME` becomes `__variable('NAME')` instead, a
    call that evaluates the variable once per policy run (see `lazy_variable`): as lazy, but the value
    crosses to Python and back, which costs time in proportion to its size."""
    names = list(scope.variables)

    def substitute(text: str) -> str:
        text = _HAS_VARIABLE.sub(lambda m: "true" if m.group(1) in scope.variables else "false", text)
        if calls:
            return _VARIABLE_REFERENCE.sub(lambda m: f"{LAZY_FUNCTION}('{m.group(1)}')", text)
        return _VARIABLE_REFERENCE.sub(
            lambda m: _BOUND_PREFIX + m.group(1) if m.group(1) in scope.variables else m.group(0), text)

    needed: set[str] = set()
    pending = [] if calls else [name for name in referenced_variables(source) if name in scope.variables]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            earlier = names[: names.index(name)]
            pending.extend(used for used in referenced_variables(scope.variables[name]) if used in earlier)
    closed = outside_strings(source, substitute)
    for name in reversed(names):
        if name in needed:
            value = outside_strings(scope.variables[name], substitute)
            closed = f"cel.bind({_BOUND_PREFIX}{name}, (\n{value}\n), (\n{closed}\n))"
    if scope.params_key is not None:
        closed = f"cel.bind(params, {PARAMS_BY_POLICY}['{scope.params_key}'], (\n{closed}\n))"
    return closed


_HAS_VARIABLE = re.compile(r"\bhas\(\s*variables\.([_a-zA-Z][_a-zA-Z0-9]*)\s*\)")
# The policy run whose variables `__variable(name)` evaluates: (activation, memo, programs by name).
LAZY_RUN: contextvars.ContextVar[tuple[Any, dict[str, tuple[Any, str | None]], Mapping[str, Any]] | None] = \
    contextvars.ContextVar("webhook_cel_variables", default=None)


def lazy_variable(name: str) -> Any:
    state = LAZY_RUN.get()
    if state is None:
        raise RuntimeError("variables are only available while a policy is evaluated")
    activation, memo, programs = state
    if name not in memo:
        program = programs.get(name)
        if program is None:
            raise RuntimeError(f"no such key: {name}")
        value = program.expression.eval(activation)
        if value.type() == program.error_type:
            memo[name] = (None, STATUS_PREFIX.sub("", str(value.value())))
        else:
            memo[name] = (value.plain_value(), None)
    result, error = memo[name]
    if error is not None:
        raise RuntimeError(error)
    return result
