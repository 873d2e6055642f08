"""Queued-message data and the versioned envelope record format (pure, no I/O).

Owns `QueuedMessage`, `RecipientState`, `RecipientStatus`, `SubmissionInfo`,
the text form of an envelope record (`format_record` / `parse_record`) and the
pure state change `apply_updates`. Every backend stores these; none of them
may invent its own field meaning. Raises `RecordError` (a `ValueError`) for a
record that is not exactly what `format_record` writes; `ValueError` for a
bad update. Does no I/O.

Record format, version 1 (ASCII: JSON escapes everything else)::

    goniec-envelope 1
    {"id": ..., "created": ..., "sender": ..., "params": {...}, "session": ..., ...}
    {"rcpt": "a@example.org", "notify": null, "orcpt": null, "status": "pending", ...}
    ...one line per recipient...
    end 2

The first line names the version; a reader refuses versions it does not know.
Optional keys are written only when they differ from the default (recipient
`"notified": ["delay"]`; head `"held": true` with `"hold_reason"`), so older
readers, which ignore unknown keys, still read newer records, and newer
readers read older ones. (An older *writer* drops keys it does not know when
it rewrites a record: a held message updated by an older runner is released.)
The last line, `end <number of recipient lines>`, is written last, so a record
cut short by a crash (or anything else) never parses.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from goniec.model import Envelope, MailParams, Recipient

from . import ids

MAGIC = "goniec-envelope"
VERSION = 1
_END = "end"


class RecordError(ValueError):
    """An envelope record is truncated, of an unknown version, or malformed."""


class RecipientStatus(enum.StrEnum):
    PENDING = "pending"      # not tried yet
    DEFERRED = "deferred"    # tried, failed temporarily; retry at next_attempt
    DELIVERED = "delivered"  # final
    FAILED = "failed"        # final: permanent failure (bounce) or gave up

    @property
    def is_final(self) -> bool:
        return self in (RecipientStatus.DELIVERED, RecipientStatus.FAILED)


@dataclass(frozen=True, slots=True)
class RecipientState:
    """One recipient of a queued message and its own delivery state."""

    recipient: Recipient
    status: RecipientStatus = RecipientStatus.PENDING
    attempts: int = 0
    next_attempt: float = 0.0  # epoch seconds; due when <= now (0: never tried, due)
    last_reply: str = ""       # the last reply or error text, for DSNs and the CLI
    delay_notified: bool = False  # a delay DSN went out for it (RFC 3464 "delayed"): once only

    @property
    def address(self) -> str:
        return self.recipient.address


class SessionFacts(Protocol):
    """What `commit` reads from the client session; `model.SessionInfo` fits."""

    @property
    def session_id(self) -> str: ...
    @property
    def peer_ip(self) -> str: ...
    @property
    def helo(self) -> str | None: ...
    @property
    def auth_user(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SubmissionInfo:
    """The session facts a queued message keeps (for logs, DSNs and the CLI)."""

    session_id: str = ""
    peer_ip: str = ""
    helo: str | None = None
    auth_user: str | None = None

    @classmethod
    def of(cls, facts: SessionFacts) -> SubmissionInfo:
        if isinstance(facts, SubmissionInfo):
            return facts
        return cls(facts.session_id, facts.peer_ip, facts.helo, facts.auth_user)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message in the queue: envelope, per-recipient state and message size.

    `recipients[i].recipient == envelope.recipients[i]` always holds; a
    recipient is addressed by its index `i` in updates.
    """

    id: str
    created: float
    envelope: Envelope
    recipients: tuple[RecipientState, ...]
    info: SubmissionInfo
    size: int  # bytes of the stored message file
    # Held: kept in the queue, never delivered, expired or bounced, until released
    # (DMARC quarantine, an operator). Message-wide; the reason is for the CLI and logs.
    held: bool = False
    hold_reason: str = ""  # always "" when not held

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def is_done(self) -> bool:
        """Every recipient has a final status: the message may be removed."""
        return all(r.status.is_final for r in self.recipients)


def new_message(queue_id: str, created: float, envelope: Envelope, info: SessionFacts,
                size: int, *, held: bool = False, hold_reason: str = "") -> QueuedMessage:
    """The record of a freshly accepted message: every recipient pending, due now
    (unless `held`)."""
    if not envelope.recipients:
        raise ValueError("a message needs at least one recipient")
    states = tuple(RecipientState(r) for r in envelope.recipients)
    msg = QueuedMessage(queue_id, created, envelope, states, SubmissionInfo.of(info), size)
    return with_hold(msg, held, hold_reason)


def with_hold(msg: QueuedMessage, held: bool, reason: str = "") -> QueuedMessage:
    """`msg` held (with `reason`) or released; a released message keeps no reason."""
    return dataclasses.replace(msg, held=held, hold_reason=reason if held else "")


def apply_updates(msg: QueuedMessage, updates: Mapping[int, RecipientState]) -> QueuedMessage:
    """`msg` with `recipients[i]` replaced by `updates[i]`.

    A recipient's identity (address, NOTIFY, ORCPT) never changes; only its state.
    """
    states = list(msg.recipients)
    for i, new in updates.items():
        if not 0 <= i < len(states):
            raise ValueError(f"msg={msg.id}: no recipient #{i}")
        if new.recipient != states[i].recipient:
            raise ValueError(f"msg={msg.id}: recipient #{i} is {states[i].address!r}, "
                             f"not {new.address!r}")
        states[i] = new
    return dataclasses.replace(msg, recipients=tuple(states))


# -- text form ------------------------------------------------------------------------

