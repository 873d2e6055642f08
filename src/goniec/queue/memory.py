"""In-memory queue backend, for unit tests of the layers above the queue.

Owns nothing durable: messages live in a dict and vanish with the process.
It follows the same contract as the filesystem spool (tests/queue runs one
suite against both), including the errors: with a `capacity` it raises
`SMTPError(R452_STORAGE)` from `write`/`commit` once the stored bytes would
exceed it, so callers can test their "disk full" path. Raises
`MessageNotFound` and `ValueError` as `api` describes.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

from goniec.errors import SMTPError
from goniec.model import Envelope

from . import ids, records
from .api import (
    R452_STORAGE,
    MessageNotFound,
    QueuedMessage,
    RecipientState,
    RecoveryReport,
    SessionFacts,
)


class MemoryMessageWriter:
    def __init__(self, store: MemoryQueueStore, queue_id: str, created: float) -> None:
        self._store = store
        self._id = queue_id
        self._created = created
        self._chunks: list[bytes] = []
        self._size = 0
        self._error: SMTPError | None = None
        self._done = False  # committed or aborted

    @property
    def queue_id(self) -> str:
        return self._id

    @property
    def size(self) -> int:
        return self._size

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._done:
            raise RuntimeError(f"msg={self._id}: writer already committed or aborted")

    async def write(self, data: bytes) -> None:
        self._check()
        if not self._store._has_room(self._size + len(data)):
            self._error = SMTPError(R452_STORAGE)
            self._chunks.clear()
            raise self._error
        self._chunks.append(bytes(data))
        self._size += len(data)

    async def commit(self, envelope: Envelope, info: SessionFacts, *, held: bool = False,
                     hold_reason: str = "") -> str:
        self._check()
        msg = records.new_message(self._id, self._created, envelope, info, self._size,
                                  held=held, hold_reason=hold_reason)
        if not self._store._has_room(self._size):
            self._error = SMTPError(R452_STORAGE)
            self._chunks.clear()
            raise self._error
        self._store._messages[self._id] = (msg, b"".join(self._chunks))
        self._store._used += self._size
        self._chunks.clear()
        self._done = True
        return self._id

    async def abort(self) -> None:
        if not self._done:
            self._chunks.clear()
            self._done = True


class MemoryLease:
    def __init__(self, store: MemoryQueueStore, queue_id: str) -> None:
        self._store = store
        self._id = queue_id

    @property
    def queue_id(self) -> str:
        return self._id

    def release(self) -> None:
        self._store._leased.discard(self._id)


class MemoryQueueStore:
    """`QueueStore` kept in a dict. `capacity`: stored bytes allowed (None: no limit)."""

    def __init__(self, *, capacity: int | None = None, min_free_space: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.min_free_space = min_free_space
        self._clock = clock
        self._messages: dict[str, tuple[QueuedMessage, bytes]] = {}
        self._used = 0
        self._leased: set[str] = set()

    def _has_room(self, needed: int) -> bool:
        return self.capacity is None or self._used + needed <= self.capacity

    def new_message(self) -> MemoryMessageWriter:
        now = self._clock()
        return MemoryMessageWriter(self, ids.new_id(now), now)

    async def recover(self) -> RecoveryReport:
        return RecoveryReport(messages=len(self._messages))

    def list_ids(self) -> list[str]:
        return sorted(self._messages)

    def list_messages(self) -> Iterator[QueuedMessage]:
        for queue_id in sorted(self._messages):
            entry = self._messages.get(queue_id)
            if entry is not None:
                yield entry[0]

    def get(self, queue_id: str) -> QueuedMessage | None:
        entry = self._messages.get(queue_id)
        return None if entry is None else entry[0]

    def open_message(self, queue_id: str) -> BinaryIO:
        entry = self._messages.get(queue_id)
        if entry is None:
            raise MessageNotFound(queue_id)
        return io.BytesIO(entry[1])

    async def update_recipients(
        self, queue_id: str, updates: Mapping[int, RecipientState]
    ) -> QueuedMessage:
        entry = self._messages.get(queue_id)
        if entry is None:
            raise MessageNotFound(queue_id)
        msg = records.apply_updates(entry[0], updates)
        self._messages[queue_id] = (msg, entry[1])
        return msg

    async def hold(self, queue_id: str, reason: str = "") -> QueuedMessage:
        return self._set_hold(queue_id, True, reason)

    async def release(self, queue_id: str) -> QueuedMessage:
        return self._set_hold(queue_id, False, "")

    def _set_hold(self, queue_id: str, held: bool, reason: str) -> QueuedMessage:
        entry = self._messages.get(queue_id)
        if entry is None:
            raise MessageNotFound(queue_id)
        msg = records.with_hold(entry[0], held, reason)
        self._messages[queue_id] = (msg, entry[1])
        return msg

    async def remove(self, queue_id: str) -> bool:
        entry = self._messages.pop(queue_id, None)
        if entry is None:
            return False
        self._used -= len(entry[1])
        return True

    def lease(self, queue_id: str) -> MemoryLease | None:
        if queue_id in self._leased or queue_id not in self._messages:
            return None
        self._leased.add(queue_id)
        return MemoryLease(self, queue_id)

    def free_space_ok(self, needed: int) -> bool:
        if self.capacity is None:
            return True
        return self.capacity - self._used - needed >= self.min_free_space

    def close(self) -> None:
        pass
