"""The filesystem spool: the embedded default `QueueStore` backend.

Owns everything under its root directory::

    incoming/  files being written (and record updates before their rename)
    queue/     <id>.msg (the exact bytes to deliver) and <id>.env (the envelope record)
    corrupt/   records recovery could not read, with their message files; never deleted

A message exists exactly when queue/<id>.env exists. Commit, in one worker
thread: write the rest of the data, fdatasync the message file, write and
fdatasync the record, rename the message file, then the record, into queue/,
and fsync queue/ (one fsync shared by all concurrent commits, `DirSyncer`).
incoming/ itself is never fsynced: nothing there has to survive a crash, and
the file fsyncs before the renames order data before names.

The writer (`fswriter`) keeps small messages in memory (the caller's chunks,
never joined) up to `memory_threshold` and sends larger ones to
incoming/<id>.msg in batches. Every blocking call runs in the store's own
thread pool, never on the event loop; reads for the CLI (`get`,
`list_messages`, `open_message`) are plain synchronous calls.

Several processes may share one spool: ids are random (see `ids`), and each
writer holds an flock on its files, so `recover` in one process never removes
another live process's work. Raises `SMTPError` (452 4.3.1 / 451 4.3.0) from
the writer, `MessageNotFound`, and `OSError` from `update_recipients`/`remove`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from . import fsrecover, fsutil, ids, records
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
        self._make_dirs()
        self.min_free_space = min_free_space
        self.memory_threshold = memory_threshold
        self.stats = fsutil.SyncStats()
        self._clock = clock
        self._free_ttl = free_space_ttl
        self._free_bytes = 0
        self._free_expires = float("-inf")
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="goniec-queue")
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
            self._executor.shutdown(wait=True)
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
        """Read a record; FileNotFoundError when absent, RecordError when unreadable."""
        with open(self._env_path(queue_id), "rb") as f:
            msg = records.parse_record(f.read())
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

    def list_messages(self) -> Iterator[QueuedMessage]:
        names = sorted(
            n[:-4] for n in os.listdir(self.queue_dir) if n.endswith(".env") and ids.is_valid(n[:-4])
        )
        for queue_id in names:
            msg = self.get(queue_id)
            if msg is not None:
                yield msg

    def open_message(self, queue_id: str) -> BinaryIO:
        if not ids.is_valid(queue_id):
            raise MessageNotFound(queue_id)
        try:
            f = open(self._msg_path(queue_id), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise MessageNotFound(queue_id) from None
        if not os.path.exists(self._env_path(queue_id)):  # a leftover, not a message
            f.close()
            raise MessageNotFound(queue_id)
        return f

    # -- changing ---------------------------------------------------------------------

    async def _locked(self, queue_id: str, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the pool, one at a time per message id (in this process)."""
        entry = self._locks.get(queue_id)
        if entry is None:
            entry = self._locks[queue_id] = _IdLock()
        entry.users += 1
        try:
            async with entry.lock:
                loop = asyncio.get_running_loop()
                return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[queue_id]

    async def update_recipients(
        self, queue_id: str, updates: Mapping[int, RecipientState]
    ) -> QueuedMessage:
        if not ids.is_valid(queue_id):
            raise MessageNotFound(queue_id)
        return await self._locked(queue_id, self._update_sync, queue_id, dict(updates))

    def _update_sync(self, queue_id: str, updates: Mapping[int, RecipientState]) -> QueuedMessage:
        try:
            msg = records.apply_updates(self._load(queue_id), updates)
        except FileNotFoundError:
            raise MessageNotFound(queue_id) from None
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
        try:
            os.unlink(self._env_path(queue_id))  # the message ends here
        except FileNotFoundError:
            return False
        fsutil.unlink_quiet(self._msg_path(queue_id))
        self._queue_syncer.sync()
        return True

    # -- housekeeping -----------------------------------------------------------------

    async def recover(self) -> RecoveryReport:
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self._executor, fsrecover.recover, self)
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