def _dump(obj: Mapping[str, Any]) -> str:
    # ensure_ascii: the record is pure ASCII, whatever SMTPUTF8 brought in.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def format_record(msg: QueuedMessage) -> bytes:
    p = msg.envelope.params
    head: dict[str, Any] = {
        "id": msg.id, "created": msg.created, "sender": msg.envelope.sender,
        "params": {"size": p.size, "body": p.body, "smtputf8": p.smtputf8, "ret": p.ret,
                   "envid": p.envid, "auth": p.auth},
        "session": msg.info.session_id, "peer_ip": msg.info.peer_ip, "helo": msg.info.helo,
        "auth_user": msg.info.auth_user, "size": msg.size,
    }
    if msg.held:  # optional keys: absent unless held, so older readers still read it
        head["held"] = True
        if msg.hold_reason:
            head["hold_reason"] = msg.hold_reason
    lines = [f"{MAGIC} {VERSION}", _dump(head)]
    for st in msg.recipients:
        r = st.recipient
        line: dict[str, Any] = {
            "rcpt": r.address,
            "notify": None if r.notify is None else sorted(r.notify),
            "orcpt": r.orcpt, "status": st.status.value, "attempts": st.attempts,
            "next_attempt": st.next_attempt, "last_reply": st.last_reply,
        }
        if st.delay_notified:
            line["notified"] = ["delay"]
        lines.append(_dump(line))
    lines.append(f"{_END} {len(msg.recipients)}")
    return ("\n".join(lines) + "\n").encode("ascii")


class _Fields:
    """Typed access to one JSON object of a record, with errors that name the line."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: not a JSON object")
        self.obj: dict[str, Any] = obj
        self.where = where

    def get(self, key: str, *types: type) -> Any:
        if key not in self.obj:
            raise RecordError(f"{_where_key(self.where, key)}: missing")
        value = self.obj[key]
        # bool is an int subclass: never accept True where a number is meant.
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise RecordError(f"{_where_key(self.where, key)}: bad type {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        return str(self.get(key, str))

    def opt_text(self, key: str) -> str | None:
        value = self.get(key, str, type(None))
        return None if value is None else str(value)

    def number(self, key: str) -> float:
        return float(self.get(key, int, float))

    def count(self, key: str) -> int:
        value = int(self.get(key, int))
        if value < 0:
            raise RecordError(f"{_where_key(self.where, key)}: negative")
        return value


def _where_key(where: str, key: str) -> str:
    return f"{where} {key!r}"


def parse_record(data: bytes) -> QueuedMessage:
    """Parse what `format_record` wrote; raise `RecordError` for anything else."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise RecordError(f"not ASCII at byte {exc.start}") from None
    if not text.endswith("\n"):
        raise RecordError("truncated: no end marker")
    lines = text[:-1].split("\n")
    magic, _, version = lines[0].partition(" ")
    if magic != MAGIC:
        raise RecordError("not an envelope record")
    if version != str(VERSION):
        raise RecordError(f"unsupported record version {version!r}")
    end, _, count = lines[-1].partition(" ")
    if len(lines) < 4 or end != _END:
        raise RecordError("truncated: no end marker")
    rcpt_lines = lines[2:-1]
    if count != str(len(rcpt_lines)):
        raise RecordError(f"end marker counts {count!r} recipients, found {len(rcpt_lines)}")
    head = _Fields(_load(lines[1], "line 2"), "line 2")
    queue_id = head.text("id")
    if not ids.is_valid(queue_id):
        raise RecordError(f"bad queue id {queue_id!r}")
    pf = _Fields(head.get("params", dict), "line 2 params")
    declared = pf.get("size", int, type(None))
    params = MailParams(
        size=None if declared is None else int(declared), body=pf.opt_text("body"),
        smtputf8=bool(pf.get("smtputf8", bool)), ret=pf.opt_text("ret"),
        envid=pf.opt_text("envid"), auth=pf.opt_text("auth"),
    )
    states = tuple(_parse_rcpt(line, f"line {n}") for n, line in enumerate(rcpt_lines, 3))
    envelope = Envelope(head.text("sender"), tuple(s.recipient for s in states), params)
    info = SubmissionInfo(head.text("session"), head.text("peer_ip"), head.opt_text("helo"),
                          head.opt_text("auth_user"))
    held = bool(head.get("held", bool)) if "held" in head.obj else False  # optional keys
    reason = head.text("hold_reason") if held and "hold_reason" in head.obj else ""
    return QueuedMessage(queue_id, head.number("created"), envelope, states, info,
                         head.count("size"), held, reason)


def _load(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise RecordError(f"{where}: bad JSON: {exc}") from None


def _parse_rcpt(line: str, where: str) -> RecipientState:
    f = _Fields(_load(line, where), where)
    notify_raw = f.get("notify", list, type(None))
    notify: frozenset[str] | None = None
    if notify_raw is not None:
        if not all(isinstance(w, str) for w in notify_raw):
            raise RecordError(f"{_where_key(where, 'notify')}: not a list of words")
        notify = frozenset(notify_raw)
    try:
        status = RecipientStatus(f.text("status"))
    except ValueError:
        raise RecordError(f"{_where_key(where, 'status')}: unknown {f.obj['status']!r}") from None
    notified = f.obj.get("notified", [])  # optional key: absent in older records
    if not isinstance(notified, list) or not all(isinstance(w, str) for w in notified):
        raise RecordError(f"{_where_key(where, 'notified')}: not a list of words")
    return RecipientState(
        Recipient(f.text("rcpt"), notify, f.opt_text("orcpt")), status, f.count("attempts"),
        f.number("next_attempt"), f.text("last_reply"), "delay" in notified,
    )
