"""One-line call-site helpers that tell the metrics and the trail together.

Owns turning what the session and the delivery worker know (a committed
message, one delivery attempt's results, the recipients' new states, a
report) into `metrics.current()` counts and `trail.current()` events, so
that the call sites stay one line each. It decides nothing and raises
nothing; the delivery types are only named for type checking (no import
of goniec.delivery at run time).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from goniec.obs import metrics, trail

if TYPE_CHECKING:
    from goniec.delivery.outcome import RecipientResult
    from goniec.delivery.schedule import Decision
    from goniec.queue.api import QueuedMessage


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def received(queue_id: str, *, listener: str, size: int, sender: str,
             recipients: Sequence[str], client: str = "", session: str = "",
             held: str | None = None) -> None:
    """A message was committed to the queue (and answered 250)."""
    metrics.current().received(listener, size)
    t = trail.current()
    t.record(queue_id, "received", sender=sender, recipients=list(recipients), size=size,
             client=client, session=session, listener=listener)
    if held:
        t.record(queue_id, "held", reason=held)


def attempt(queue_id: str, results: Iterable[RecipientResult]) -> None:
    """One delivery attempt to one destination: a line per (host, reply)."""
    t = trail.current()
    if not t.enabled:
        return
    groups: dict[tuple[str, str], list[str]] = {}
    for res in results:
        key = (res.remote_host or "local", res.describe())
        groups.setdefault(key, []).append(res.recipient.address)
    for (host, reply), rcpts in groups.items():
        t.record(queue_id, "attempt", rcpt=rcpts, host=host, reply=reply)


def outcomes(msg: QueuedMessage, decisions: Mapping[int, Decision], now: float) -> None:
    """The recipients' new states after an attempt: delivered, deferred or failed."""
    m, t = metrics.current(), trail.current()
    for d in decisions.values():
        state, result = d.state, d.result
        outcome = state.status.value
        if outcome == "delivered":
            m.delivery("delivered", max(0.0, now - msg.created))
        else:
            m.delivery("deferred" if outcome == "deferred" else "failed")
        if not t.enabled:
            continue
        if outcome == "delivered":
            t.record(msg.id, "delivered", rcpt=state.address, host=result.remote_host or "local",
                     reply=result.describe())
        elif outcome == "deferred":
            t.record(msg.id, "deferred", rcpt=state.address, reason=result.describe(),
                     next_attempt=_iso(state.next_attempt), attempts=state.attempts)
        else:
            t.record(msg.id, "failed", rcpt=state.address, reason=result.describe(),
                     attempts=state.attempts)


def report(queue_id: str, kind: str, report_id: str, to: str) -> None:
    """A delivery status notification about `queue_id` was queued as `report_id`."""
    metrics.current().report(str(kind))
    t = trail.current()
    t.record(queue_id, "report", kind=str(kind), report=report_id, to=to)
    t.record(report_id, "received", sender="", recipients=[to], source="dsn",
             original=queue_id)


def error(queue_id: str, exc: BaseException, retry_at: float) -> None:
    """An attempt broke off with an unexpected error; the runner retries at `retry_at`."""
    metrics.current().delivery("error")
    trail.current().record(queue_id, "deferred", reason=f"error: {exc!r}",
                           next_attempt=_iso(retry_at))
