"""The admin's queue operations: select queued messages and act on them.

Owns the one implementation of `goniec queue ...`, the web UI's queue page and
/api/v1's queue actions: `message_state`, `matches` (a `contract.QueueFilter`),
`select`, `list_rows`, and `apply` (retry, hold, release, delete, bounce).
Every change goes through the `QueueStore` API under the message's delivery
lease (DESIGN 1.2: only `goniec.queue` writes queue state; never a spool file
here), so an action never races a delivery attempt: a leased message is
skipped with a reason, as is one that does not fit the action. A bounce queues
its RFC 3464 report with `delivery.reports.queue_report`, the delivery
worker's own way. Raises `ValueError` for an
unknown action (a caller bug); per-message storage failures become skip
reasons, so one broken record never stops a bulk action.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from goniec.admin.contract import QUEUE_ACTIONS, ActionResult, MessageState, QueueFilter
from goniec.admin.service import QueueRow, queue_rows
from goniec.delivery import bounce
from goniec.delivery.reports import queue_report
from goniec.delivery.schedule import Report, wants
from goniec.errors import Reply, SMTPError
from goniec.model import NOTIFY_FAILURE
from goniec.obs import trail
from goniec.queue.api import (
    MessageNotFound,
    QueuedMessage,
    QueueStore,
)

log = logging.getLogger("goniec.admin")

__all__ = [
    "BUSY", "DEFAULT_REPORT", "GONE", "HOLD_REASON", "NOT_QUEUED", "NO_MATCH", "RETURNED",
    "ReportConfig", "ReportSettings", "apply", "list_rows", "matches", "message_state", "select",
]

HOLD_REASON = "held by administrator"
# RFC 3463 3.1: X.0.0 "other undefined status", permanent (5.X.X): the operator
# ended delivery; nothing about the recipient's address is known to be wrong.
RETURNED = Reply(550, "5.0.0", "message returned by the administrator")
BUSY = "in delivery now, try again"
GONE = "no longer in the queue"
NOT_QUEUED = "not in the queue"
NO_MATCH = "does not match the filter"

Progress = Callable[[int, int], None]


class ReportConfig(Protocol):
    """Who signs a report; `delivery.worker.WorkerSettings` fits, so the admin can pass
    the very settings the delivery runner uses."""

    @property
    def hostname(self) -> str: ...

    @property
    def ndr_copy_to(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ReportSettings:
    hostname: str = "localhost"  # Reporting-MTA and MAILER-DAEMON@ of the report
    ndr_copy_to: str = ""  # a copy of every failure report (IIS), "" for none


DEFAULT_REPORT = ReportSettings()


# -- selecting ---------------------------------------------------------------------------

def message_state(msg: QueuedMessage, now: float) -> MessageState:
    """"held", "done" (every recipient final), "active" (a recipient is due now, or in
    delivery), else "deferred" (every open recipient waits for a retry)."""
    if msg.held:
        return "held"
    open_ = [r for r in msg.recipients if not r.status.is_final]
    if not open_:
        return "done"
    if any(r.next_attempt <= now for r in open_):
        return "active"
    return "deferred"


def _domain_matches(address: str, domain: str) -> bool:
    got = address.rpartition("@")[2].casefold().rstrip(".")
    return got == domain or got.endswith("." + domain)


def matches(flt: QueueFilter, msg: QueuedMessage, now: float) -> bool:
    """Does `msg` fit every field set in `flt` (see `QueueFilter`)?

    `sender` "<>" means the null reverse-path only (reports, RFC 5321 4.5.5).
    """
    if flt.ids and msg.id not in flt.ids:
        return False
    if flt.sender:
        if flt.sender.strip() == "<>":
            if msg.sender:
                return False
        elif flt.sender.casefold() not in msg.sender.casefold():
            return False
    if flt.recipient:
        needle = flt.recipient.casefold()
        if not any(needle in r.address.casefold() for r in msg.recipients):
            return False
    if flt.domain:
        domain = flt.domain.strip().lstrip("@.").rstrip(".").casefold()
        if not any(_domain_matches(r.address, domain) for r in msg.recipients):
            return False
    if flt.state and message_state(msg, now) != flt.state:
        return False
    age = now - msg.created
    if flt.min_age > 0 and age < flt.min_age:
        return False
    return not (flt.max_age > 0 and age > flt.max_age)


def _read(store: QueueStore, queue_ids: Iterable[str]) -> Iterable[QueuedMessage]:
    for queue_id in queue_ids:
        try:
            msg = store.get(queue_id)  # None: removed meanwhile, or an unreadable record
        except OSError as exc:
            log.warning("admin.unreadable msg=%s error=%r", queue_id, exc)
            continue
        if msg is not None:
            yield msg


def select(store: QueueStore, flt: QueueFilter, now: float) -> list[QueuedMessage]:
    """The queued messages `flt` means, oldest first; unreadable records are skipped.

    Blocking (reads records): call it in a thread from async code. With `flt.ids`
    only those records are read.
    """
    queue_ids = list(dict.fromkeys(flt.ids)) if flt.ids else store.list_ids()
    found = [m for m in _read(store, queue_ids) if matches(flt, m, now)]
    found.sort(key=lambda m: (m.created, m.id))
    return found


def list_rows(store: QueueStore, flt: QueueFilter, now: float) -> list[QueueRow]:
    """`select` as the rows of `goniec queue list` (blocking, like `select`)."""
    return queue_rows(select(store, flt, now))


# -- acting ------------------------------------------------------------------------------

async def apply(store: QueueStore, action: str, flt: QueueFilter, now: float, *,
                progress: Progress | None = None, report: ReportConfig = DEFAULT_REPORT,
                reason: str = "") -> ActionResult:
    """Do `action` (one of `contract.QUEUE_ACTIONS`) to every message `flt` selects.

    An empty filter selects the whole queue: ask the operator first. Each message
    is changed under its delivery lease; one in delivery right now, gone
    meanwhile, changed so it no longer matches, or one the action does not fit
    (release of a message not held, ...) lands in `skipped` with the reason.
    `reason`: the hold reason ("held by administrator" when empty), or words
    added to a bounce's diagnostic. `report`: who signs bounce reports.
    `progress(done, total)` is called after each message.

    Note: a running delivery runner keeps its own schedule; after `retry` it
    learns the new due time only when it reads the record again.
    """
    if action not in QUEUE_ACTIONS:
        raise ValueError(f"unknown queue action {action!r}")
    msgs = await asyncio.to_thread(select, store, flt, now)
    result = ActionResult(action)
    found = {m.id for m in msgs}
    for queue_id in dict.fromkeys(flt.ids):  # named ids that were not selected: say why
        if queue_id not in found:
            absent = await asyncio.to_thread(store.get, queue_id) is None
            result.skipped[queue_id] = NOT_QUEUED if absent else NO_MATCH
    total = len(msgs)
    for n, msg in enumerate(msgs, 1):
        why = await _one(store, action, msg.id, flt, now, report, reason)
        if why is None:
            result.done.append(msg.id)
        else:
            result.skipped[msg.id] = why
        if progress is not None:
            progress(n, total)
    log.info("admin.queue_action action=%s done=%d skipped=%d", action, len(result.done),
             len(result.skipped))
    return result


_TRAIL_EVENT = {"retry": "retried", "hold": "held", "release": "released",
                "delete": "deleted", "bounce": "bounced"}


async def _one(store: QueueStore, action: str, queue_id: str, flt: QueueFilter, now: float,
               report: ReportConfig, reason: str) -> str | None:
    """Act on one message under its lease; None when done, else why it was skipped."""
    try:
        lease = store.lease(queue_id)
    except OSError as exc:
        log.warning("admin.lease_failed msg=%s error=%r", queue_id, exc)
        return f"failed: {exc}"
    if lease is None:
        return GONE if store.get(queue_id) is None else BUSY
    try:
        msg = store.get(queue_id)  # again, under the lease: a runner may have changed it
        if msg is None:
            return GONE
        if not matches(flt, msg, now):
            return f"changed meanwhile: {NO_MATCH}"
        why = await _ACTIONS[action](store, msg, now, report, reason)
        if why is None:
            log.info("admin.%s msg=%s", action, queue_id)
            # The message's own trail shows what an operator did to it, beside its attempts.
            trail.current().record(queue_id, _TRAIL_EVENT[action], by="admin")
        return why
    except MessageNotFound:
        return GONE
    except (OSError, SMTPError) as exc:  # DESIGN 1.5: leave it as it was, say so
        log.error("admin.%s_failed msg=%s error=%r", action, queue_id, exc)
        return f"failed: {exc}"
    finally:
        lease.release()


async def _retry(store: QueueStore, msg: QueuedMessage, now: float, report: ReportConfig,
                 reason: str) -> str | None:
    if msg.held:
        return "held: release it first"
    waiting = {i: dataclasses.replace(st, next_attempt=now)
               for i, st in enumerate(msg.recipients)
               if not st.status.is_final and st.next_attempt > now}
    if not waiting:
        return "nothing deferred to retry"
    await store.update_recipients(msg.id, waiting)
    return None


async def _hold(store: QueueStore, msg: QueuedMessage, now: float, report: ReportConfig,
                reason: str) -> str | None:
    if msg.held and (not reason or reason == msg.hold_reason):
        return "already held"
    if msg.is_done:
        return "every recipient is done"
    await store.hold(msg.id, reason or HOLD_REASON)
    return None


async def _release(store: QueueStore, msg: QueuedMessage, now: float, report: ReportConfig,
                   reason: str) -> str | None:
    if not msg.held:
        return "not held"
    await store.release(msg.id)
    return None


async def _delete(store: QueueStore, msg: QueuedMessage, now: float, report: ReportConfig,
                  reason: str) -> str | None:
    # Gone for good, no report to anyone (Postfix postsuper -d).
    return None if await store.remove(msg.id) else GONE


async def _bounce(store: QueueStore, msg: QueuedMessage, now: float, report: ReportConfig,
                  reason: str) -> str | None:
    """Every open recipient fails permanently; the sender gets one failure report.

    Order as in the delivery worker: the report is queued before the message is
    removed, so a crash in between repeats work and never loses a report.
    """
    open_ = [st for st in msg.recipients if not st.status.is_final]
    if not open_:
        return "every recipient is done"
    text = RETURNED.text + (f": {_one_line(reason)}" if reason.strip() else "")
    returned = RETURNED.with_text(text)
    entries = []
    for st in open_:
        # RFC 3461 4.1: only recipients whose NOTIFY asks for failures are reported.
        if not wants(st.recipient, NOTIFY_FAILURE):
            continue
        diagnostic = str(returned)
        if st.last_reply:
            diagnostic += f" (last attempt: {_one_line(st.last_reply)})"
        entries.append(bounce.ReportEntry(st.address, Report.FAILED, returned.enhanced or "5.0.0",
                                          diagnostic, orcpt=st.recipient.orcpt))
    if entries and msg.sender:
        qid = await _queue_report(store, msg, entries, now, report)
        log.info("admin.report msg=%s kind=failed report=%s to=%s rcpts=%s", msg.id, qid,
                 msg.sender, ",".join(e.address for e in entries))
    elif entries:
        # RFC 3461 6.2, RFC 5321 6.1: never a report about a report (null sender).
        log.info("admin.no_report msg=%s reason=null_sender", msg.id)
    # Every recipient is final now: removing is the one durable step (as the worker does).
    await store.remove(msg.id)
    return None


async def _queue_report(store: QueueStore, msg: QueuedMessage,
                        entries: list[bounce.ReportEntry], now: float,
                        report: ReportConfig) -> str:
    """The RFC 3464 failure report to the sender, queued as the delivery worker does."""
    return await queue_report(store, msg, Report.FAILED, entries, now,
                              hostname=report.hostname, ndr_copy_to=report.ndr_copy_to)


def _one_line(text: str) -> str:
    return " ".join(text.split())


_ACTIONS: dict[str, Callable[[QueueStore, QueuedMessage, float, ReportConfig, str],
                             Awaitable[str | None]]] = {
    "retry": _retry, "hold": _hold, "release": _release, "delete": _delete, "bounce": _bounce,
}
