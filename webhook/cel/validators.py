"""Checks that Kubernetes makes on a checked expression before it runs, so that a broken literal fails when the policy
loads rather than on every request.

Regex literals: Kubernetes (1.29+) validates the constant pattern of `matches` (cel-go's `ValidateRegexLiterals`,
which checks the call's first argument after the receiver, so the text of a global `matches('[', p)` too), and its
program planner compiles the constant pattern of `matches`, `find` and `findAll` once (cel-go's regex optimisation,
which Kubernetes turns on with `OptOptimize`); a pattern that does not compile refuses the expression either way.
"""

from __future__ import annotations

from webhook.cel.kubernetes.text import compile_regex
from webhook.cel.nodes import walk
from webhook.cel.proto import syntax_pb2
from webhook.cel.values import CelError

_REGEX_FUNCTIONS = frozenset({"matches", "find", "findAll"})


class LiteralError(Exception):
    """A literal that Kubernetes refuses at compile time; `node` is the id of the literal's expression."""

    def __init__(self, message: str, *, node: int) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


def check_literals(expr: syntax_pb2.Expr) -> None:
    """Raise LiteralError for the first regex literal that RE2 (Go's regexp syntax) cannot compile."""
    for node in walk(expr):
        if node.WhichOneof("expr_kind") != "call_expr" or node.call_expr.function not in _REGEX_FUNCTIONS:
            continue
        call = node.call_expr
        arguments = [call.target, *call.args] if call.HasField("target") else list(call.args)
        checked = arguments[1:2] + (list(call.args[:1]) if call.function == "matches" else [])
        for argument in checked:
            if argument.WhichOneof("expr_kind") == "const_expr" and argument.const_expr.HasField("string_value"):
                try:
                    compile_regex(argument.const_expr.string_value)
                except CelError as error:
                    raise LiteralError(f"{call.function}: {error.message}", node=argument.id) from None

