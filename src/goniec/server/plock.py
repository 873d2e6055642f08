"""A lock shared by the worker processes of one server that a dead holder releases.

Owns `ProcessLock`. A `multiprocessing.Lock` is a semaphore: a worker killed
(SIGKILL, OOM) inside a critical section would leave it taken forever and every
other worker would block on it. A POSIX record lock (`fcntl.lockf`) on an
anonymous file is released by the kernel when its holder dies, and it is
per process, so a descriptor inherited across fork still excludes the other
processes. It does not exclude threads of one process: callers use it from the
event loop thread (and the supervisor) only.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from types import TracebackType


class ProcessLock:
    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="goniec-lock-")
        os.unlink(path)  # nothing on disk to clean up; the descriptor is the lock
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
