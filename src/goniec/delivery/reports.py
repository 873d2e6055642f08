"""Queueing a delivery status notification about a queued message (layer 4).

Owns the one way a report enters the queue, for the delivery worker (delays,
failures, successes) and for an operator's "bounce" alike: the RFC 3464
report is built from the stored original (in a thread: it reads the message),
then submitted from the null reverse-path (RFC 3461 6.2, RFC 5321 4.5.5, so
that no report is ever sent about it) to the original sender, plus the admin
copy of failure reports (IIS "Send copy of Non-Delivery Report to"). Raises
what `QueueStore.open_message` and `submit` raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from goniec.delivery import bounce
from goniec.delivery.schedule import Report
from goniec.model import Envelope, MailParams, Recipient
from goniec.queue.api import QueuedMessage, QueueStore, SubmissionInfo
from goniec.queue.submit import local_received, submit

HEAD = 64 << 10  # bytes of the original read for its Subject


def _build(store: QueueStore, msg: QueuedMessage, kind: Report,
           entries: Sequence[bounce.ReportEntry], now: float, hostname: str) -> bytes:
    with store.open_message(msg.id) as f:
        subject = bounce.subject_of(f.read(HEAD))
    with store.open_message(msg.id) as original:
        return bounce.build_report(
            kind=kind, entries=list(entries), reporting_mta=hostname, sender=msg.sender,
            original=original, arrival=msg.created, now=now, ret=msg.envelope.params.ret,
            envid=msg.envelope.params.envid, original_subject=subject)


async def queue_report(store: QueueStore, msg: QueuedMessage, kind: Report,
                       entries: Sequence[bounce.ReportEntry], now: float, *, hostname: str,
                       ndr_copy_to: str = "") -> str:
    """Queue the `kind` report about `msg` to its sender; the report's queue id."""
    data = await asyncio.to_thread(_build, store, msg, kind, entries, now, hostname)
    rcpts = [Recipient(msg.sender)]
    if kind is Report.FAILED and ndr_copy_to:
        rcpts.append(Recipient(ndr_copy_to))
    params = MailParams(body="8BITMIME" if not data.isascii() else None,
                        smtputf8=not msg.sender.isascii())
    return await submit(store, [data], Envelope("", tuple(rcpts), params),
                        SubmissionInfo("dsn", "", None, None),
                        header=lambda q: local_received(hostname, "delivery status", q, now))
