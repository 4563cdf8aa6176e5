"""The state directory (event spool and outbox) made unusable under a running `webhook serve`.

Admission must go on whatever happens to the state directory; events that cannot be kept must be counted in
webhook_events_dropped_total, and delivery must recover once the directory is usable again.

How the faults are made, and why so: the tests run as root in CI, so `chmod` cannot make a directory
read-only, and mounting a tiny or read-only file system needs privileges CI does not have. Instead:
- "disk full" for the spool's writes: RLIMIT_FSIZE of the serving process set to 0 with prlimit(2) (a write
  that would grow a file fails with EFBIG, as with ENOSPC: the same OSError path), then set back;
- "cannot create files": RLIMIT_NOFILE lowered under the spool's descriptor (EMFILE at the next rotation,
  which is also what a process out of descriptors, e.g. under a connection flood, meets);
- the spool directory replaced by a regular file, or deleted, under the running server.
A real ENOSPC/EROFS file system is not tested here (see docs/failure-modes.md).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import TEST_POLICIES, ServerProcess, client_context, pod, review, wait_for
from tests.receivers import Receiver
from webhook.cli import main

Start = Callable[..., ServerProcess]


class Harness:
    """A `webhook serve` process with one subscriber, and what the tests need to look at it."""

    def __init__(self, server: ServerProcess, receiver: Receiver, state: Path) -> None:
        self.server = server
        self.receiver = receiver
        self.state = state
        self.client = server.client()

    def send(self, count: int, tag: str, **kwargs: object) -> list[str]:
        """`count` reviews on the keep-alive connection, each answered 200 with its uid; their uids."""
        uids = []
        for index in range(count):
            body = review(pod(name=f"{tag}-{index}", **kwargs))  # type: ignore[arg-type]
            reply = self.client.post("/validate", json=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["response"]["uid"] == body["request"]["uid"]
            uids.append(body["request"]["uid"])
        return uids

    def delivered(self) -> set[str]:
        return {event.get_data()["uid"] for event in self.receiver.events("dev.webhook.admission.")}

    def dropped(self, reason: str = "error") -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(f'webhook_events_dropped_total{{reason="{reason}"}}'):
                return float(line.split()[-1])
        return 0.0

    def log_size(self) -> int:
        return self.server.log.stat().st_size


@pytest.fixture
def harness(server_processes: Start, tmp_path: Path) -> Iterator[Harness]:
    receiver = Receiver()
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text(yaml.safe_dump({"subscribers": [{
        "name": "audit", "sink": receiver.url, "filters": [{"prefix": {"type": "dev.webhook.admission."}}],
        "retry": {"maxAttempts": 50, "initialDelaySeconds": 0.1, "maxDelaySeconds": 0.5}}]}))
    server = server_processes("--policies", str(TEST_POLICIES), "--subscribers", str(subscribers), "--no-watch",
                              "--log-level", "warning")
    server.wait_ready()
    made = Harness(server, receiver, tmp_path / "state")
    uids = made.send(2, "baseline")
    wait_for(lambda: set(uids) <= made.delivered(), what="the baseline events")
    try:
        yield made
    finally:
        made.client.close()
        receiver.close()


def test_state_directory_faults_never_stop_admission_and_lose_nothing_uncounted(
        harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """One server through three faults in turn: the spool's writes failing ("disk full"), the spool directory
    replaced by a file, then the whole state directory removed."""
    # 1. Disk full: the spool's writes fail. Admission goes on, the events are dropped and counted.
    pid = harness.server.process.pid
    original = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, original[1]))  # no file of the process may grow
    try:
        full = harness.send(5, "disk-full")
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, original)
    assert harness.dropped("error") == 5.0
    after = harness.send(5, "recovered")
    wait_for(lambda: set(after) <= harness.delivered(), what="events after recovery")
    assert not set(full) & harness.delivered()  # dropped, as counted

    def status() -> str:  # the drops are also counted for `webhook events status`, once the spool works again
        assert main(["events", "--state-dir", str(harness.state), "status"]) == 0
        return capsys.readouterr().out

    wait_for(lambda: "5 (write errors)" in status(), what="drops in `webhook events status`")

    # 2. The spool directory replaced by a file: the open spool file still takes the events; once the directory
    # is back they are delivered, none lost, none counted as dropped.
    spool = harness.state / "spool"
    moved = harness.state / "spool.moved"
    os.rename(spool, moved)
    spool.write_text("not a directory")
    try:
        during = harness.send(5, "no-spool-dir")
        wait_for(lambda: "event spool maintenance failed" in harness.server.output(), what="the failure logged")
    finally:
        spool.unlink()
        os.rename(moved, spool)
    back = harness.send(3, "spool-back")
    wait_for(lambda: set(during + back) <= harness.delivered(), what="every event after the directory is back")
    assert harness.dropped("error") == 5.0

    # 3. The whole state directory (outbox and spool) removed: reviews are still answered, on the open
    # connection and on new ones (the event side never stands between a review and its answer).
    shutil.rmtree(harness.state)
    assert len(harness.send(5, "state-gone")) == 5
    with httpx.Client(base_url=harness.server.url, verify=client_context(harness.server.ca_file()),
                      timeout=10) as fresh:
        for index in range(5):
            body = review(pod(name=f"state-gone-new-{index}"))
            reply = fresh.post("/validate", json=body)
            assert reply.status_code == 200
            assert reply.json()["response"]["uid"] == body["request"]["uid"]
    assert harness.server.process.poll() is None
    print(f"disk full: 5 answered, 5 dropped and counted, {len(after)} delivered after recovery; spool dir "
          f"replaced by a file: {len(during)} answered, all delivered after; state dir removed: 10 answered")


def test_spool_failures_are_logged_at_a_bounded_rate(harness: Harness) -> None:
    """Was a bug (fixed): while the spool cannot be rotated, `_maintain_events` (webhook/server.py:298-306)
    logs "event spool maintenance failed" with a full traceback every 50 ms: about 12 KB of log a second, a
    gigabyte a day, for as long as the state directory is broken. Dropped events are logged at most every 10 s
    (EventRecorder._dropped); this path should be too.
    Proposed fix: in `_maintain_events`, log the first failure with its traceback, then at most one line every
    10 s while the failure repeats (and a line when it clears), and count the failures in a metric.
    """
    spool = harness.state / "spool"
    moved = harness.state / "spool.moved"
    harness.send(1, "before")
    before = harness.log_size()
    os.rename(spool, moved)
    spool.write_text("not a directory")
    try:
        harness.send(3, "no-spool-dir")
        wait_for(lambda: "event spool maintenance failed" in harness.server.output(), what="the failure logged")
        with contextlib.suppress(AssertionError):  # then two seconds more of the same failure
            wait_for(lambda: False, timeout=2, what="two seconds")
        grown = harness.log_size() - before
    finally:
        spool.unlink()
        os.rename(moved, spool)
    print(f"log grew {grown} bytes in about 2 s of spool failure")
    assert grown < 8 * 1024, f"the log grew {grown} bytes in about 2 s of spool failure"


def test_spool_directory_deleted_is_recreated_and_events_are_counted(harness: Harness) -> None:
    """Was a bug (fixed): deleting the spool directory under a running server (a cleanup job, a
    tmp cleaner, an operator) loses every later event without counting one: `SpoolWriter` keeps appending to
    its descriptor of the deleted file (the writes succeed, so nothing is counted as dropped), and every
    rotation fails (webhook/events/spool.py:75, os.rename on a missing directory) for as long as the process
    lives; the directory is created only once, in `SpoolWriter.__init__` (spool.py:38).
    Proposed fix: when a rotation fails, count what was written since the last good rotation as dropped
    (reason "error"), recreate the directory (mkdir parents=True, exist_ok=True) and open a new file; see
    also test_a_failed_rotation_never_writes_into_another_descriptor for the descriptor left behind.
    """
    shutil.rmtree(harness.state / "spool")
    during = harness.send(3, "spool-deleted")
    wait_for(lambda: "event spool maintenance failed" in harness.server.output()
             or (harness.state / "spool").is_dir(), what="a maintenance round")
    after = harness.send(3, "after-delete")
    with contextlib.suppress(AssertionError):  # a few maintenance rounds should bring the directory back
        wait_for(lambda: set(after) <= harness.delivered(), timeout=3, what="events after the directory is back")
    delivered = harness.delivered()
    lost_uncounted = len([uid for uid in during if uid not in delivered]) - harness.dropped("error")
    print(f"spool dir deleted: recreated {(harness.state / 'spool').is_dir()}, "
          f"{len(set(after) & delivered)}/{len(after)} later events delivered, {lost_uncounted:.0f} lost uncounted")
    assert (harness.state / "spool").is_dir(), "the spool directory was not recreated"
    assert set(after) <= delivered, "events sent after the directory was deleted are not delivered"
    assert lost_uncounted <= 0, f"{lost_uncounted:.0f} events lost without being counted as dropped"


def _descriptors(pid: int) -> dict[int, str]:
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return found


def test_a_failed_rotation_never_writes_into_another_descriptor(harness: Harness) -> None:
    """Was a security bug (fixed): when `SpoolWriter.rotate` (webhook/events/spool.py:69-80) cannot
    open the next spool file (EMFILE when the process is out of descriptors, e.g. under a connection flood;
    ENOSPC/EDQUOT/EROFS), it has already closed the old descriptor but keeps its number in `self._descriptor`.
    The kernel hands that number to the next thing the process opens, typically a newly accepted connection,
    and `append` then writes the spooled decision facts of *other* requests (user names, groups, namespaces,
    names, denial messages, audit annotations) in clear text into that client's TCP stream, breaking its TLS
    session; those events are also lost without being counted.
    Reproduced here with RLIMIT_NOFILE lowered under the spool's descriptor for one rotation, then a raw TCP
    connection that sends nothing: a TLS server never speaks first, yet it receives spool frames.
    Proposed fix: in `rotate`, open the new file first and only then rename and close the old one (or on any
    failure set `self._descriptor = -1` and make `append` raise OSError, so that events are counted as dropped,
    and retry opening at the next maintenance round).
    """
    pid = harness.server.process.pid
    spool_fds = [fd for fd, target in _descriptors(pid).items() if target.endswith(".spool")]
    assert len(spool_fds) == 1, _descriptors(pid)
    spool_fd = spool_fds[0]
    used = set(_descriptors(pid))
    lowest_free = min(number for number in range(len(used) + 2) if number not in used)
    original = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(spool_fd, lowest_free), original[1]))
    try:
        harness.send(1, "rotation-fails")  # on the open keep-alive connection: no new descriptor needed
        with contextlib.suppress(AssertionError):  # a rotation is attempted within 50 ms; it may log nothing
            wait_for(lambda: "Too many open files" in harness.server.output(), timeout=3, what="the failed rotation")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, original)
    host, port = harness.server.url.removeprefix("https://").split(":")
    victims = [socket.create_connection((host, int(port)), timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: len(_descriptors(pid)) >= len(used) + 2, what="the victims accepted")
        secret = "tenant-b-user"
        during = harness.send(3, "after-failure", namespace="tenant-b")
        harness.client.post("/validate", json=review(pod(name="probe"), user=secret))
        received = b""
        for victim in victims:
            victim.settimeout(0.5)
            with contextlib.suppress(TimeoutError, OSError):
                received += victim.recv(65536)
    finally:
        for victim in victims:
            victim.close()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: set(during) <= harness.delivered(), timeout=3, what="the events after the failure")
    lost_uncounted = len(set(during) - harness.delivered()) - harness.dropped("error")
    print(f"descriptor {spool_fd} after the failure: a connection that never spoke received {len(received)} "
          f"bytes (user name in them: {secret.encode() in received}); {lost_uncounted:.0f} events lost uncounted")
    assert received == b"", f"spool bytes written into another client's connection: {received[:200]!r}"
    assert lost_uncounted <= 0
