"""Delivery leases of the filesystem spool: an flock on the message file itself.

Owns taking and releasing the lease of queue/<id>.msg: open it read-only and
take an exclusive, non-blocking flock. The lock belongs to the open file
description, so it excludes other tasks of the same process as well as other
processes, and it dies with the process: a crashed runner leaves nothing to
expire or clean up. A taker that locks a message its previous holder had
just removed sees the file's link count at 0 and gets no lease. Nothing is
created or synced (creating a file per attempt cost ~0.25 ms on ext4); a
lease is not durable state. Older spools kept lease/<id> files: `clean`
deletes any that are left. Raises `OSError` only for unexpected system errors.
"""

from __future__ import annotations

import contextlib
import os

from . import fsutil


class FsLease:
    __slots__ = ("_fd", "_id")

    def __init__(self, queue_id: str, fd: int) -> None:
        self._id = queue_id
        self._fd: int | None = fd

    @property
    def queue_id(self) -> str:
        return self._id

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the flock ends with the last descriptor of this open file

    def __del__(self) -> None:  # a lease dropped without release() must not pin the message
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.release()


def take(queue_id: str, msg_path: str) -> FsLease | None:
    """The lease of `queue_id`, or None when held elsewhere or the message is gone."""
    try:
        fd = fsutil.try_lock(msg_path)
    except FileNotFoundError:
        return None
    if fd is None:
        return None
    try:
        gone = os.fstat(fd).st_nlink == 0  # delivered and removed by the previous holder
    except BaseException:
        os.close(fd)
        raise
    if gone:
        os.close(fd)
        return None
    return FsLease(queue_id, fd)


def clean(lease_dir: str) -> int:
    """Delete lease/<id> files of older versions that nobody holds; the number deleted."""
    removed = 0
    for name in os.listdir(lease_dir):
        path = os.path.join(lease_dir, name)
        try:
            fd = fsutil.try_lock(path)
        except FileNotFoundError:
            continue
        if fd is None:
            continue  # a live runner of an older version holds it
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed += 1
        finally:
            os.close(fd)
    return removed
