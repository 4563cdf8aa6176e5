"""The memory guard of a serving process: resident memory against a soft and a hard limit (MemoryGuard), and
those limits derived from the container's memory limit (memory_limits)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from webhook.config import Settings
from webhook.errors import ConfigError

log = logging.getLogger("webhook.memory")


MIB = 1024 * 1024
DEFAULT_HARD_LIMIT_MB = 1024  # a serving process's hard limit when no container memory limit is found
HARD_LIMIT_SHARE = 0.85  # of a process's share of the container limit: sockets and page cache count there too
SOFT_LIMIT_FRACTION = 0.7  # of the hard limit: the gap holds what requests admitted before it still allocate
DELIVERER_MB = 96  # `webhook deliver`, when it runs as a process of its own in the same container
SUPERVISOR_MB = 64  # uvicorn's supervisor process with --workers above 1


@dataclass(frozen=True)
class MemoryLimits:
    """The memory guard's limits of one serving process, in MiB (0: that limit is off)."""

    soft_mb: int
    hard_mb: int
    source: str  # where the hard limit comes from, for messages


def container_memory_limit_mb() -> int | None:
    """The memory limit of this process's cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`); None: none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        with contextlib.suppress(ValueError):
            value = int(text)
            return value // MIB if value < 1 << 60 else None  # cgroup v1 says "no limit" with about 2**63
    return None


def memory_limits(*, soft_mb: int | None, hard_mb: int | None, workers: int, deliverer_process: bool,
                  container_mb: int | None) -> MemoryLimits:
    """The guard's limits per serving process: the given ones, else derived from the container's memory limit
    (what the other processes of the container take set aside, HARD_LIMIT_SHARE of each serving process's share;
    the soft limit SOFT_LIMIT_FRACTION of the hard one)."""
    source = "--memory-hard-limit-mb"
    if hard_mb is None:
        if container_mb is None:
            hard_mb, source = DEFAULT_HARD_LIMIT_MB, "the default without a container memory limit"
        else:
            others = (DELIVERER_MB if deliverer_process else 0) + (SUPERVISOR_MB if workers > 1 else 0)
            hard_mb = int((container_mb - others) / workers * HARD_LIMIT_SHARE)
            source = (f"{HARD_LIMIT_SHARE:.0%} of the container's {container_mb} MiB" +
                      (f" less {others} MiB for its other processes" if others else "") +
                      (f", shared by {workers} workers" if workers > 1 else ""))
            if hard_mb < 64:
                raise ConfigError(f"the container's memory limit of {container_mb} MiB leaves {hard_mb} MiB for "
                                  f"each serving process: raise it, or set --memory-hard-limit-mb (0: no guard)")
    if hard_mb == 0:
        return MemoryLimits(soft_mb=0, hard_mb=0, source="--memory-hard-limit-mb 0")
    if soft_mb is None:
        soft_mb = int(hard_mb * SOFT_LIMIT_FRACTION)
    if soft_mb >= hard_mb:
        raise ConfigError(f"--memory-soft-limit-mb {soft_mb} must be below the hard limit of {hard_mb} MiB "
                          f"(from {source})")
    return MemoryLimits(soft_mb=soft_mb, hard_mb=hard_mb, source=source)


SMALL_BODY_BYTES = 64 * 1024  # answered past the soft limit too: what they cost is bounded by the connections
SAMPLE_SECONDS = 0.01  # on the request path resident memory is read at most this often (a read costs ~3 us)
WATCH_SECONDS = 0.1  # and in the background this often, to act on the limits without requests
RECLAIM_SECONDS = 1.0  # past the soft limit: a full collection and malloc_trim at most this often
SOFT_LIMIT_GRACE_SECONDS = 30.0  # past the soft limit longer than this, reclaiming notwithstanding: drain, exit


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, which gives freed heap memory back to the system (None elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        return cast(Callable[[int], int], ctypes.CDLL(None).malloc_trim)
    return None


class MemoryGuard:
    """This serving process's resident memory (`/proc/self/statm`) against its limits.

    Past the soft limit `refuses()` is true for bodies over SMALL_BODY_BYTES: the app answers those admission
    requests 503 (Retry-After) before their body is read or as soon as it passes that size, while the API
    server's reviews of ordinary objects go on being answered; and the guard reclaims (a full collection,
    malloc_trim) once a second. Past the hard limit, or the soft one for SOFT_LIMIT_GRACE_SECONDS, the process
    drains as on SIGTERM (refusing every admission request) and exits, for its supervisor to start it again.
    `--restart-above-mb` drains the same way but goes on answering meanwhile (it bounds a slow leak, not a flood)."""

    def __init__(self, *, soft_mb: int, hard_mb: int, restart_above_mb: int | None = None) -> None:
        self.soft = soft_mb * MIB if soft_mb else None
        self.hard = hard_mb * MIB if hard_mb else None
        self.restart_above = restart_above_mb * MIB if restart_above_mb else None
        self.resident = 0
        self.refused = 0  # admission requests answered 503, counted by the app
        self._refusing = False
        self._exiting = False
        self._refuse_until_exit = False
        self._sampled_at = -math.inf
        self._past_soft_since: float | None = None
        self._reclaimed_at = -math.inf
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._trim = _malloc_trim()
        try:
            self._statm: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._statm = None

    def _sample(self, now: float) -> int:
        if self._statm is not None:
            self.resident = int(os.pread(self._statm, 256, 0).split()[1]) * self._page_size
        self._sampled_at = now
        self._refusing = self._refuse_until_exit or (self.soft is not None and self.resident >= self.soft)
        return self.resident

    def refusing(self) -> bool:
        """Whether admission requests with large bodies are refused now: past the soft limit, or draining after
        the hard one (then all are)."""
        now = time.monotonic()
        if now - self._sampled_at >= SAMPLE_SECONDS:
            self._sample(now)
        return self._refusing

    def refuses(self, body_bytes: int | None) -> bool:
        """Whether an admission request with a body of this size (None: not known yet) is refused now. Bodies up
        to SMALL_BODY_BYTES (the API server's reviews of ordinary objects) are answered up to the hard limit."""
        if body_bytes is not None and body_bytes <= SMALL_BODY_BYTES and not self._refuse_until_exit:
            return False
        return self.refusing()

    async def watch(self, stop: asyncio.Event) -> None:
        if self._statm is None:
            log.warning("no /proc/self/statm here: the memory guard is off")
            return
        resident = self._sample(time.monotonic())
        log.info("memory guard: reviews over %d KiB refused past %s MiB resident, drain and exit past %s MiB%s "
                 "(now %.0f MiB)", SMALL_BODY_BYTES // 1024, self.soft // MIB if self.soft else "(never)",
                 self.hard // MIB if self.hard else "(never)",
                 f", and past --restart-above-mb {self.restart_above // MIB}" if self.restart_above else "",
                 resident / MIB)
        if self.soft is not None and resident >= self.soft:
            log.error("resident memory %.0f MiB at start is past the soft limit of %d MiB: large reviews are "
                      "refused; raise the container's memory limit or --memory-soft-limit-mb", resident / MIB,
                      self.soft // MIB)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=WATCH_SECONDS)
            self._check()

    def _check(self) -> None:
        now = time.monotonic()
        resident = self._sample(now)
        if self._exiting:
            return
        if self.hard is not None and resident >= self.hard:
            self._exit(f"resident memory {resident / MIB:.0f} MiB is past the hard limit of {self.hard // MIB} MiB "
                       "(--memory-hard-limit-mb): draining, then exiting to be started again", refuse=True)
        elif self.restart_above is not None and resident > self.restart_above:
            self._exit(f"resident memory {resident / MIB:.0f} MiB is past --restart-above-mb "
                       f"{self.restart_above // MIB}: draining, then exiting to be started again", refuse=False)
        elif self.soft is not None and resident >= self.soft:
            if self._past_soft_since is None:
                self._past_soft_since = now
                log.warning("resident memory %.0f MiB is past the soft limit of %d MiB (--memory-soft-limit-mb): "
                            "reviews over 64 KiB are answered 503 until it is back under", resident / MIB,
                            self.soft // MIB)
            elif now - self._past_soft_since >= SOFT_LIMIT_GRACE_SECONDS:
                self._exit(f"resident memory {resident / MIB:.0f} MiB stayed past the soft limit of "
                           f"{self.soft // MIB} MiB for {SOFT_LIMIT_GRACE_SECONDS:.0f} s: draining, then exiting "
                           "to be started again", refuse=True)
                return
            if now - self._reclaimed_at >= RECLAIM_SECONDS:
                self._reclaimed_at = now
                gc.collect()
                if self._trim is not None:
                    self._trim(0)
        elif self._past_soft_since is not None:
            self._past_soft_since = None
            log.warning("resident memory %.0f MiB is back under the soft limit: large reviews are answered "
                        "again (%d refused so far)", resident / MIB, self.refused)

    def _exit(self, message: str, *, refuse: bool) -> None:
        self._exiting = True
        self._refuse_until_exit = refuse
        self._refusing = self._refusing or refuse
        log.warning("%s", message)
        os.kill(os.getpid(), signal.SIGTERM)


def with_memory_limits(settings: Settings) -> Settings:
    """`settings` with the guard's limits filled in (memory_limits) for this container; ConfigError if they
    cannot be (a soft limit above the hard one, a container too small)."""
    container_mb = container_memory_limit_mb()
    limits = memory_limits(soft_mb=settings.memory_soft_limit_mb, hard_mb=settings.memory_hard_limit_mb,
                           workers=settings.workers, container_mb=container_mb,
                           deliverer_process=settings.event_delivery == "process" and settings.subscribers is not None)
    if container_mb is not None and limits.hard_mb * settings.workers > container_mb:
        log.warning("--memory-hard-limit-mb %d (x %d workers) is above the container's memory limit of %d MiB: the "
                    "container can be killed before the guard drains", limits.hard_mb, settings.workers, container_mb)
    return settings.model_copy(update={"memory_soft_limit_mb": limits.soft_mb, "memory_hard_limit_mb": limits.hard_mb})
