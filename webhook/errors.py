"""The exception tree for bad input and bad configuration; policy outcomes are values, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass


class WebhookError(Exception):
    """Base class of every error this package raises on purpose."""


class BadRequest(WebhookError):
    """A request that the admission endpoints cannot accept; becomes a 4xx JSON reply at the edge."""

    def __init__(self, message: str, *, status_code: int = 400, reason: str = "BadRequest") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.reason = reason


class ConfigError(WebhookError):
    """Settings or files that cannot be used as given."""


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """One problem found in a policy file, reported as `path:line:column: message`."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class PolicyLoadError(WebhookError):
    """A policy directory that cannot be loaded; carries every problem found, not just the first."""

    def __init__(self, problems: list[SourceProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))
