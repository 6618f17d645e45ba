"""The durable event log, owned by ``EventLog``: the only code that names or reads its files.

    LOG_DIR/<replica>/events-<first ms>-<seq>.jsonl   one JSON object per line (contract.Event's
                                                    fields, plus "kind" for catalog changes)

Each gateway replica appends to its own folder, so replicas never share a file. An appended batch
is written with one ``write`` and made durable with one ``fsync`` before ``append`` returns: the
caller acknowledges only durable events. Concurrent batches are committed together (group
commit): while one thread syncs, the others queue, and the next sync takes all of them.

A segment is closed and a new one started when it passes ``max_bytes`` or ``max_seconds``, and at
every open, so a closed segment never changes again. A process killed during a write leaves at
most an unterminated last line, never acknowledged; ``EventLog`` drops it when it opens the
folder, and ``read_lines`` never yields it.

Readers (the gateway rebuilding its state at start, the Beam events source) read whole segments
in order. At scale the same records would travel through Kafka or Pub/Sub (BUILD.md); this log
is the single-node form of that stream, not a broker.
"""
from __future__ import annotations

import glob
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SEGMENT = re.compile(r"events-(\d+)-(\d+)\.jsonl$")
SEGMENT_GLOB = "events-*.jsonl"


@dataclass(frozen=True)
class Segment:
    path: Path
    first_ms: int
    seq: int


def segments(folder) -> list:
    """A replica folder's segments, oldest first."""
    out = []
    for path in Path(folder).glob(SEGMENT_GLOB):
        match = _SEGMENT.search(path.name)
        if match:
            out.append(Segment(path, int(match.group(1)), int(match.group(2))))
    return sorted(out, key=lambda s: (s.seq, s.first_ms))


def all_segments(log_dir) -> list:
    """Every replica's segments under ``log_dir`` (replica folders in name order)."""
    return [s for replica in sorted(p for p in Path(log_dir).iterdir() if p.is_dir()) for s in segments(replica)] \
        if Path(log_dir).is_dir() else []


def segment_pattern(log_dir: str) -> str:
    """A file pattern matching every segment of every replica (for Beam's readers)."""
    return f"{str(log_dir).rstrip('/')}/*/{SEGMENT_GLOB}"


def read_lines(path) -> list:
    """The complete lines of one segment (an unterminated last line is an unacknowledged write)."""
    data = Path(path).read_bytes()
    end = data.rfind(b"\n") + 1
    return [line for line in data[:end].split(b"\n") if line]


def read_records(log_dir) -> list:
    """Every record of every segment under ``log_dir``, decoded, in segment and line order."""
    return [json.loads(line) for s in all_segments(log_dir) for line in read_lines(s.path)]


class EventLog:
    """Appends JSON records to one replica's folder, durably, in rotating segments."""

    def __init__(self, folder, max_bytes: int = 64 << 20, max_seconds: float = 3600.0, fsync: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_seconds, self.fsync = max_bytes, max_seconds, fsync
        self._lock = threading.Lock()  # the pending queue
        self._commit = threading.Lock()  # one writer and sync at a time
        self._pending: list = []
        self._queued = 0  # batches ever queued
        self._durable = 0  # batches ever made durable
        self._failed: dict = {}  # batch number → the error its commit raised
        self._repair()
        self._fd, self._segment, self._opened, self._bytes = None, None, 0.0, 0
        self._rotate()
        self.appended = 0  # records made durable since open
        self._later: list = []  # records for the background writer (append_later)
        self._wake = threading.Event()
        self._closing = False
        self._writer = threading.Thread(target=self._write_later, name="tworec-event-log", daemon=True)
        self._writer.start()

    def _repair(self) -> None:
        """Drops the unterminated tail a killed writer left in the last segment."""
        existing = segments(self.folder)
        if not existing:
            return
        path = existing[-1].path
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        existing = segments(self.folder)
        seq = existing[-1].seq + 1 if existing else 0
        self._segment = self.folder / f"events-{int(time.time() * 1000):013d}-{seq:08d}.jsonl"
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._opened, self._bytes = time.monotonic(), 0
        if self.fsync:  # the new file's directory entry is durable too
            directory = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def append(self, records) -> None:
        """Makes ``records`` (JSON-ready dicts) durable; returns once they are on disk."""
        data = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records).encode()
        if not data:
            return
        with self._lock:
            self._pending.append((data, len(records)))
            self._queued += 1
            mine = self._queued
        with self._commit:
            if self._durable < mine:  # nobody has committed this batch yet: commit all queued
                with self._lock:
                    batch, self._pending = self._pending, []
                    last = self._queued
                try:
                    self._write(b"".join(d for d, _ in batch))
                    self.appended += sum(n for _, n in batch)
                except OSError as err:
                    for number in range(self._durable + 1, last + 1):
                        self._failed[number] = err
                    self._rotate_after_failure()
                self._durable = last
            error = self._failed.pop(mine, None)
        if error is not None:
            raise error

    def append_later(self, records) -> None:
        """Queues ``records`` for a background thread that appends them within ``LATER_S``: for
        records whose caller need not wait for the disk (serving decisions). A crash can lose the
        last of them; ``close`` writes what is queued."""
        with self._lock:
            self._later.extend(records)
            full = len(self._later) >= self.LATER_BATCH
        if full:  # else the writer's own timer: waking it per record costs the caller a thread switch
            self._wake.set()

    LATER_S = 0.05
    LATER_BATCH = 1024  # queued records that wake the writer before LATER_S

    def _write_later(self) -> None:
        while True:
            self._wake.wait(self.LATER_S)
            self._wake.clear()
            # Read before taking the queue: once it reads True, everything queued before close is taken.
            closing = self._closing
            with self._lock:
                batch, self._later = self._later, []
            if batch:
                try:
                    self.append(batch)
                except OSError:
                    pass  # decisions are diagnostics: the events themselves are written synchronously
            if closing:
                return

    def _write(self, data: bytes) -> None:
        if self._bytes and (self._bytes + len(data) > self.max_bytes
                            or time.monotonic() - self._opened > self.max_seconds):
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._fd)
        self._bytes += len(data)

    @property
    def current(self) -> Path:
        """The segment being appended to."""
        return self._segment

    def _rotate_after_failure(self) -> None:
        """A failed write may have left part of its batch: later batches go to a new segment, so
        the torn bytes stay the (dropped) tail of the old one."""
        try:
            self._rotate()
        except OSError:
            pass  # the next append fails too, and says why

    def close(self) -> None:
        if self._writer.is_alive():
            self._closing = True
            self._wake.set()
            self._writer.join(10)
        with self._commit:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
