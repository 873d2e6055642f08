"""Delivery leases of the filesystem spool: one flock per message being delivered.

Owns lease/<id> under the spool root. Taking a lease opens (creating if
needed) lease/<id> and takes an exclusive, non-blocking flock on it. The lock
belongs to the open file description, so it excludes other tasks of the same
process as well as other processes, and it dies with the process: a crashed
runner leaves no lease to expire, only an unlocked file that the next taker
reuses and `recover` deletes.

Release unlinks the file while still holding the lock, then closes it. A
taker that opened the old file just before it was unlinked may then win its
lock; it sees that the inode it locked is no longer the one at lease/<id>
and tries again, so two holders of one id can never coexist (the usual
lock-file-with-unlink race). Nothing here is synced: a lease is not durable
state. Raises `OSError` only for unexpected system errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


class FsLease:
    __slots__ = ("_fd", "_id", "_path")

    def __init__(self, queue_id: str, path: str, fd: int) -> None:
        self._id = queue_id
        self._path = path
        self._fd: int | None = fd

    @property
    def queue_id(self) -> str:
        return self._id

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)  # still locked: nobody else holds this inode
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a lease dropped without release() must not pin the message
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.release()


def take(lease_dir: str, queue_id: str, msg_path: str) -> FsLease | None:
    """The lease of `queue_id`, or None when held elsewhere or the message is gone."""
    path = os.path.join(lease_dir, queue_id)
    for _ in range(8):  # each retry means a holder released between our open and lock
        fd = os.open(path, _OPEN_FLAGS, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if not same:  # we locked a file its holder had unlinked: take the new one
            os.close(fd)
            continue
        lease = FsLease(queue_id, path, fd)
        if not os.path.exists(msg_path):  # delivered and removed by the previous holder
            lease.release()
            return None
        return lease
    return None


def clean(lease_dir: str) -> int:
    """Delete lease files nobody holds (crash leftovers); the number deleted."""
    removed = 0
    for name in os.listdir(lease_dir):
        path = os.path.join(lease_dir, name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live runner holds it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed += 1
        finally:
            os.close(fd)
    return removed
