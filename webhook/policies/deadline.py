"""A deadline for evaluating one request's policies, so that a runaway policy becomes a fault, not a hang.

The builtin CEL engine has Kubernetes' cost limits, but a cost count is not a clock (a library call over a
large argument costs little in it), and a Python policy can loop or sleep. A real-time interval timer
(SIGALRM) interrupts the serving thread when the deadline passes: the handler raises `DeadlineExceeded` (a
BaseException, so that neither a policy's own `except Exception` nor CEL's `||` can swallow it) at the next
Python bytecode, inside whatever policy was running (the builtin engine is Python throughout, library
functions included); the pipeline turns it into a fault of that policy and of the ones not yet evaluated,
each under its own failurePolicy. C code runs to its end first: the cel-expr-python engine stops any
evaluation after 10,000 comprehension iterations by itself, and regular expressions use RE2 (linear time)
on every engine.

Signals reach only the main thread, where uvicorn runs the app; elsewhere (an embedding in a thread) no
deadline is armed and `active()` says so.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class DeadlineExceeded(BaseException):
    """The request's evaluation deadline passed."""


_armed = False
_installed = False


def _on_alarm(number: int, frame: FrameType | None) -> None:
    if _armed:
        raise DeadlineExceeded


def install() -> bool:
    """Install the SIGALRM handler (main thread only); True when deadlines can be armed in this process."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGALRM, _on_alarm)
    _installed = True
    return True


def active() -> bool:
    return _installed and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DeadlineExceeded in this block once `seconds` have passed (when `active()`; else no limit)."""
    global _armed
    if seconds <= 0 or not active():
        yield
        return
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _armed = False  # a signal arriving from here on is ignored by the handler
        signal.setitimer(signal.ITIMER_REAL, 0)
