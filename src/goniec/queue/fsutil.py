"""Blocking filesystem helpers for the spool; every call here runs in a worker thread.

Owns: complete vectored writes, exclusive locked file creation, the lock probe
recovery uses to tell a live writer's file from a crash leftover, and
`DirSyncer`, which lets concurrent commits share one directory fsync. Must not
be called from the event loop (fsync can take milliseconds). Raises `OSError`
as the system reports it; the callers turn it into replies.

Also `JobThreads`, the threads those calls run in: the one thing here the
event loop calls (`submit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

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


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class JobThreads:
    """Threads that run the store's blocking jobs for the event loop.

    `submit(fn, *args)`, called in a running loop, returns an asyncio future of
    `fn(*args)` run in one of these threads. It does the work of
    `loop.run_in_executor` with a `ThreadPoolExecutor`, leaner: one queue put
    hands a job over and one `call_soon_threadsafe` hands the result back, with
    no `concurrent.futures.Future` (a Python condition variable), no idle
    semaphore in Python and no chained futures in between. Every accepted
    message is one job, so that cost counts: about 10-40 us of CPU per job
    here, against 40-100 us. A thread is started when none is idle, up to
    `max_threads`; they live until `shutdown`.

    The returned future refuses `cancel()`: a task cancelled while it awaits
    one gets its CancelledError once the job is done, so the caller never
    runs on while its job still changes files (what `asyncio.shield` and a
    wait for the job did before, for one more loop iteration per job).
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self._max = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0  # threads done with a job and not claimed by a submit since
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` in a thread; RuntimeError after `shutdown`."""
        if self._closed:
            raise RuntimeError("cannot run new jobs after shutdown")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = _JobFuture(loop=loop)
        self._jobs.put((loop, future, fn, args))
        with self._lock:
            if self._idle:
                self._idle -= 1
                return future
            if len(self._threads) >= self._max:
                return future  # queued for the first thread that is free
            thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}",
                                      daemon=True)
            self._threads.append(thread)
        thread.start()
        return future

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            job = jobs.get()
            if job is None:
                return
            loop, future, fn, args = job
            del job
            try:
                result, error = fn(*args), None
            except BaseException as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # a closed loop: no one is waiting
                loop.call_soon_threadsafe(_settle, future, result, error)
            del loop, future, fn, args, result, error
            with lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Run the jobs already submitted, then stop every thread and wait for them."""
        self._closed = True
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()


class _JobFuture(asyncio.Future):  # type: ignore[type-arg]
    """A job's outcome: it cannot be cancelled, the job runs to its end anyway."""

    def cancel(self, msg: Any | None = None) -> bool:
        return False


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
