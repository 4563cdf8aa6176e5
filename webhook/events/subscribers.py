"""Subscribers from YAML: sinks, CloudEvents Subscriptions API filters, content mode, auth, retries."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator, model_validator

from webhook.errors import SourceProblem
from webhook.yamlsource import parse_documents, validation_problems

log = logging.getLogger("webhook.events")
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not")
# The object (serialised) an event carries at most: real objects are far smaller (etcd stores at most 1.5 MiB),
# while a review from anyone who reaches the port may carry a 6 MiB one into the outbox for every subscriber.
DEFAULT_MAX_OBJECT_BYTES = 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Model):
    """A secret read from a file or an environment variable, never written in the subscribers file."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        return self

    def read(self) -> str:
        if self.file is not None:
            try:
                return self.file.read_text().strip()
            except OSError as error:
                raise ValueError(f"cannot read secret file {self.file}: {error.strerror}") from error
        assert self.env is not None
        value = os.environ.get(self.env)
        if not value:
            raise ValueError(f"environment variable {self.env} is not set")
        return value.strip()


class Auth(_Model):
    bearerToken: SecretSource | None = None
    # Standard Webhooks signing secrets (whsec_...); two during a rotation, every one signs each message.
    signingSecrets: Annotated[list[SecretSource], Field(max_length=2)] = Field(default_factory=list)


class Retry(_Model):
    maxAttempts: int = Field(default=12, ge=1, le=100)
    initialDelaySeconds: float = Field(default=1.0, gt=0, le=3600)
    maxDelaySeconds: float = Field(default=300.0, gt=0, le=86400)


class Subscriber(_Model):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    sink: HttpUrl
    filters: list[dict[str, Any]] = Field(default_factory=list)
    contentMode: Literal["binary", "structured"] = "binary"
    includeObject: bool = False
    maxObjectBytes: int = Field(default=DEFAULT_MAX_OBJECT_BYTES, ge=1, le=16 * 1024 * 1024)
    auth: Auth = Field(default_factory=Auth)
    headers: dict[str, str] = Field(default_factory=dict)
    timeoutSeconds: float = Field(default=5.0, gt=0, le=120)
    concurrency: int = Field(default=4, ge=1, le=64)
    retry: Retry = Field(default_factory=Retry)

    @field_validator("filters")
    @classmethod
    def _filters(cls, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, item in enumerate(filters):
            for path, message in filter_problems(item, (index,)):
                raise ValueError(f"filters.{'.'.join(str(p) for p in path)}: {message}")
        return filters


class SubscribersFile(_Model):
    subscribers: list[Subscriber] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> SubscribersFile:
        names = [s.name for s in self.subscribers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"subscriber names must be unique; repeated: {', '.join(repeated)}")
        return self


def filter_problems(item: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """What is wrong with a filter in the Subscriptions API dialects, as (path within the filter, message)."""
    if not isinstance(item, dict) or len(item) != 1:
        return [(path, f"a filter is a map with exactly one dialect ({', '.join(DIALECTS)})")]
    ((dialect, value),) = item.items()
    if dialect not in DIALECTS:
        return [((*path, dialect), f"unknown filter dialect {dialect!r}; use one of {', '.join(DIALECTS)}")]
    inner_path = (*path, dialect)
    if dialect in ("exact", "prefix", "suffix"):
        if not isinstance(value, dict) or not value or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return [(inner_path, f"{dialect}: give a non-empty map of attribute names to strings")]
        return []
    if dialect in ("all", "any"):
        if not isinstance(value, list) or not value:
            return [(inner_path, f"{dialect}: give a non-empty list of filters")]
        return [problem for index, inner in enumerate(value)
                for problem in filter_problems(inner, (*inner_path, index))]
    return filter_problems(value, inner_path)


def filter_matches(item: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
    """Subscriptions API semantics; an attribute the event lacks never matches exact, prefix or suffix."""
    ((dialect, value),) = item.items()
    if dialect == "exact":
        return all(attributes.get(k) == v for k, v in value.items())
    if dialect == "prefix":
        return all(k in attributes and attributes[k].startswith(v) for k, v in value.items())
    if dialect == "suffix":
        return all(k in attributes and attributes[k].endswith(v) for k, v in value.items())
    if dialect == "all":
        return all(filter_matches(inner, attributes) for inner in value)
    if dialect == "any":
        return any(filter_matches(inner, attributes) for inner in value)
    return not filter_matches(value, attributes)


@dataclass(frozen=True, slots=True)
class ResolvedSubscriber:
    """A subscriber with its secrets read, ready for delivery."""

    spec: Subscriber
    bearer_token: str | None
    signing_secrets: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def wants(self, attributes: Mapping[str, str]) -> bool:
        return all(filter_matches(item, attributes) for item in self.spec.filters)


def load_subscribers(path: Path) -> tuple[ResolvedSubscriber, ...]:
    """Parse, validate and resolve secrets; raises ConfigFileError with `path:line:column` problems."""
    display = str(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigFileError([SourceProblem(display, 1, 1, f"cannot read: {error.strerror}")]) from error
    documents, problems = parse_documents(text, path=display)
    if problems:
        raise ConfigFileError(problems)
    if len(documents) != 1:
        raise ConfigFileError([SourceProblem(display, 1, 1, "expected one YAML document with `subscribers:`")])
    document = documents[0]
    data = document.data if isinstance(document.data, dict) else {}
    listed = data.get("subscribers")
    entries: list[Any] = listed if isinstance(listed, list) else []
    located = [  # filter problems at the exact key, before the model reports them at the list
        document.problem(("subscribers", i, "filters", j, *path), message, at_key=True)
        for i, entry in enumerate(entries) if isinstance(entry, dict) and isinstance(entry.get("filters"), list)
        for j, item in enumerate(entry["filters"]) for path, message in filter_problems(item)
    ]
    if located:
        raise ConfigFileError(located)
    try:
        parsed = SubscribersFile.model_validate(document.data)
    except ValidationError as error:
        raise ConfigFileError(validation_problems(document, error)) from error
    resolved = []
    secret_problems = []
    for index, subscriber in enumerate(parsed.subscribers):
        try:
            token = subscriber.auth.bearerToken.read() if subscriber.auth.bearerToken else None
            secrets = tuple(secret.read() for secret in subscriber.auth.signingSecrets)
        except ValueError as error:
            secret_problems.append(document.problem(("subscribers", index, "auth"), str(error)))
            continue
        resolved.append(ResolvedSubscriber(subscriber, token, secrets))
    if secret_problems:
        raise ConfigFileError(secret_problems)
    return tuple(resolved)


class ConfigFileError(Exception):
    def __init__(self, problems: list[SourceProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SubscriberSet:
    """The current subscribers from a file, re-read when it changes; a broken file keeps the last good set."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.current: tuple[ResolvedSubscriber, ...] = ()
        self.problems: list[str] = []
        self._stamp: tuple[float, int] | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Reload if the file changed; True when the set was replaced."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime, stat.st_size)
        except OSError:
            stamp = (0.0, -1)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            loaded = load_subscribers(self.path)
        except ConfigFileError as error:
            self.problems = [str(problem) for problem in error.problems]
            log.error("subscribers file %s rejected, keeping %d subscribers:\n%s", self.path, len(self.current),
                      "\n".join(self.problems))
            return False
        self.current = loaded
        self.problems = []
        log.info("loaded %d subscribers from %s", len(loaded), self.path)
        return True
