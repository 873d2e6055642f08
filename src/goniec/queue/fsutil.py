"""Blocking filesystem helpers for the spool; every call here runs in a worker thread.

Owns: complete vectored writes, exclusive locked file creation, the lock probe
recovery uses to tell a live writer's file from a crash leftover, and
`DirSyncer`, which lets concurrent commits share one directory fsync. Must not
be called from the event loop (fsync can take milliseconds). Raises `OSError`
as the system reports it; the callers turn it into replies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
    _IOV_MAX = 1024

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_PROBE_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
# fdatasync writes the data and the metadata needed to read it back (the size),
# which is all a new file needs; it skips the mtime update fsync would force.
_HAS_FDATASYNC = hasattr(os, "fdatasync")


@dataclass
class SyncStats:
    """Counters of the expensive operations, for benchmarks and tests."""

    commits: int = 0
    file_syncs: int = 0
    dir_syncs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, commits: int = 0, file_syncs: int = 0, dir_syncs: int = 0) -> None:
        with self._lock:
            self.commits += commits
            self.file_syncs += file_syncs
            self.dir_syncs += dir_syncs

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.commits, self.file_syncs, self.dir_syncs


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    """Write every chunk, in order, with as few system calls as the kernel allows."""
    pending: list[bytes | memoryview] = [c for c in chunks if len(c)]
    while pending:
        batch = pending[:_IOV_MAX]
        n = os.writev(fd, batch)
        done = 0
        while done < len(batch) and n >= len(batch[done]):
            n -= len(batch[done])
            done += 1
        del pending[:done]
        if n:  # a short write stopped inside a chunk
            pending[0] = memoryview(pending[0])[n:]


def datasync(fd: int, stats: SyncStats) -> None:
    if _HAS_FDATASYNC:
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)
    stats.add(file_syncs=1)


def create_locked(path: str) -> int:
    """Create `path` (it must not exist) and hold an exclusive flock on it.

    The lock lives as long as the descriptor, so it dies with the process:
    recovery in another process sees a locked file as in use, never as a leftover.
    """
    fd = os.open(path, _CREATE_FLAGS, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        # Someone (recovery) holds it already and will remove it: fail this write.
        os.close(fd)
        raise
    return fd


def try_lock(path: str) -> int | None:
    """Open and lock an existing file; None when a live process holds its lock.

    Raises FileNotFoundError when the file is gone.
    """
    fd = os.open(path, _PROBE_FLAGS)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def close_quiet(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))


def sync_dir(path: str, stats: SyncStats | None = None) -> None:
    fd = open_dir(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if stats is not None:
        stats.add(dir_syncs=1)


class DirSyncer:
    """fsync one directory on behalf of many threads (group commit).

    A caller asks after its rename is done. One fsync started after a request
    covers it, so while one fsync runs, every request that arrives waits for
    the next one, which a single waiter performs for all of them. If an fsync
    fails, its own caller gets the error and the others try again themselves.
    """

    def __init__(self, fd: int, stats: SyncStats) -> None:
        self._fd = fd
        self._stats = stats
        self._cond = threading.Condition()
        self._requested = 0  # tickets handed out
        self._covered = 0    # every ticket <= this is durable
        self._busy = False

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._covered < ticket:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                target = self._requested  # renames of all these tickets are done
                ok = False
                self._cond.release()
                try:
                    os.fsync(self._fd)
                    ok = True
                finally:
                    self._cond.acquire()
                    self._busy = False
                    if ok:
                        self._covered = max(self._covered, target)
                        self._stats.add(dir_syncs=1)
                    self._cond.notify_all()
