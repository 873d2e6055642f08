"""The admin operations behind the CLI (and later the web admin).

Owns turning stores into what an operator sees: the user store for a config,
and queue listings as plain rows (JSON-ready). Never writes the queue itself
(DESIGN 1.2: only `goniec.queue` does) and never names a queue backend: the
caller passes the store in. Raises `ConfigError` for an unreadable users file.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher

from goniec.admin.users import UserStore
from goniec.config.schema import Config

if TYPE_CHECKING:
    from goniec.queue.api import QueuedMessage


def open_users(config: Config, hasher: PasswordHasher | None = None) -> UserStore:
    return UserStore(config.users_path, hasher)


def iso_time(epoch: float) -> str:
    """Seconds since the epoch as "2026-11-26T16:00:00Z" (UTC)."""
    t = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RecipientRow:
    address: str
    status: str
    attempts: int
    next_attempt: str | None  # ISO time when deferred, else None
    last_reply: str


@dataclass(frozen=True, slots=True)
class QueueRow:
    id: str
    created: str
    size: int
    sender: str  # "" for the null reverse-path <>
    recipients: tuple[RecipientRow, ...]
    held: bool = False  # kept in the queue, not delivered, until released
    hold_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def queue_rows(messages: Iterable[QueuedMessage]) -> list[QueueRow]:
    """Rows for `goniec queue list`, in the store's order (oldest first)."""
    rows = []
    for msg in messages:
        rcpts = tuple(
            RecipientRow(
                address=r.address,
                status=str(r.status),
                attempts=r.attempts,
                next_attempt=iso_time(r.next_attempt) if r.next_attempt else None,
                last_reply=r.last_reply,
            )
            for r in msg.recipients
        )
        rows.append(QueueRow(msg.id, iso_time(msg.created), msg.size, msg.envelope.sender, rcpts,
                             msg.held, msg.hold_reason))
    return rows


# --------------------------------------------------------------------------- the facade
# CONTRACT (being implemented this session; see the method docstrings). Every
# admin surface calls these and nothing else: web pages and /api/v1
# (goniec.admin.web), and the CLI through the control socket (goniec.admin.control).


class Admin:
    """The one implementation of every admin action (DESIGN.md: admin.service).

    Built by app.py inside the running server (with its live `runtime`), or by
    the CLI with `runtime=None` when the server is down (then only the queue
    listing and showing work; live actions raise `ServerDown`).
    All methods are async; blocking file work runs in threads.
    """

    # status and control -------------------------------------------------------
    async def status(self) -> Any:  # contract.Status
        raise NotImplementedError

    async def sessions(self) -> Any:  # list[contract.SessionRow], every worker's
        raise NotImplementedError

    async def disconnect(self, session_id: str) -> bool:
        """Close one session (421 4.3.2 to the client); False when no such session."""
        raise NotImplementedError

    async def pause(self) -> None:
        """Stop accepting new mail (new connections get 421 4.3.2); delivery goes on."""
        raise NotImplementedError

    async def resume(self) -> None:
        raise NotImplementedError

    async def reload(self) -> None:
        """Re-read the config file (as SIGHUP)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Graceful stop: finish sessions in flight, then exit (as SIGTERM)."""
        raise NotImplementedError

    # queue ----------------------------------------------------------------------
    async def queue_list(self, flt: Any) -> list[QueueRow]:  # flt: contract.QueueFilter
        raise NotImplementedError

    async def queue_show(self, queue_id: str) -> Any:  # a MessageView (admin.queue_ops)
        raise NotImplementedError

    async def queue_action(self, action: str, flt: Any) -> Any:  # -> contract.ActionResult
        raise NotImplementedError
