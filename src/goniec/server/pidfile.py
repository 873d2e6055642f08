"""The pid file in data_dir: how `goniec reload` finds the running server.

Owns `PidFile` (written by the server's parent process at start, holding an
exclusive `flock` for the server's whole life, removed at a clean stop) and
`running_pid` (the CLI side). The lock is what counts, not the file's
existence: a file left by a killed server is unlocked, hence stale, and a
second server on the same data_dir is refused instead of sharing the spool.
Worker processes inherit the locked descriptor, so the lock lasts until the
last process of a server is gone: a restart after a SIGKILL waits (bounded)
for the old workers to exit before it recovers the spool.
Raises `ServerRunning` when another live server holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

PID_NAME = "goniec.pid"
ORPHAN_WAIT = 10.0  # seconds to wait for the workers of a dead server to exit


class ServerRunning(Exception):
    """Another goniec process holds the pid file of this data_dir."""


def pid_path(data_dir: Path) -> Path:
    return data_dir / PID_NAME


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the file and write our pid into it; ServerRunning if it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + ORPHAN_WAIT
        tries = 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                tries += 1
            other = _read(fd)
            # `running_pid` holds a shared lock for an instant: retry a little. When
            # the recorded parent is gone, its workers (which share the lock) are
            # still exiting, e.g. after a SIGKILL of the group: wait for them.
            if (tries > 20 and _alive(other)) or time.monotonic() > deadline:
                os.close(fd)
                what = "is running" if _alive(other) else "left workers that still run"
                raise ServerRunning(f"{self.path}: another goniec server (pid {other or '?'})"
                                    f" {what} with this data_dir") from None
            time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if _read(fd) == os.getpid():
                self.path.unlink()
        os.close(fd)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(data_dir: Path) -> int | None:
    """The pid of the server running with `data_dir`, or None (no file, or stale)."""
    path = pid_path(data_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)  # locked: a live server holds it
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: left over by a server that was killed
    finally:
        os.close(fd)
