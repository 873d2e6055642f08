"""Start-up recovery of the filesystem spool (blocking; runs in a worker thread).

Owns the decisions about what a crash may have left behind:
- incoming/: every file is an unfinished write or update: removed.
- queue/<id>.msg whose footer or embedded record does not parse, names
  another id or another size: moved to corrupt/ (with its .env, if any).
  Message files are complete before they are renamed into queue/, so only
  damage (disk, hand edits) produces one.
- queue/<id>.env that does not parse, or names another id, size or envelope
  than its message file: moved to corrupt/ with the message file. Falling back to
  the embedded record instead could deliver again to recipients already done.
- queue/<id>.env without queue/<id>.msg: a `remove` cut short between its two
  unlinks (the message itself is gone): deleted, counted in `orphans_removed`.
- any other name in queue/: moved to corrupt/. Nothing in corrupt/ is ever
  deleted or overwritten.
- lease/ (older versions only): files no live process holds are deleted
  (`fslease.clean`).

Other processes may be writing into the same spool while this runs (several
server workers): a file in incoming/ whose flock is held belongs to a live
writer and is left alone (`in_use`). Nothing in queue/ needs a lock: a file
there is complete from the moment its name appears. Raises `OSError` when a
directory cannot be read or a file cannot be moved.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from . import fsfile, fslease, fsutil, ids, records
from .api import QueuedMessage, RecordError, RecoveryReport

if TYPE_CHECKING:
    from .fs import FsQueueStore

log = logging.getLogger("goniec.queue")


class _Recovery:
    def __init__(self, store: FsQueueStore) -> None:
        self.store = store
        self.messages = 0
        self.incoming_removed = 0
        self.orphans_removed = 0
        self.in_use = 0
        self.corrupt: list[str] = []

    def report(self) -> RecoveryReport:
        return RecoveryReport(self.messages, self.incoming_removed, self.orphans_removed,
                              tuple(self.corrupt), self.in_use)

    def remove_if_unlocked(self, path: str) -> bool:
        """Unlink `path` unless a live process holds its lock."""
        try:
            fd = fsutil.try_lock(path)
        except FileNotFoundError:
            return False
        if fd is None:
            self.in_use += 1
            return False
        try:
            fsutil.unlink_quiet(path)
            return True
        finally:
            os.close(fd)

    def set_aside(self, name: str, reason: str) -> None:
        """Move queue/<name> into corrupt/ under a free name; never overwrite there."""
        src = os.path.join(self.store.queue_dir, name)
        dest_name = name
        n = 0
        while os.path.lexists(os.path.join(self.store.corrupt_dir, dest_name)):
            n += 1
            dest_name = f"{name}.{n}"
        try:
            os.rename(src, os.path.join(self.store.corrupt_dir, dest_name))
        except FileNotFoundError:
            return
        self.corrupt.append(dest_name)
        log.warning("queue.corrupt file=%s moved_to=corrupt/%s reason=%r", name, dest_name, reason)

    def incoming(self) -> None:
        for name in os.listdir(self.store.incoming_dir):
            if self.remove_if_unlocked(os.path.join(self.store.incoming_dir, name)):
                self.incoming_removed += 1

    def queue(self) -> None:
        qdir = self.store.queue_dir
        envs: set[str] = set()
        msgs: set[str] = set()
        for name in os.listdir(qdir):
            stem, _, ext = name.partition(".")
            if ids.is_valid(stem) and ext == "env":
                envs.add(stem)
            elif ids.is_valid(stem) and ext == "msg":
                msgs.add(stem)
            else:
                self.set_aside(name, "not a queue file")
        for queue_id in sorted(msgs):
            self.check_message(queue_id, queue_id in envs)
        for queue_id in sorted(envs - msgs):
            if not os.path.exists(os.path.join(qdir, queue_id + ".msg")):  # not committed since
                fsutil.unlink_quiet(os.path.join(qdir, queue_id + ".env"))
                self.orphans_removed += 1
                log.info("queue.orphan_removed file=%s.env", queue_id)

    def check_message(self, queue_id: str, has_env: bool) -> None:
        try:
            msg = self.read_embedded(queue_id)
        except FileNotFoundError:
            return  # removed meanwhile (by a live process sharing the spool)
        except RecordError as exc:
            self.set_aside(queue_id + ".msg", str(exc))
            if has_env:
                self.set_aside(queue_id + ".env", "its message file is corrupt")
            return
        if has_env:
            try:
                self.check_env(queue_id, msg)
            except FileNotFoundError:
                pass  # removed meanwhile
            except RecordError as exc:
                self.set_aside(queue_id + ".env", str(exc))
                self.set_aside(queue_id + ".msg", "its current record is corrupt")
                return
        self.messages += 1

    def read_embedded(self, queue_id: str) -> QueuedMessage:
        fd = fsfile.open_read(os.path.join(self.store.queue_dir, queue_id + ".msg"))
        try:
            return fsfile.read_message(fd, os.fstat(fd).st_size, queue_id)
        finally:
            os.close(fd)

    def check_env(self, queue_id: str, embedded: QueuedMessage) -> None:
        with open(os.path.join(self.store.queue_dir, queue_id + ".env"), "rb") as f:
            msg = records.parse_record(f.read())
        if msg.id != queue_id:
            raise RecordError(f"record of {msg.id} stored as {queue_id}")
        if msg.size != embedded.size:
            raise RecordError(f"record says {msg.size} bytes, message file {embedded.size}")
        if msg.envelope != embedded.envelope:
            raise RecordError("record has another envelope than its message file")


def recover(store: FsQueueStore) -> RecoveryReport:
    r = _Recovery(store)
    if os.path.isdir(store.lease_dir):
        fslease.clean(store.lease_dir)  # lease files of older versions (held ones stay)
    r.incoming()
    r.queue()
    # Make the removals and moves durable before the server starts taking mail.
    for d in (store.incoming_dir, store.queue_dir, store.corrupt_dir):
        fsutil.sync_dir(d, store.stats)
    return r.report()
