"""The shapes every admin surface shares: rows and results of `goniec.admin.service.Admin`.

Owns the plain, JSON-ready data types that the one admin implementation
returns to its three faces (web pages, /api/v1, the CLI over the control
socket): a live session, the server's status, the result of an action on
queued messages, a queue filter. No I/O here; `to_json()` gives what the API
and `--json` print, and `from_json()` what the CLI reads back from the
control socket, so the two never drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Self

QueueAction = Literal["retry", "hold", "release", "delete", "bounce"]
QUEUE_ACTIONS: tuple[QueueAction, ...] = ("retry", "hold", "release", "delete", "bounce")

# A message's state for filtering: "held" (kept by an operator or by DMARC
# quarantine), "deferred" (some recipient waits for a retry after a failure),
# "active" (due now, or in delivery), "done" (every recipient finished, the
# reports still to send).
MessageState = Literal["held", "deferred", "active", "done"]


class _Row:
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class SessionRow(_Row):
    """One live SMTP session, in whichever worker process it runs."""

    id: str  # the session= id of the log lines
    worker: int  # index of the worker process (0 with one process)
    listener: str
    client: str  # "ip:port" ("[v6]:port")
    helo: str  # "" before HELO/EHLO
    user: str  # authenticated login, "" when none
    tls: str  # "TLSv1.3" etc., "" in plain text
    state: str  # "greeting", "idle", "mail", "data", "closing"
    started: str  # ISO UTC time
    duration: float  # seconds since connect
    messages: int  # accepted in this session


@dataclass(frozen=True, slots=True)
class ListenerRow(_Row):
    name: str
    address: str  # "host:port" as bound
    tls: str
    auth: str


@dataclass(frozen=True, slots=True)
class Status(_Row):
    state: Literal["running", "paused", "stopped"]
    version: str
    hostname: str
    pid: int  # of the main process (the one in the pid file); 0 when stopped
    started: str  # ISO UTC time; "" when stopped
    uptime: float  # seconds
    workers: int
    listeners: list[ListenerRow] = field(default_factory=list)
    sessions: int = 0
    queue_messages: int = 0
    queue_deferred: int = 0
    queue_held: int = 0
    queue_oldest_age: float = 0.0  # seconds; 0 when empty
    # The last hour, as totals and as 60 per-minute counts (oldest first) for charts.
    last_hour: dict[str, int] = field(default_factory=dict)  # received, delivered, deferred, failed
    per_minute: dict[str, list[int]] = field(default_factory=dict)
    # Workers that did not answer this status request ("1": why): their sessions and
    # counts are missing above. Empty when all answered.
    workers_unreachable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        data = dict(data)
        data["listeners"] = [ListenerRow.from_json(x) for x in data.get("listeners", [])]
        return super(Status, cls).from_json(data)


@dataclass(frozen=True, slots=True)
class QueueFilter(_Row):
    """Which queued messages an operator means; every field set must match (AND).

    Text fields match case-insensitively as substrings; `domain` matches a
    recipient's domain or one of its parent domains exactly.
    """

    ids: tuple[str, ...] = ()  # exact queue ids; empty = any
    sender: str = ""
    recipient: str = ""
    domain: str = ""
    state: MessageState | Literal[""] = ""
    min_age: float = 0.0  # seconds; messages at least this old
    max_age: float = 0.0  # seconds; 0 = no upper bound

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        data = dict(data)
        data["ids"] = tuple(data.get("ids", ()))
        return super(QueueFilter, cls).from_json(data)

    @property
    def is_empty(self) -> bool:
        return self == QueueFilter()


@dataclass(frozen=True, slots=True)
class ActionResult(_Row):
    """What a queue action did: ids done, and ids skipped with the reason for each."""

    action: str
    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # id -> why (e.g. "in delivery, try again")
