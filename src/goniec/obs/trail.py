"""The per-message trail: what happened to each queued message, one JSON line per event.

Owns `Trail`: `record(queue_id, event, **fields)` appends
`{"time": ISO UTC, "msg": id, "event": ..., **fields}` to
`<directory>/trail-YYYY-MM-DD.jsonl` (the UTC day of the event), `search()`
reads one message's story back, and files older than `days` are removed (looked
at once an hour at most). Events: received, attempt, delivered, deferred,
failed, report, held (the session and the delivery code), released, deleted,
retried (admin code).

Several worker processes write the same file: it is opened with O_APPEND and
every write() carries whole lines only, so lines never interleave and no file
is ever renamed. Writing is kept off the message's critical path: inside a
running event loop an event is only appended to a list (under 1 us), and
turned into JSON and written together with the others `flush_interval` (0.5 s)
later, by the loop itself; elsewhere (admin code, the CLI) it is written at
once. Field values must not be changed after the call (pass fresh ones). Nothing is lost on a clean shutdown: the buffer is flushed
before fork, at exit, and by `logging.shutdown()` (which the worker processes
call before `os._exit`) through a small handler object; a crash loses at most
the last half second. No fsync: the trail is a help for people, the queue is
the record. Recording never raises (an OSError is reported once through logging).

`current()` is what call sites use: the process's Trail, or a `NullTrail`
that does nothing when the trail is off (`[log] trail = false`) or not set up.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("goniec.trail")

PREFIX, SUFFIX = "trail-", ".jsonl"
PRUNE_EVERY = 3600.0
_BLOCK = 1 << 20
_MAX_WRITE = 1 << 16  # bytes per write(): whole lines, at most this many (unless one is longer)


_Item = tuple[float, str, str, dict[str, Any]]  # (time, queue id, event, fields)
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


class Trail:
    enabled = True

    def __init__(self, directory: Path, days: int, *, flush_interval: float = 0.5) -> None:
        self.directory = Path(directory)
        self.days = days
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._buffer: list[_Item] = []
        # The loop a flush is scheduled on; one that closed before its timer ran
        # (asyncio.run ended) no longer counts.
        self._armed: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._fd_day = ""
        self._pruned_at = 0.0
        self._stamp_second = -1
        self._stamp_text = ""
        self._warned = False
        self._flusher = _FlushAtShutdown(self)  # logging.shutdown() flushes it

    # -- writing -------------------------------------------------------------------
    def record(self, queue_id: str, event: str, /, **fields: Any) -> None:
        """Append one event about message `queue_id` (values: JSON, or str() of them)."""
        item = (time.time(), queue_id, event, fields)
        with self._lock:
            self._buffer.append(item)
            armed = self._armed
            if armed is not None and not armed.is_closed():
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._armed = loop
                loop.call_later(self.flush_interval, self.flush)
                return
        self.flush()

    def _line(self, item: _Item) -> tuple[str, bytes]:
        """(UTC day, the JSON line) of a buffered event."""
        now, queue_id, event, fields = item
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = f"{self._stamp_text}.{int((now - second) * 1000):03d}Z"
        entry: dict[str, Any] = {"time": stamp, "msg": queue_id, "event": event}
        for key, value in fields.items():
            entry[key + "_" if key in entry else key] = value  # never overwrite ours
        try:
            line = _ENCODE(entry)
        except (ValueError, TypeError, RecursionError):  # keep the event, lose the details
            line = _ENCODE({"time": stamp, "msg": queue_id, "event": event})
        return stamp[:10], (line + "\n").encode("utf-8", "surrogateescape")

    def flush(self) -> None:
        """Write what is buffered (and remove old files, at most once an hour)."""
        with self._lock:
            pending, self._buffer = self._buffer, []
            self._armed = None
            if pending:
                self._write([self._line(item) for item in pending])
        now = time.time()
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.prune(now)

    def _write(self, pending: list[tuple[str, bytes]]) -> None:
        try:
            start = 0
            while start < len(pending):
                day = pending[start][0]
                fd = self._open(day)
                chunk: list[bytes] = []
                size = 0
                end = start
                while end < len(pending) and pending[end][0] == day and (
                        not chunk or size + len(pending[end][1]) <= _MAX_WRITE):
                    chunk.append(pending[end][1])
                    size += len(pending[end][1])
                    end += 1
                data = b"".join(chunk)
                while data:  # a short write only happens when the disk is full
                    data = data[os.write(fd, data):]
                start = end
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("trail.write_failed directory=%s error=%r", self.directory, exc)

    def _open(self, day: str) -> int:
        if self._fd >= 0 and self._fd_day == day:
            return self._fd
        self._close_fd()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{PREFIX}{day}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._fd_day = day
        return self._fd

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._fd_day = -1, ""

    def close(self) -> None:
        """Flush and close the file (recording again reopens it)."""
        self.flush()
        with self._lock:
            self._close_fd()

    def prune(self, now: float | None = None) -> int:
        """Remove the files of days more than `days` before today (UTC); how many."""
        when = time.time() if now is None else now
        oldest = time.strftime("%Y-%m-%d", time.gmtime(when - self.days * 86400))
        removed = 0
        for path in self.files():
            if path.name[len(PREFIX):-len(SUFFIX)] < oldest:
                try:
                    path.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass  # another process was quicker
                except OSError as exc:
                    log.warning("trail.prune_failed file=%s error=%r", path, exc)
        return removed

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._buffer = []  # the parent wrote them before forking
        self._armed = None  # the timer belonged to the parent's loop
        self._fd, self._fd_day = -1, ""  # the parent's descriptor: leave it to the parent

    # -- reading -------------------------------------------------------------------
    def files(self) -> list[Path]:
        """The trail files, newest day first."""
        try:
            found = [p for p in self.directory.iterdir()
                     if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)]
        except OSError:  # not made yet, or unreadable: no trail to read
            return []
        return sorted(found, key=lambda p: p.name, reverse=True)

    def search(self, queue_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The newest `limit` events of message `queue_id`, oldest first.

        Reads the files newest first, in 1 MiB blocks, and parses only lines
        holding the id's exact `"msg":"<id>"`; stops at the `received` event
        (nothing older can be about this message)."""
        self.flush()
        needle = json.dumps({"msg": queue_id}, separators=(",", ":"),
                            ensure_ascii=False)[1:-1].encode("utf-8", "surrogateescape")
        found: list[dict[str, Any]] = []
        for path in self.files():
            events = list(_scan(path, needle))
            found = events + found
            if len(found) >= limit or any(e.get("event") == "received" for e in events):
                break
        return found[-limit:] if limit > 0 else []


