"""The request path's write-ahead spool: what a decision's event needs, appended to a file of this process.

A commit to SQLite costs about 90 µs on the machines here (more with checkpoints), too much for the
admission answer; one `write` to a file opened for appending costs about 6 µs and survives a killed
process just as well (the data is in the kernel's page cache). The deliverer builds the CloudEvents from
the spooled records, keeps those some subscriber wants, and moves them into the SQLite outbox in batches.
Each file is held with an exclusive `flock` while its process appends to it, so a reader can tell a live
spool from the leftover of a killed process: the latter it may ingest at once.

Frame: 4-byte length, 4-byte CRC-32 (little-endian), then the record (kind byte + fields joined by NUL).
A torn or corrupt tail (power loss mid-write) ends the file; what precedes it is kept.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

_HEADER = struct.Struct("<II")
ADMISSION, EVENT, COUNTER = b"A", b"E", b"C"  # decision facts, a built event, a counter increment
LIVE_SUFFIX, READY_SUFFIX = ".spool", ".ready"


def _frame(record: bytes) -> bytes:
    return _HEADER.pack(len(record), zlib.crc32(record)) + record


class SpoolWriter:
    """Appends rows for one process; `rotate` hands what was written so far to the deliverer."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._base = f"{os.getpid()}-{time.time_ns()}"
        self._lock = threading.Lock()
        self._rotations = 0
        self._written = 0
        self._records = 0
        self.lost = 0  # records written to a live file that vanished before it was handed over
        self._descriptor = self._open()

    def _path(self) -> Path:
        return self.directory / f"{self._base}{LIVE_SUFFIX}"

    def _open(self) -> int:
        # Created under a name no reader looks at, locked, then renamed: a reader never sees it unlocked.
        creating = self.directory / f".{self._base}.creating"
        descriptor = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(creating, self._path())
        return descriptor

    def _write(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._descriptor, view)
                view = view[written:]
            self._written += len(data)
            self._records += 1

    def append(self, kind: bytes, *fields: bytes) -> None:
        """One record (fields must not contain NUL bytes; JSON from orjson never does), in one write."""
        self._write(_frame(kind + b"\0".join(fields)))

    def rotate(self) -> bool:
        """Rename the live file to a ready one (unlocked, so the deliverer takes it) and start a new file.

        The new file is opened before the old descriptor is closed: were it the other way round, a failed
        open (no descriptors left, disk full) would leave a closed number behind that the next accepted
        connection reuses, and spooled records would go out on it. When the live file is gone (the spool
        directory was removed), its records are lost: they are counted, and the directory is made again.
        Raises OSError when no new file can be opened; the old one then stays in use.
        """
        with self._lock:
            if self._written == 0 and self._path().exists():
                return False
            self.directory.mkdir(parents=True, exist_ok=True)
            self._rotations += 1
            lost = 0
            try:
                os.rename(self._path(), self.directory / f"{self._base}.{self._rotations}{READY_SUFFIX}")
            except FileNotFoundError:
                lost = self._records
            descriptor = self._open()
            os.close(self._descriptor)  # releases the lock on the renamed file
            self._descriptor = descriptor
            self._written = self._records = 0
            self.lost += lost
            return True

    def close(self) -> None:
        """Rotate what is left and stop (the deliverer ingests it)."""
        self.rotate()
        with self._lock:
            os.close(self._descriptor)
            os.unlink(self._path())


def read_records(path: Path) -> Iterator[tuple[bytes, list[bytes]]]:
    """(kind, fields) of every intact frame, in order; stops at a torn or corrupt frame."""
    data = path.read_bytes()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, checksum = _HEADER.unpack_from(data, offset)
        record = data[offset + _HEADER.size: offset + _HEADER.size + length]
        if len(record) != length or zlib.crc32(record) != checksum or not record:
            return
        offset += _HEADER.size + length
        yield record[:1], record[1:].split(b"\0", 2)


def claim_unowned(directory: Path) -> list[tuple[Path, int]]:
    """Spool files no live process writes (ready files, and live files of killed processes), each locked
    for the caller: (path, descriptor); close the descriptor after ingesting and unlinking."""
    found = []
    for path in sorted(directory.glob(f"*{READY_SUFFIX}")) + sorted(directory.glob(f"*{LIVE_SUFFIX}")):
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)  # a live writer, or another ingester
            continue
        if not path.exists():  # ingested and removed by someone else meanwhile
            os.close(descriptor)
            continue
        found.append((path, descriptor))
    return found


def pending_bytes(directory: Path) -> int:
    """Bytes in spool files not yet ingested (a cap for when no deliverer runs)."""
    total = 0
    for path in directory.glob("*[dl]"):  # *.ready and *.spool
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total
