"""The admin operations behind the CLI, the web manager and /api/v1: the `Admin` facade.

Owns turning stores and the running server into what an operator sees and
does: queue rows, the user store for a config, and `Admin`, the one
implementation of every admin action (status, sessions, pause/resume,
reload, stop, queue actions, metrics, log search, users, admin users, API
tokens). Never writes the queue itself (DESIGN 1.2: queue actions go
through `admin.queue_ops` and the `goniec.queue` API) and never names a
queue backend: the caller passes the store in. Raises `ConfigError` for an
unreadable users file, `ServerDown` for a live action without a server.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher

from goniec import __version__
from goniec.admin.contract import ActionResult, QueueFilter, SessionRow, Status
from goniec.admin.tokens import TokenRow, TokenStore
from goniec.admin.users import UserError, UserStore
from goniec.config.load import load_config
from goniec.config.schema import Config
from goniec.obs.log import log_event

if TYPE_CHECKING:
    from goniec.admin.message_view import MessageView
    from goniec.admin.runtime import Runtime
    from goniec.queue.api import QueuedMessage, QueueStore

log = logging.getLogger("goniec.admin")


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
# Every admin surface calls these and nothing else: web pages and /api/v1
# (goniec.admin.web), and the CLI through the control socket (goniec.admin.control).


COUNTS_TTL = 5.0  # seconds the queue counts of status and /metrics are reused


class ServerDown(RuntimeError):
    """A live action was asked of an Admin built without a running server."""

    def __init__(self, what: str = "this") -> None:
        super().__init__(f"the server is not running: {what} needs a running goniec server")


class Admin:
    """The one implementation of every admin action (DESIGN.md: admin.service).

    Built by app.py inside the running server (with its live `runtime`), or by
    the CLI with `runtime=None` when the server is down (then the queue works
    on the spool directly; live actions raise `ServerDown`). All methods are
    async; blocking file work runs in threads. Errors: `ServerDown`,
    `MessageNotFound` (queue_show), `ValueError` (bad action), `UserError` /
    `TokenError` (bad request), `ConfigError` (unreadable file, bad config on
    reload).
    """

    def __init__(self, config: Config, source: Path | None, store: QueueStore,
                 runtime: Runtime | None = None, *, hasher: PasswordHasher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config  # the config the server started with (reload: see `reload`)
        self.source = source  # the TOML file, None for built-in defaults
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self._users = UserStore(config.users_path, hasher)
        self._admins = UserStore(_admin_path(config, "users_file"), hasher)
        self._tokens = TokenStore(_admin_path(config, "tokens_file"))
        # (when, counts): reading every record of a big queue takes seconds, and the
        # overview and every /metrics scrape ask; an operator's action clears it.
        self._counts: tuple[float, dict[str, Any]] | None = None

    def _live(self, what: str) -> Runtime:
        if self.runtime is None:
            raise ServerDown(what)
        return self.runtime

    # status and control -------------------------------------------------------
    async def status(self) -> Status:
        """The overview: state, uptime, listeners, sessions, queue, the last hour."""
        now = self.clock()
        counts = await self._queue_counts_cached(now)
        rt = self.runtime
        if rt is None:
            return Status(state="stopped", version=__version__,
                          hostname=self.config.server.hostname, pid=0, started="", uptime=0.0,
                          workers=self.config.worker_count, **counts)
        sessions = sum(len(rows) for _, rows in await rt.collect("sessions"))
        missing = dict(rt.unreachable)
        snapshots = [snap for _, snap in await rt.collect("metrics") if snap]
        missing.update(rt.unreachable)
        totals, per_minute = _last_hour(snapshots, now)
        return Status(state="paused" if rt.pause.paused else "running", version=__version__,
                      hostname=self.config.server.hostname, pid=rt.main_pid,
                      started=iso_time(rt.started), uptime=round(rt.uptime, 3),
                      workers=rt.workers, listeners=list(rt.listeners), sessions=sessions,
                      last_hour=totals, per_minute=per_minute,
                      workers_unreachable={str(i): why for i, why in sorted(missing.items())},
                      **counts)

    async def _queue_counts_cached(self, now: float) -> dict[str, Any]:
        cached = self._counts
        if cached is not None and 0 <= now - cached[0] < COUNTS_TTL:
            return cached[1]
        counts = await asyncio.to_thread(self._queue_counts, now)
        self._counts = (now, counts)
        return counts

    def _queue_counts(self, now: float) -> dict[str, Any]:
        from goniec.admin.queue_ops import message_state

        messages = deferred = held = 0
        oldest = now
        for msg in self.store.list_messages():
            messages += 1
            state = message_state(msg, now)
            deferred += state == "deferred"
            held += state == "held"
            oldest = min(oldest, msg.created)
        return {"queue_messages": messages, "queue_deferred": deferred, "queue_held": held,
                "queue_oldest_age": round(max(0.0, now - oldest), 3)}

    async def sessions(self) -> list[SessionRow]:
        """Every worker's live SMTP sessions, oldest first."""
        rt = self._live("listing sessions")
        rows: list[SessionRow] = []
        for _, part in await rt.collect("sessions"):
            rows += [r if isinstance(r, SessionRow) else SessionRow.from_json(r) for r in part]
        rows.sort(key=lambda r: r.started)
        return rows

    async def disconnect(self, session_id: str) -> bool:
        """Close one session (421 4.3.2 to the client); False when no such session."""
        rt = self._live("disconnecting a session")
        return any(bool(found) for _, found in
                   await rt.collect("disconnect", {"id": session_id}))

    async def pause(self) -> None:
        """Stop accepting new mail (new connections get 421 4.3.2); delivery goes on."""
        if self._live("pause").pause.set(True):
            log_event(log, "paused", by="admin")

    async def resume(self) -> None:
        if self._live("resume").pause.set(False):
            log_event(log, "resumed", by="admin")

    async def reload(self) -> None:
        """Re-read the config file (as SIGHUP); ConfigError, server untouched, when it is bad."""
        rt = self._live("reload")
        self.config = await asyncio.to_thread(load_config, self.source)
        os.kill(rt.main_pid, signal.SIGHUP)
        log_event(log, "reload_requested", by="admin", pid=rt.main_pid)

    async def stop(self) -> None:
        """Graceful stop: finish sessions in flight, then exit (as SIGTERM)."""
        rt = self._live("stop")
        log_event(log, "stop_requested", by="admin", pid=rt.main_pid)
        os.kill(rt.main_pid, signal.SIGTERM)

    # queue ----------------------------------------------------------------------
    async def queue_list(self, flt: QueueFilter) -> list[QueueRow]:
        from goniec.admin import queue_ops

        return await asyncio.to_thread(queue_ops.list_rows, self.store, flt, self.clock())

    async def queue_show(self, queue_id: str) -> MessageView:
        """One message with its per-message trail; MessageNotFound when it is not queued."""
        from goniec.admin import message_view

        trail = await asyncio.to_thread(message_trail, self.config, queue_id)
        return await asyncio.to_thread(message_view.show, self.store, queue_id, self.clock(),
                                       trail)

    async def queue_action(self, action: str, flt: QueueFilter,
                           progress: Callable[[int, int], None] | None = None) -> ActionResult:
        """retry, hold, release, delete or bounce every message `flt` selects."""
        from goniec.admin import queue_ops

        report = queue_ops.ReportSettings(self.config.server.hostname,
                                          self.config.delivery.ndr_copy_to)
        # queue_ops logs each message and the outcome: one line per event, not two.
        result = await queue_ops.apply(self.store, action, flt, self.clock(), progress=progress,
                                       report=report)
        self._counts = None  # the overview after an action shows its effect
        if action in ("retry", "release") and result.done and self.runtime is not None:
            # Every worker's runner keeps its own schedule: tell them all "due now".
            await self.runtime.collect("reschedule", {"ids": result.done})
        return result

    # metrics and logs -----------------------------------------------------------
    async def metrics_text(self) -> bytes:
        """Prometheus text: every worker's counters merged, plus the queue gauges."""
        from goniec.obs import metrics

        rt = self._live("metrics")
        snapshots = [snap for _, snap in await rt.collect("metrics") if snap]
        counts = await self._queue_counts_cached(self.clock())
        gauges = {  # short names: merge exposes them as goniec_<name>
            "queue_messages": float(counts["queue_messages"]),
            "queue_deferred": float(counts["queue_deferred"]),
            "queue_held": float(counts["queue_held"]),
            "queue_oldest_age_seconds": float(counts["queue_oldest_age"]),
        }
        text: bytes = metrics.merge(snapshots, gauges)
        return text

    async def log_search(self, *, session: str = "", msg: str = "", address: str = "",
                         text: str = "", limit: int = 200) -> list[Any]:
        """Entries that match every given field, newest first: lines of the server's
        log file, and with `msg` also that message's trail (logger "trail"), which
        outlives the message in the queue. ValueError when there is nothing to search
        (the log goes to stderr and no message id was given)."""
        from goniec.obs.logsearch import search_log

        path = self.config.log_path
        if path is None and not msg:
            raise ValueError("the log goes to stderr: set server.log_file to search it here,"
                             " or give a message id to see its trail")
        found: list[Any] = []
        if path is not None:
            found = await asyncio.to_thread(search_log, path, session=session, msg=msg,
                                            address=address, text=text, limit=limit)
        if msg and not (session or address or text):
            steps = await self.trail(msg, limit)
            found = sorted(found + [_trail_entry(e) for e in steps],
                           key=lambda e: str(e.get("time", "")), reverse=True)[:limit]
        return found

    async def trail(self, queue_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """The per-message trail of `queue_id` (received, each attempt, delivered,
        deferred, bounced, operators' actions), oldest first; also for a message that
        has left the queue, for as long as `[log] trail_days` keeps it."""
        found: list[dict[str, Any]] = await asyncio.to_thread(message_trail, self.config, queue_id,
                                                               limit)
        return found

    # SMTP users and admin users ---------------------------------------------------
    async def users_list(self) -> list[str]:
        return await asyncio.to_thread(self._users.list)

    async def user_add(self, name: str, password: str) -> None:
        await asyncio.to_thread(self._users.add, name, password)
        log_event(log, "user_added", user=name)

    async def user_set_password(self, name: str, password: str) -> None:
        await asyncio.to_thread(self._set_password, self._users, name, password)
        log_event(log, "user_password_set", user=name)

    async def user_delete(self, name: str) -> None:
        await asyncio.to_thread(self._users.delete, name)
        log_event(log, "user_deleted", user=name)

    async def admin_users_list(self) -> list[str]:
        return await asyncio.to_thread(self._admins.list)

    async def admin_user_add(self, name: str, password: str) -> None:
        await asyncio.to_thread(self._admins.add, name, password)
        log_event(log, "admin_user_added", user=name)

    async def admin_user_set_password(self, name: str, password: str) -> None:
        await asyncio.to_thread(self._set_password, self._admins, name, password)
        log_event(log, "admin_user_password_set", user=name)

    async def admin_user_delete(self, name: str) -> None:
        await asyncio.to_thread(self._admins.delete, name)
        log_event(log, "admin_user_deleted", user=name)

    async def admin_user_check(self, name: str, password: str) -> bool:
        """The manager's login check (argon2, in a thread; same cost for unknown names)."""
        return await asyncio.to_thread(self._admins.verify, name, password)

    @staticmethod
    def _set_password(store: UserStore, name: str, password: str) -> None:
        if name not in store:
            raise UserError(f"no such user: {name!r}")
        store.add(name, password, replace=True)

    # API tokens ---------------------------------------------------------------------
    async def token_add(self, name: str) -> str:
        """Make an API token; returns its secret, shown once (only a hash is kept)."""
        secret = await asyncio.to_thread(self._tokens.add, name)
        log_event(log, "token_added", token=name)
        return secret

    async def token_list(self) -> list[TokenRow]:
        return await asyncio.to_thread(self._tokens.list)

    async def token_delete(self, name: str) -> None:
        await asyncio.to_thread(self._tokens.delete, name)
        log_event(log, "token_deleted", token=name)

    async def token_check(self, secret: str) -> str | None:
        """The name of the token with this secret, or None."""
        return await asyncio.to_thread(self._tokens.check, secret)


def _admin_path(config: Config, key: str) -> Path:
    path = getattr(config.admin, key)
    assert path is not None  # filled in from data_dir by Config
    return Path(path)


def _last_hour(snapshots: list[dict[str, Any]], now: float
               ) -> tuple[dict[str, int], dict[str, list[int]]]:
    try:
        from goniec.obs.metrics import last_hour
    except ImportError:
        return {}, {}
    totals, per_minute = last_hour(snapshots, now)
    return dict(totals), {k: list(v) for k, v in per_minute.items()}


def message_trail(config: Config, queue_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The per-message trail of `queue_id`, oldest first ([] when `[log] trail = false`).
    Blocking: it reads the trail files (the CLI calls it directly, server up or down)."""
    from goniec.obs.log import trail_from_config

    trail = trail_from_config(config)  # the server's own when it runs here; else read only
    return [] if trail is None else trail.search(queue_id, limit)


def _trail_entry(step: dict[str, Any]) -> dict[str, Any]:
    """A trail line in the shape of a log search result."""
    fields = {k: v for k, v in step.items() if k not in ("time", "event")}
    return {"time": step.get("time", ""), "level": "info", "logger": "trail",
            "event": step.get("event", ""), "fields": fields}
