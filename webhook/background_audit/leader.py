"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection package does it, so that
of several replicas (or worker processes) exactly one audits.

A candidate reads the Lease every `retry_period` (default 2 s). It takes the Lease when there is none, when it
is released (no holder), or when its record has not changed for `leaseDurationSeconds` (default 15 s) as this
candidate observed it: times are measured on the local monotonic clock from when the record was last seen to
change, never by comparing the holder's clock with ours. Writes carry the resourceVersion read, so of two
candidates at most one wins (409 for the other). The leader renews every `retry_period`; when it could not
renew for `renew_deadline` (default 10 s, under the lease duration) it stops leading before anyone else may
take over. On shutdown the leader releases the Lease (no holder, 1 s), so that another takes over at once.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from webhook.background_audit.api import ApiError, KubeApi, Stopped

log = logging.getLogger("webhook.background_audit")


def micro_time(moment: float) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: KubeApi, *, namespace: str, name: str, identity: str, lease_seconds: int = 15,
                 renew_deadline: float = 10.0, retry_period: float = 2.0,
                 on_change: Callable[[bool], None] | None = None) -> None:
        if not retry_period < renew_deadline < lease_seconds:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_seconds")
        self.api, self.identity = api, identity
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.collection = self.path.rpartition("/")[0]
        self.name, self.namespace = name, namespace
        self.lease_seconds, self.renew_deadline, self.retry_period = lease_seconds, renew_deadline, retry_period
        self.on_change = on_change
        self._observed: tuple[Any, ...] | None = None  # the holder's record as last seen
        self._observed_at = 0.0  # monotonic time it was first seen so
        self._renewed_at: float | None = None  # monotonic time of the last successful acquire or renew
        self.transitions = 0  # leadership changes of this candidate (gained or lost)

    @property
    def leading(self) -> bool:
        renewed = self._renewed_at
        return renewed is not None and time.monotonic() - renewed < self.renew_deadline

    def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this candidate holds the Lease afterwards."""
        now, moment = time.monotonic(), time.time()
        lease = self.api.get(self.path)
        spec: dict[str, Any] = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                                "acquireTime": micro_time(moment), "renewTime": micro_time(moment),
                                "leaseTransitions": 0}
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            return self._write("POST", self.collection, body, now)
        current = dict(lease.get("spec") or {})
        holder = str(current.get("holderIdentity") or "")
        record = (holder, current.get("renewTime"), current.get("leaseDurationSeconds"), current.get("acquireTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(current.get("leaseDurationSeconds") or self.lease_seconds)
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False  # held by another, and not expired as far as we have seen
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime") or spec["acquireTime"]
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
        else:
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": {**current, **spec}}
        return self._write("PUT", self.path, body, now)

    def _write(self, method: str, path: str, body: dict[str, Any], now: float) -> bool:
        try:
            written = self.api.request(method, path, body=body, retry=False)
        except ApiError as error:
            if error.status == 409:  # another candidate wrote first
                return False
            raise
        spec = written.get("spec") or {}
        self._observed = (self.identity, spec.get("renewTime"), spec.get("leaseDurationSeconds"),
                          spec.get("acquireTime"))
        self._observed_at = now
        return True

    def step(self) -> bool:
        """One round of the loop: try, and update who leads; returns `leading`."""
        was = self.leading
        try:
            if self.try_acquire_or_renew():
                self._renewed_at = time.monotonic()
        except Exception as error:  # any failure is a failed round: renewal stops counting, leadership expires
            log.warning("audit leader election: %s: %s", type(error).__name__, error)
        leading = self.leading
        if leading != was:
            self.transitions += 1
            log.info("audit leader election: %s %s the Lease %s/%s", self.identity,
                     "holds" if leading else "lost", self.namespace, self.name)
            if self.on_change is not None:
                self.on_change(leading)
        return leading

    def run(self, stop: threading.Event) -> None:
        """Elect until `stop`; then release the Lease if held."""
        while not stop.is_set():
            leading = self.step()
            # as client-go: the leader renews every retry period, the others retry with up to 20% jitter
            stop.wait(self.retry_period if leading else self.retry_period * (1 + 0.2 * random.random()))  # noqa: S311
        self.release()

    def release(self) -> None:
        """Give the Lease up (no holder, 1 s left) when this candidate holds it."""
        if not self.leading:
            return
        self._renewed_at = None
        try:
            lease = self.api.get(self.path)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                        "renewTime": micro_time(time.time())}
                self.api.request("PUT", self.path, body={**lease, "spec": spec}, retry=False)
        except (ApiError, Stopped) as error:
            log.warning("audit leader election: could not release the Lease: %s", error)
        self.transitions += 1
        if self.on_change is not None:
            self.on_change(False)