def _scan(path: Path, needle: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, read in blocks
    except FileNotFoundError:
        return out
    with f:
        carry = b""
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            if needle in data:
                out.extend(_matching(data, needle))
        if carry and needle in carry:
            out.extend(_matching(carry, needle))
    return out


def _matching(data: bytes, needle: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pos = data.find(needle)
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        try:
            item = json.loads(data[start:end])
        except ValueError:
            item = None  # a torn line (the disk filled up): skip it
        if isinstance(item, dict):
            out.append(item)
        pos = data.find(needle, end)
    return out


class NullTrail:
    """The trail when it is off: every call does nothing."""

    enabled = False
    directory: Path | None = None

    def record(self, queue_id: str, event: str, /, **fields: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def search(self, queue_id: str, limit: int = 200) -> list[dict[str, Any]]:
        return []


class _FlushAtShutdown(logging.Handler):
    """Never attached to a logger: `logging.shutdown()` flushes every handler that
    exists, which is how a worker's last lines reach the file before `os._exit`."""

    def __init__(self, trail: Trail) -> None:
        super().__init__()
        self.trail = trail

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - never attached
        pass

    def flush(self) -> None:
        self.trail.flush()


# -- the per-process instance -----------------------------------------------------------
_OFF = NullTrail()
_current: Trail | None = None


def current() -> Trail | NullTrail:
    """The trail of this process; a no-op one when the trail is off or not set up."""
    return _current if _current is not None else _OFF


def set_current(trail: Trail | None) -> None:
    """Make `trail` the process's trail (None: off); the one it replaces is closed."""
    global _current
    old, _current = _current, trail
    if old is not None and old is not trail:
        old.close()


def _flush_current() -> None:
    if _current is not None:
        _current.flush()


def _child_after_fork() -> None:
    if _current is not None:
        _current._after_fork_in_child()


os.register_at_fork(before=_flush_current, after_in_child=_child_after_fork)
atexit.register(_flush_current)
