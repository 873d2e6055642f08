"""The filesystem spool's message writer: one message on its way into queue/.

Owns the life of one message before it exists: the in-memory chunks, the
file incoming/<id>.msg (flocked while open, see `fsrecover`; created at the
first spill, or at commit for a message that stayed in memory), and the
commit: one vectored write of the rest of the message, its envelope record
and the footer (`fsfile` has the layout), one fdatasync, one rename into
queue/, and queue/ fsynced through the store's shared `DirSyncer`, all in one
job of the store's thread pool. Raises `SMTPError` (452 4.3.1 when storage is
full, 451 4.3.0 otherwise) and leaves nothing behind in the queue when it
does; `ValueError` for an envelope without recipients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from goniec.errors import SMTPError
from goniec.model import Envelope

from . import fsfile, fsutil, records
from .api import SessionFacts, storage_error

if TYPE_CHECKING:
    from .fs import FsQueueStore

log = logging.getLogger("goniec.queue")
T = TypeVar("T")

_OPEN, _COMMITTING, _COMMITTED, _FAILED, _ABORTED = range(5)


class FsMessageWriter:
    """One message on its way into the spool (see `api.MessageWriter`)."""

    def __init__(self, store: FsQueueStore, queue_id: str, created: float) -> None:
        self._store = store
        self._id = queue_id
        self._created = created
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._size = 0
        self._fd: int | None = None  # incoming/<id>.msg once spilled, or at commit
        self._finalizer: weakref.finalize[Any, FsMessageWriter] | None = None
        self._state = _OPEN
        self._error: SMTPError | None = None
        self._job: asyncio.Future[Any] | None = None
        self._tmp_msg = os.path.join(store.incoming_dir, queue_id + ".msg")
        self._msg = os.path.join(store.queue_dir, queue_id + ".msg")

    @property
    def queue_id(self) -> str:
        return self._id

    @property
    def size(self) -> int:
        return self._size

    @property
    def buffered(self) -> int:
        """Bytes held in memory right now (at most about `memory_threshold`)."""
        return self._buffered

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state != _OPEN:
            raise RuntimeError(f"msg={self._id}: writer is no longer open")

    async def _settle(self) -> None:
        """Wait for a job still running in its thread (a guard: a cancelled caller of
        `_run` only leaves once its job is done)."""
        if self._job is not None and not self._job.done():
            await asyncio.wait([self._job])

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the store's threads; a cancelled caller does not stop it (its
        CancelledError comes when the job is done: `fsutil.JobThreads`)."""
        try:
            job: asyncio.Future[T] = self._store._executor.submit(self._guarded, fn, *args)
            self._job = job
            return await job
        except Exception as exc:
            if self._error is None:  # the job never ran (the store is closed)
                self._state = _FAILED
                self._error = storage_error(exc)
                self._discard_sync()
            if isinstance(exc, OSError):
                log.warning("queue.store_failed msg=%s error=%r reply=%r", self._id, exc,
                            str(self._error.reply))
            else:  # DESIGN 1.5: an unclassified failure is a temporary one
                log.exception("queue.store_failed msg=%s reply=%r", self._id,
                              str(self._error.reply))
            raise self._error from exc

    async def write(self, data: bytes) -> None:
        await self._settle()
        self._check_open()
        if not data:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._size += len(data)
        if self._buffered >= self._store.memory_threshold:
            chunks, self._chunks, self._buffered = self._chunks, [], 0
            await self._run(self._flush_sync, chunks)

    async def commit(self, envelope: Envelope, info: SessionFacts, *, held: bool = False,
                     hold_reason: str = "") -> str:
        await self._settle()
        self._check_open()
        msg = records.new_message(self._id, self._created, envelope, info, self._size,
                                  held=held, hold_reason=hold_reason)
        # The record and footer follow the message in the same file and write.
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        chunks += (records.format_record(msg), fsfile.footer(self._size))
        self._state = _COMMITTING
        await self._run(self._commit_sync, chunks)
        log.debug("queue.committed msg=%s session=%s size=%d nrcpt=%d held=%s", self._id,
                  msg.info.session_id, msg.size, len(msg.recipients), msg.held)
        return self._id

    async def abort(self) -> None:
        await self._settle()
        if self._state in (_COMMITTED, _ABORTED):
            return  # after a commit the message is durably queued: too late to drop it
        self._state = _ABORTED
        self._chunks, self._buffered = [], 0
        if self._fd is not None:
            try:
                await self._store._executor.submit(self._discard_sync)
            except RuntimeError:  # the store's threads are shut down: do it here
                self._discard_sync()

    # -- worker-thread side ---------------------------------------------------------

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except BaseException as exc:
            # Recorded here, not by the awaiting task, which may have been cancelled.
            self._state = _FAILED
            self._error = storage_error(exc)
            raise

    def _open_file(self) -> int:
        fd = self._fd = fsutil.create_locked(self._tmp_msg)
        # A writer dropped without abort() must not leak its descriptor and file.
        self._finalizer = weakref.finalize(self, _discard, fd, self._tmp_msg)
        return fd

    def _flush_sync(self, chunks: list[bytes]) -> None:
        try:
            fd = self._open_file() if self._fd is None else self._fd
            fsutil.write_all(fd, chunks)
        except BaseException:
            self._discard_sync()
            raise

    def _commit_sync(self, chunks: list[bytes]) -> None:
        store = self._store
        renamed = False
        try:
            fd = self._fd
            if fd is None:  # stayed in memory; no finalizer: this job ends the file's life
                fd = self._fd = fsutil.create_locked(self._tmp_msg)
            fsutil.write_all(fd, chunks)
            fsutil.datasync(fd, store.stats)
            # Complete and on disk before it gets its name: the message exists from here on.
            os.rename(self._tmp_msg, self._msg)
            renamed = True
            store._queue_syncer.sync()
        except BaseException:
            if renamed:
                fsutil.unlink_quiet(self._msg)  # not durable: the client must retry
            self._discard_sync()
            raise
        # The flock is held up to the rename: until then recovery in another
        # process must leave incoming/<id>.msg alone.
        self._release()
        self._state = _COMMITTED
        store.stats.add(commits=1)

    def _release(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._fd is not None:
            fsutil.close_quiet(self._fd)
            self._fd = None

    def _discard_sync(self) -> None:
        if self._fd is not None:
            fsutil.unlink_quiet(self._tmp_msg)
        self._release()


def _discard(fd: int, path: str) -> None:
    fsutil.unlink_quiet(path)
    fsutil.close_quiet(fd)
