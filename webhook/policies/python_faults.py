"""What a Python policy that raised is told: the error at the policy's own line, and its policy-side traceback."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any


class PythonFault(str):
    """A fault message (`raised KeyError: 'nope' at policies/x.py:12`) that also carries the traceback from the
    policy function down, for `webhook test -v`; responses and logs use only the message."""

    policy_traceback: str

    def __new__(cls, message: str, policy_traceback: str = "") -> PythonFault:
        fault = super().__new__(cls, message)
        fault.policy_traceback = policy_traceback
        return fault


def _folded(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _innermost_line(tb: TracebackType | None, filename: str) -> int | None:
    """The line of the innermost frame that runs code of `filename` (the policy file)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def fault(error: Exception, *, function: Callable[..., Any], origin: str) -> PythonFault:
    """The fault of a policy function that raised `error`; `origin` is the policy's `path:line` as loaded."""
    code = getattr(function, "__code__", None)
    filename = code.co_filename if code is not None else ""
    display = origin.rpartition(":")[0] or filename
    line = _innermost_line(error.__traceback__, filename)
    where = f" at {display}:{line}" if line is not None else f" in the policy defined at {origin}"
    message = f"raised {type(error).__name__}: {_folded(str(error))}{where}"
    # The first frame is the server's call of the policy: everything after it is the policy's own.
    start = error.__traceback__.tb_next if error.__traceback__ is not None else None
    lines = traceback.format_exception(type(error), error, start)
    return PythonFault(message, "".join(lines).rstrip("\n"))
