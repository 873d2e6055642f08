"""Start-up recovery of the filesystem spool (blocking; runs in a worker thread).

Owns the decisions about what a crash may have left behind:
- incoming/: every file is an unfinished write or update: removed.
- queue/<id>.msg without queue/<id>.env: a commit cut between its two renames:
  removed (the client never got 250 for it).
- queue/<id>.env that does not parse, names another id, or whose message file
  is missing or of the wrong size, and any file in queue/ that is not named
  like a message: moved to corrupt/ (with the message file), never deleted.

Other processes may be writing into the same spool while this runs (several
server workers): a file whose flock is held belongs to a live writer and is
left alone, and an orphan is re-checked under its lock before removal.
Raises `OSError` when a directory cannot be read or a file cannot be moved.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from . import fsutil, ids, records
from .api import RecordError, RecoveryReport

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

    def remove_if_unlocked(self, path: str, check_gone: str | None = None) -> bool:
        """Unlink `path` unless a live process holds its lock (or `check_gone` exists)."""
        try:
            fd = fsutil.try_lock(path)
        except FileNotFoundError:
            return False
        if fd is None:
            self.in_use += 1
            return False
        try:
            # Holding the lock, the writer is done: if it finished the commit the
            # record is in place by now, and the file is a message, not an orphan.
            if check_gone is not None and os.path.exists(check_gone):
                return False
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
            stem, dot, ext = name.partition(".")
            if ids.is_valid(stem) and ext == "env":
                envs.add(stem)
            elif ids.is_valid(stem) and ext == "msg":
                msgs.add(stem)
            else:
                self.set_aside(name, "not a queue file")
        for queue_id in sorted(envs):
            self.check_message(queue_id)
        for queue_id in sorted(msgs - envs):
            msg_path = os.path.join(qdir, queue_id + ".msg")
            if self.remove_if_unlocked(msg_path, check_gone=os.path.join(qdir, queue_id + ".env")):
                self.orphans_removed += 1
                log.info("queue.orphan_removed msg=%s", queue_id)

    def check_message(self, queue_id: str) -> None:
        env_path = os.path.join(self.store.queue_dir, queue_id + ".env")
        msg_path = os.path.join(self.store.queue_dir, queue_id + ".msg")
        try:
            with open(env_path, "rb") as f:
                msg = records.parse_record(f.read())
            if msg.id != queue_id:
                raise RecordError(f"record of {msg.id} stored as {queue_id}")
        except FileNotFoundError:
            return  # removed meanwhile
        except RecordError as exc:
            self.set_aside(queue_id + ".env", str(exc))
            if os.path.lexists(msg_path):
                self.set_aside(queue_id + ".msg", "its record is corrupt")
            return
        try:
            size = os.stat(msg_path).st_size
        except FileNotFoundError:
            if os.path.exists(env_path):  # remove() takes the record first, then the file
                self.set_aside(queue_id + ".env", "message file missing")
            return
        if size != msg.size:
            self.set_aside(queue_id + ".env", f"message file has {size} bytes, record says "
                                              f"{msg.size}")
            self.set_aside(queue_id + ".msg", "size differs from its record")
            return
        self.messages += 1


def recover(store: FsQueueStore) -> RecoveryReport:
    r = _Recovery(store)
    r.incoming()
    r.queue()
    # Make the removals and moves durable before the server starts taking mail.
    for d in (store.incoming_dir, store.queue_dir, store.corrupt_dir):
        fsutil.sync_dir(d, store.stats)
    return r.report()
