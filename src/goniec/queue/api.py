"""The queue port: what every queue backend offers, and the errors it raises.

Owns the `QueueStore` and `MessageWriter` protocols, `RecoveryReport`,
`MessageNotFound`, and the storage replies. The data types live in `records`
and are re-exported here, so callers import everything from `goniec.queue.api`.
Backends (`fs`, `memory`, later `sql`) implement these protocols and pass the
one contract suite in tests/queue. No I/O here.

Errors a caller sees from a backend:
- `SMTPError(R452_STORAGE)` (452 4.3.1) when the disk or quota is full, and
  `SMTPError(R451_LOCAL_ERROR)` (451 4.3.0) for any other local failure, from
  `MessageWriter.write` and `MessageWriter.commit`; the reply goes to the client.
- `MessageNotFound` (a `KeyError`) from `open_message`, `update_recipients`,
  `hold` and `release`.
- `OSError` from `update_recipients`, `hold`, `release` and `remove` when
  storage fails (the
  delivery work treats it as temporary and tries again later).
- `ValueError` for a caller bug (empty envelope, an update that changes a
  recipient's identity).
- `OSError` from `lease` when the lease cannot be taken for a reason other
  than "someone else holds it" (that is `None`).

Leases: a delivery runner changes a message only while it holds its lease
(`QueueStore.lease`). A lease is exclusive across every process sharing the
store, never blocks, and ends with `Lease.release()` or with the holder's
process (a crash frees it at once: nothing to expire). Leases are not durable
state: they protect against two runners delivering one message at once, not
against a crash, after which the message is simply delivered again.

Held messages: a message committed with `held=True`, or held later with
`QueueStore.hold`, stays in the queue and is never delivered, expired or
bounced until `QueueStore.release` (the delivery runner skips it). The flag is
durable state of the message record, like the recipients' states.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from goniec.errors import SMTPError
from goniec.model import Envelope
from goniec.replies import R451_LOCAL_ERROR, R452_INSUFFICIENT_STORAGE

from .records import (
    QueuedMessage,
    RecipientState,
    RecipientStatus,
    RecordError,
    SessionFacts,
    SubmissionInfo,
)

__all__ = [
    "R451_LOCAL_ERROR", "R452_STORAGE", "Lease", "MessageNotFound", "MessageWriter", "QueueStore",
    "QueuedMessage", "RecipientState", "RecipientStatus", "RecordError", "RecoveryReport",
    "SessionFacts", "SubmissionInfo", "storage_error",
]

# RFC 3463 3.4: X.3.1 "Mail system full" (452), and X.3.0 for any other local
# failure (451): DESIGN 1.5, fail temporarily. The wording lives in the catalog.
R452_STORAGE = R452_INSUFFICIENT_STORAGE

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def storage_error(exc: BaseException) -> SMTPError:
    """The SMTPError a client should see for a local storage failure `exc`."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return SMTPError(R452_STORAGE)
    return SMTPError(R451_LOCAL_ERROR)


class MessageNotFound(KeyError):
    """No message with this queue id (never was, or already removed)."""


@dataclass(frozen=True)  # no slots: callers log it with vars()
class RecoveryReport:
    """What `QueueStore.recover` found and did at start-up."""

    messages: int = 0          # valid messages in the queue
    incoming_removed: int = 0  # unfinished writes thrown away
    orphans_removed: int = 0   # leftovers of a finished message (fs: a .env without its .msg)
    corrupt: tuple[str, ...] = ()  # names moved aside to corrupt/ (never deleted)
    in_use: int = 0            # files skipped because a live writer holds them


class MessageWriter(Protocol):
    """One message being received. Use it from one task at a time.

    Life: `write`* then `commit` or `abort`. After a failed `write` or `commit`
    every further `write`/`commit` raises the same `SMTPError`; `abort` is
    always safe and idempotent, and a no-op after a successful commit.
    """

    @property
    def queue_id(self) -> str:
        """Known at creation, so the Received: header can name it."""
        ...

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    async def write(self, data: bytes) -> None:
        """Append `data`. Raises `SMTPError` (452 4.3.1 when storage is full)."""
        ...

    async def commit(self, envelope: Envelope, info: SessionFacts, *, held: bool = False,
                     hold_reason: str = "") -> str:
        """Make the message durable and return its queue id.

        `held`: store it held (not delivered until `QueueStore.release`), with
        `hold_reason` for the operator; the same one durable write either way.
        When it returns, the message and its envelope are on stable storage
        (files and directories synced), so the caller may answer 250. On
        failure raises `SMTPError` (452 4.3.1 or 451 4.3.0) and leaves nothing
        in the queue.
        """
        ...

    async def abort(self) -> None:
        """Throw away what was written; idempotent; safe after a failed commit."""
        ...


class Lease(Protocol):
    """The right to deliver one message and change its state, until released."""

    @property
    def queue_id(self) -> str: ...

    def release(self) -> None:
        """Give the message back; idempotent."""
        ...


@runtime_checkable
class QueueStore(Protocol):
    """The one writer of durable queue state (DESIGN 1.2)."""

    def new_message(self) -> MessageWriter: ...

    async def recover(self) -> RecoveryReport:
        """At start-up: drop unfinished writes, set corrupt records aside, count."""
        ...

    def list_messages(self) -> Iterator[QueuedMessage]:
        """Every valid queued message, oldest first (skips unreadable records)."""
        ...

    def list_ids(self) -> list[str]:
        """The ids of queued messages, oldest first, without reading any record (cheap)."""
        ...

    def get(self, queue_id: str) -> QueuedMessage | None: ...

    def open_message(self, queue_id: str) -> BinaryIO:
        """The stored message bytes, Received: header included. Close it after use."""
        ...

    async def update_recipients(
        self, queue_id: str, updates: Mapping[int, RecipientState]
    ) -> QueuedMessage:
        """Replace the state of recipients by index, atomically and durably.

        The caller must own the message (the delivery lease); the store only
        serializes updates made through this one store object.
        """
        ...

    async def hold(self, queue_id: str, reason: str = "") -> QueuedMessage:
        """Hold a message, durably: no delivery (nor expiry, nor bounce) until released.

        Holding a held message only replaces its reason. Like `update_recipients`,
        the caller should hold the delivery lease, so that no attempt under way
        overwrites the record (a runner re-reads it under the lease and skips it).
        """
        ...

    async def release(self, queue_id: str) -> QueuedMessage:
        """Release a held message, durably, for delivery on its recipients' schedule.

        A message that is not held is returned unchanged (nothing is written).
        Recipients' states are left alone; a message held past the queue
        lifetime gets one attempt, and a temporary failure then expires it.
        """
        ...

    async def remove(self, queue_id: str) -> bool:
        """Delete a message durably; False when it was not there."""
        ...

    def lease(self, queue_id: str) -> Lease | None:
        """Take the delivery lease of a message without waiting.

        None when another holder (any task or process) has it, or the message
        is gone. Cheap: no fsync. The holder reads the message again after
        taking it (another runner may have changed it just before).
        """
        ...

    def free_space_ok(self, needed: int) -> bool:
        """Room for `needed` more bytes above the configured minimum (cheap, cached)."""
        ...

    def close(self) -> None:
        """Release threads and descriptors. Idempotent."""
        ...
