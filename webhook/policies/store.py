"""The serving policy set of one process: loaded at start, swapped atomically on a good reload."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from webhook.errors import PolicyLoadError, SourceProblem
from webhook.metrics import Metrics
from webhook.policies.cel import Engine
from webhook.policies.compiled import PolicySet
from webhook.policies.loader import fingerprint, load_policy_set

log = logging.getLogger("webhook.policies")


@dataclass(frozen=True, slots=True)
class LoadStatus:
    ok: bool
    at: float
    problems: tuple[SourceProblem, ...] = ()


class PolicyStore:
    """Holds the current PolicySet; a reload compiles a whole new set before it replaces the old one."""

    def __init__(self, directory: Path, *, engine: Engine, metrics: Metrics,
                 on_load: Callable[[LoadStatus, PolicySet | None], None] | None = None) -> None:
        self.directory = directory
        self.engine = engine
        self.metrics = metrics
        self.on_load = on_load
        self.current: PolicySet | None = None
        self.last_status: LoadStatus | None = None
        self._fingerprint: str | None = None

    def load(self) -> bool:
        """Load the directory now; on failure keep the serving set and record the problems."""
        seen = fingerprint(self.directory) if self.directory.is_dir() else None
        try:
            policy_set = load_policy_set(self.directory, engine=self.engine)
        except PolicyLoadError as error:
            self._fingerprint = seen
            self.last_status = LoadStatus(False, time.time(), tuple(error.problems))
            self.metrics.reloads.labels("rejected").inc()
            self.metrics.policy_set_healthy.set(0)
            keeping = (f"keeping the last good set ({len(self.current.policies)} policies)"
                       if self.current is not None else "no policy set is serving")
            log.error("policy directory %s rejected, %s:\n%s", self.directory, keeping,
                      "\n".join(str(p) for p in error.problems))
            self._notify(self.last_status, None)
            return False
        self.current = policy_set  # one reference assignment: requests hold the set they started with
        self._fingerprint = seen
        self.last_status = LoadStatus(True, time.time())
        self.metrics.reloads.labels("loaded").inc()
        self.metrics.policy_set_healthy.set(1)
        self.metrics.policies_loaded.set(len(policy_set.policies))
        log.info("loaded %d policies from %s (engine %s)", len(policy_set.policies), self.directory,
                 self.engine.name)
        self._notify(self.last_status, policy_set)
        return True

    def _notify(self, status: LoadStatus, policy_set: PolicySet | None) -> None:
        if self.on_load is None:
            return
        try:
            self.on_load(status, policy_set)
        except Exception:  # a listener (events) must never break loading
            log.exception("policy load listener failed")

    def changed(self) -> bool:
        return (fingerprint(self.directory) if self.directory.is_dir() else None) != self._fingerprint

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload whenever the directory changes (also the symlink swap of a mounted ConfigMap)."""
        from watchfiles import awatch

        while not stop.is_set():
            try:
                async for _ in awatch(self.directory, stop_event=stop, debounce=200, step=50,
                                      recursive=True, yield_on_timeout=True, rust_timeout=2000):
                    if self.changed():
                        await asyncio.to_thread(self.load)
            except (FileNotFoundError, RuntimeError, OSError) as error:
                log.warning("cannot watch %s (%s); retrying", self.directory, error)
                await asyncio.sleep(1.0)
                if self.changed():
                    await asyncio.to_thread(self.load)
