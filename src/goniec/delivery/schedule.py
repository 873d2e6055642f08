"""Retry schedule, delay notices and expiry: the per-recipient decisions (pure, layer 1).

Owns `Timing` (IIS Delivery tab: retry intervals, delay notice, expiration,
separately for local and remote mail) and `decide()`, which turns one
delivery result into the recipient's next durable state and the report it
calls for, if any:

- delivered -> DELIVERED; a "delivered" report (local delivery) or a
  "relayed" one (handed to a next hop without DSN) when NOTIFY=SUCCESS
  (RFC 3461 4.1, 5.2.2). A next hop with DSN takes the duty over: no report.
- failed -> FAILED and a "failed" report unless NOTIFY=NEVER or lacks FAILURE.
- deferred -> DEFERRED with the next attempt from the schedule, never later
  than the expiry; once expired -> FAILED with a "failed" report; the first
  time the message is older than the delay-notice age -> a "delayed" report
  (if NOTIFY has DELAY, or NOTIFY is absent and `delay_without_notify`; RFC
  3461 4.1 leaves that to the MTA: IIS sends them, Postfix only when set up).

No I/O, no clock: `now` comes in. Raises nothing.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from goniec.delivery.outcome import DeliveryStatus, RecipientResult
from goniec.errors import Reply
from goniec.model import NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS, Recipient
from goniec.queue.api import RecipientState, RecipientStatus


class Report(enum.StrEnum):
    """RFC 3464 2.3.3 Action values this server reports."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds. retry[i] is the wait after attempt i+1; the last one repeats."""

    retry: tuple[float, ...] = (900.0, 1800.0, 3600.0, 14400.0)
    delay_notice: float = 12 * 3600.0
    expire: float = 2 * 86400.0

    def interval(self, attempts: int) -> float:
        return self.retry[min(max(attempts, 1), len(self.retry)) - 1]


@dataclass(frozen=True, slots=True)
class Decision:
    state: RecipientState
    report: Report | None
    result: RecipientResult  # what the report says (the expiry one for an expired recipient)


def wants(recipient: Recipient, word: str, *, delay_without_notify: bool = True) -> bool:
    """Does the sender want a report of kind `word` (RFC 3461 4.1)?"""
    notify = recipient.notify
    if notify is None:  # absent: FAILURE, and DELAY at our discretion; never SUCCESS
        return word == NOTIFY_FAILURE or (word == NOTIFY_DELAY and delay_without_notify)
    return NOTIFY_NEVER not in notify and word in notify


def expired_reply(result: RecipientResult, age: float) -> Reply:
    """The last temporary reason, marked as final because the message is too old."""
    text = f"{result.describe()} (message expired after {_human(age)} in the queue)"
    return Reply(result.reply.code, result.reply.enhanced or "4.4.7", text)


def _human(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds / 60:g} minutes"


def decide(state: RecipientState, result: RecipientResult, *, created: float, now: float,
           timing: Timing, local: bool, delay_without_notify: bool = True) -> Decision:
    """The next state of one recipient after `result`, and the report it calls for."""
    rcpt = state.recipient
    attempts = state.attempts + 1
    if result.status is DeliveryStatus.DELIVERED:
        new = dataclasses.replace(state, status=RecipientStatus.DELIVERED, attempts=attempts,
                                  last_reply=result.describe())
        report = None
        if wants(rcpt, NOTIFY_SUCCESS):
            if local:
                report = Report.DELIVERED
            elif result.dsn_relayed:
                report = Report.RELAYED
        return Decision(new, report, result)
    if result.status is DeliveryStatus.FAILED:
        new = dataclasses.replace(state, status=RecipientStatus.FAILED, attempts=attempts,
                                  last_reply=result.describe())
        report = Report.FAILED if wants(rcpt, NOTIFY_FAILURE) else None
        return Decision(new, report, result)
    # Deferred.
    deadline = created + timing.expire
    if now >= deadline:
        final = dataclasses.replace(result, status=DeliveryStatus.FAILED,
                                    reply=expired_reply(result, timing.expire), remote=False)
        new = dataclasses.replace(state, status=RecipientStatus.FAILED, attempts=attempts,
                                  last_reply=final.describe())
        return Decision(new, Report.FAILED if wants(rcpt, NOTIFY_FAILURE) else None, final)
    # The last try happens at the deadline itself, so the report is not a retry late.
    nxt = min(now + timing.interval(attempts), deadline)
    report = None
    notified = state.delay_notified
    if (not notified and now - created >= timing.delay_notice
            and wants(rcpt, NOTIFY_DELAY, delay_without_notify=delay_without_notify)):
        report, notified = Report.DELAYED, True
    new = dataclasses.replace(state, status=RecipientStatus.DEFERRED, attempts=attempts,
                              next_attempt=nxt, last_reply=result.describe(),
                              delay_notified=notified)
    return Decision(new, report, result)


def next_due(states: tuple[RecipientState, ...]) -> float | None:
    """When the message should be looked at again; None when every recipient is done."""
    due = [s.next_attempt for s in states if not s.status.is_final]
    return min(due) if due else None
