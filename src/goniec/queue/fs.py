"""The filesystem spool: the embedded default `QueueStore` backend.

Owns everything under its root directory::

    incoming/  files being written: <id>.msg, and <id>.<n>.upd record updates
    queue/     <id>.msg: the message, its initial envelope record, a footer
               (`fsfile` has the exact layout); <id>.env: a later record
    corrupt/   files recovery could not read; never deleted
    lease/     only leftovers of older versions (a lease is now an flock on the .msg)

A message exists exactly when queue/<id>.msg exists. Accepting one costs one
file creation, one fdatasync, one rename and a share of one directory fsync:
in one worker thread the writer (`fswriter`) writes the rest of the message,
its record and the footer with one vectored write into incoming/<id>.msg,
fdatasyncs it, renames it into queue/, and fsyncs queue/ (one fsync shared by
all concurrent commits, `DirSyncer`). The file is complete and on disk before
its name appears in queue/, so no crash, and no reader, ever sees half of one.
incoming/ itself is never fsynced: nothing there has to survive a crash.

Later recipient states (`update_recipients`) go to queue/<id>.env (written in
incoming/, fdatasynced, renamed over the old one, queue/ fsynced); when it
exists it wins over the record embedded in the message file, which is never
rewritten. `hold`/`release` rewrite the .env the same way (a message
committed held says so in its embedded record: no second write). A .env that
does not parse makes the message unreadable (it is
not silently replaced by the older embedded state, which could send again to
recipients already delivered).

`remove` unlinks queue/<id>.msg, fsyncs queue/, then unlinks the .env. In
that order a crash can leave only a .env without its message (inert: never
listed, deleted by `recover`). The other order could leave the message file
alone, and its embedded record would bring back as pending every recipient
already delivered.

Readers (`get`, `list_messages`, `open_message`, used by the CLI while the
server runs) open the message file first and take the .env after: a message
removed meanwhile is not found (the open descriptor shows no links), one that
vanishes between listing and reading is skipped.

The writer keeps small messages in memory (the caller's chunks, never
joined) up to `memory_threshold` and sends larger ones to incoming/<id>.msg in
batches. Every blocking call runs in the store's own thread pool, never on the
event loop; reads for the CLI are plain synchronous calls.

Several processes may share one spool: ids are random (see `ids`), and each
writer holds an flock on its incoming/ file (one uncontended system call), so
`recover` in one process never removes another live process's work. Raises
`SMTPError` (452 4.3.1 / 451 4.3.0) from the writer, `MessageNotFound`, and
`OSError` from `update_recipients`/`remove`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from . import fsfile, fslease, fsrecover, fsutil, ids, records
from .api import (
    MessageNotFound,
    QueuedMessage,
    RecipientState,
    RecordError,
    RecoveryReport,
)
from .fswriter import FsMessageWriter

if TYPE_CHECKING:
    from .api import MessageWriter, QueueStore

log = logging.getLogger("goniec.queue")
T = TypeVar("T")


class _IdLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class FsQueueStore:
    """`QueueStore` on a local filesystem under `root` (created if missing).

    min_free_space: bytes that must stay free for `free_space_ok`.
    memory_threshold: a message larger than this goes to disk while it arrives.
    workers: threads for blocking I/O; more threads let more commits share a
    directory fsync.
    """

    def __init__(self, root: str | os.PathLike[str], *, min_free_space: int = 64 << 20,
                 memory_threshold: int = 256 << 10, workers: int = 32,
                 clock: Callable[[], float] = time.time, free_space_ttl: float = 1.0) -> None:
        self.root = Path(root)
        self.incoming_dir = str(self.root / "incoming")
        self.queue_dir = str(self.root / "queue")
        self.corrupt_dir = str(self.root / "corrupt")
        self.lease_dir = str(self.root / "lease")
        self._make_dirs()
        self.min_free_space = min_free_space
        self.memory_threshold = memory_threshold
        self.stats = fsutil.SyncStats()
        self._clock = clock
        self._free_ttl = free_space_ttl
        self._free_bytes = 0
        self._free_expires = float("-inf")
        self._executor = fsutil.JobThreads(workers, "goniec-queue")
        self._queue_fd = fsutil.open_dir(self.queue_dir)
        self._queue_syncer = fsutil.DirSyncer(self._queue_fd, self.stats)
        self._locks: dict[str, _IdLock] = {}
        self._closed = False

    def _make_dirs(self) -> None:
        created = not self.root.is_dir()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.incoming_dir, self.queue_dir, self.corrupt_dir):
            try:
                os.mkdir(d, 0o700)
                created = True
            except FileExistsError:  # as usual; or another worker process was first
                pass
        if created:  # the new names must survive a crash as much as the messages in them
            fsutil.sync_dir(str(self.root))
            fsutil.sync_dir(str(self.root.parent))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.shutdown()
            os.close(self._queue_fd)

    # -- writing ----------------------------------------------------------------------

    def new_message(self) -> FsMessageWriter:
        now = self._clock()
        return FsMessageWriter(self, ids.new_id(now), now)

    # -- reading ----------------------------------------------------------------------

    def _env_path(self, queue_id: str) -> str:
        return os.path.join(self.queue_dir, queue_id + ".env")

    def _msg_path(self, queue_id: str) -> str:
        return os.path.join(self.queue_dir, queue_id + ".msg")

    def _load(self, queue_id: str) -> QueuedMessage:
        """The current record; FileNotFoundError when absent, RecordError when unreadable."""
        fd = fsfile.open_read(self._msg_path(queue_id))  # the message exists iff this does
        try:
            try:
                with open(self._env_path(queue_id), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = None
            st = os.fstat(fd)
            if st.st_nlink == 0:  # removed since we opened it
                raise FileNotFoundError(self._msg_path(queue_id))
            if data is None:  # never updated: the record written at commit is current
                return fsfile.read_message(fd, st.st_size, queue_id)
        finally:
            os.close(fd)
        msg = records.parse_record(data)
        if msg.id != queue_id:
            raise RecordError(f"record of {msg.id} stored as {queue_id}")
        return msg

    def get(self, queue_id: str) -> QueuedMessage | None:
        if not ids.is_valid(queue_id):
            return None
        try:
            return self._load(queue_id)
        except FileNotFoundError:
            return None
        except RecordError as exc:
            log.warning("queue.bad_record msg=%s error=%r", queue_id, str(exc))
            return None

    def list_ids(self) -> list[str]:
        return sorted(
            n[:-4] for n in os.listdir(self.queue_dir) if n.endswith(".msg") and ids.is_valid(n[:-4])
        )

    def list_messages(self) -> Iterator[QueuedMessage]:
        for queue_id in self.list_ids():
            msg = self.get(queue_id)  # None when removed since the listing
            if msg is not None:
                yield msg

    def open_message(self, queue_id: str) -> BinaryIO:
        if not ids.is_valid(queue_id):
            raise MessageNotFound(queue_id)
        try:
            fd = fsfile.open_read(self._msg_path(queue_id))
        except FileNotFoundError:
            raise MessageNotFound(queue_id) from None
        try:
            size = fsfile.read_message(fd, os.fstat(fd).st_size, queue_id).size
        except RecordError as exc:
            os.close(fd)
            log.warning("queue.bad_record msg=%s error=%r", queue_id, str(exc))
            raise MessageNotFound(queue_id) from None
        except BaseException:
            os.close(fd)
            raise
        return fsfile.open_body(fd, size)

    # -- changing ---------------------------------------------------------------------

    async def _locked(self, queue_id: str, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the pool, one at a time per message id (in this process)."""
        entry = self._locks.get(queue_id)
        if entry is None:
            entry = self._locks[queue_id] = _IdLock()
        entry.users += 1
        try:
            async with entry.lock:  # held until the job is done, even if we are cancelled
                return await self._executor.submit(fn, *args)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[queue_id]

    async def update_recipients(
        self, queue_id: str, updates: Mapping[int, RecipientState]
    ) -> QueuedMessage:
        if not ids.is_valid(queue_id):
            raise MessageNotFound(queue_id)
        changes = dict(updates)
        return await self._locked(queue_id, self._rewrite_sync, queue_id,
                                  lambda m: records.apply_updates(m, changes))

    async def hold(self, queue_id: str, reason: str = "") -> QueuedMessage:
        msg = await self._set_hold(queue_id, True, reason)
        log.info("queue.held msg=%s reason=%r", queue_id, reason)
        return msg

    async def release(self, queue_id: str) -> QueuedMessage:
        msg = await self._set_hold(queue_id, False, "")
        log.info("queue.released msg=%s", queue_id)
        return msg

    async def _set_hold(self, queue_id: str, held: bool, reason: str) -> QueuedMessage:
        if not ids.is_valid(queue_id):
            raise MessageNotFound(queue_id)
        return await self._locked(queue_id, self._rewrite_sync, queue_id,
                                  lambda m: records.with_hold(m, held, reason))

    def _rewrite_sync(self, queue_id: str,
                      change: Callable[[QueuedMessage], QueuedMessage]) -> QueuedMessage:
        """Write `change(current record)` as the new .env, durably (unless unchanged)."""
        try:
            old = self._load(queue_id)
        except FileNotFoundError:
            raise MessageNotFound(queue_id) from None
        msg = change(old)
        if msg == old:
            return msg  # nothing to write (e.g. releasing a message that is not held)
        tmp = os.path.join(self.incoming_dir, f"{queue_id}.{ids.new_id()}.upd")
        try:
            fd = fsutil.create_locked(tmp)
            try:
                fsutil.write_all(fd, [records.format_record(msg)])
                fsutil.datasync(fd, self.stats)
                # The new record replaces the old one in one step (rename is atomic).
                os.rename(tmp, self._env_path(queue_id))
            finally:
                os.close(fd)
        except BaseException:
            fsutil.unlink_quiet(tmp)
            raise
        self._queue_syncer.sync()
        return msg

    async def remove(self, queue_id: str) -> bool:
        if not ids.is_valid(queue_id):
            return False
        removed = await self._locked(queue_id, self._remove_sync, queue_id)
        if removed:
            log.info("queue.removed msg=%s", queue_id)
        return removed

    def _remove_sync(self, queue_id: str) -> bool:
        env = self._env_path(queue_id)
        try:
            os.unlink(self._msg_path(queue_id))  # the message ends here
        except FileNotFoundError:
            fsutil.unlink_quiet(env)  # a leftover of an earlier remove, if any
            return False
        # Durable before the .env goes: a crash must never leave the message file
        # alone, with its embedded record saying every recipient is pending.
        # A message never updated (delivered at its first attempt: the usual
        # case) has no .env, and its removal need not be durable: after a crash
        # it is delivered again, a duplicate at worst, never a loss (as Postfix,
        # which does not sync its unlinks either).
        try:
            os.stat(env)
        except FileNotFoundError:
            return True
        self._queue_syncer.sync()
        try:
            os.unlink(env)
        except FileNotFoundError:
            pass  # removed meanwhile
        except OSError as exc:  # the message is gone; recovery deletes the leftover
            log.warning("queue.remove_leftover msg=%s error=%r", queue_id, exc)
        return True

    def lease(self, queue_id: str) -> fslease.FsLease | None:
        if not ids.is_valid(queue_id):
            return None
        return fslease.take(queue_id, self._msg_path(queue_id))

    # -- housekeeping -----------------------------------------------------------------

    async def recover(self) -> RecoveryReport:
        report = await self._executor.submit(fsrecover.recover, self)
        log.info("queue.recovered messages=%d incoming_removed=%d orphans_removed=%d "
                 "corrupt=%d in_use=%d", report.messages, report.incoming_removed,
                 report.orphans_removed, len(report.corrupt), report.in_use)
        return report

    def free_space_ok(self, needed: int) -> bool:
        now = time.monotonic()
        if now >= self._free_expires:
            st = os.statvfs(self.root)
            self._free_bytes = st.f_bavail * st.f_frsize
            self._free_expires = now + self._free_ttl
        return self._free_bytes - max(needed, 0) >= self.min_free_space


if TYPE_CHECKING:
    def _is_store(s: FsQueueStore) -> QueueStore:
        return s

    def _is_writer(w: FsMessageWriter) -> MessageWriter:
        return w
