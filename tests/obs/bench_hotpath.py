"""Micro-benchmark: the metrics and trail calls one message costs on the hot path.

Run: python tests/obs/bench_hotpath.py  (not collected by pytest). One "message" is
what the session and the delivery worker call for one client sending one message
to one recipient that is delivered at the first attempt, plus one refused RCPT:
session opened/closed, a rejection, received (metrics + trail line), one attempt
line, the outcome (metrics + latency + trail line). Inside a running event loop,
as in the server (trail lines are buffered and written by the loop's timer).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from goniec import replies
from goniec.delivery.outcome import DeliveryStatus, RecipientResult
from goniec.errors import Reply
from goniec.model import Recipient
from goniec.obs import metrics, track
from goniec.obs import trail as trailmod
from goniec.queue.records import RecipientState, RecipientStatus

N = 20_000


def one_message(i: int, msg: Any, decisions: Any, results: Any) -> None:
    m = metrics.current()
    m.session_opened("smtp")
    m.rejected(replies.R550_UNKNOWN_USER)
    track.received(msg.id, listener="smtp", size=2048, sender="a@b.test",
                   recipients=["c@d.test"], client="192.0.2.1", session="s0001")
    m.session_closed("smtp", "TLSv1.3")
    track.attempt(msg.id, results)
    track.outcomes(msg, decisions, msg.created + 0.8)


async def bench(with_trail: bool) -> tuple[float, float]:
    rcpt = Recipient("c@d.test")
    result = RecipientResult(rcpt, DeliveryStatus.DELIVERED, Reply(250, "2.0.0", "ok"),
                             "mx.d.test[192.0.2.9]", remote=True)
    state = RecipientState(rcpt, RecipientStatus.DELIVERED, 1)
    decisions = {0: SimpleNamespace(state=state, result=result)}
    msg = SimpleNamespace(id="0123456789abcdef", created=time.time())
    with tempfile.TemporaryDirectory() as d:
        t = trailmod.Trail(Path(d), 30) if with_trail else None
        trailmod.set_current(t)
        one_message(0, msg, decisions, [result])  # warm up
        start = time.perf_counter()
        for i in range(N):
            one_message(i, msg, decisions, [result])
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        if t is not None:
            t.flush()  # what the loop's timer does every 0.5 s: JSON + write()
        flushed = time.perf_counter() - start
        trailmod.set_current(None)
    return elapsed / N * 1e6, flushed / N * 1e6


def main() -> None:
    for with_trail in (False, True):
        runs = [asyncio.run(bench(with_trail)) for _ in range(3)]
        inline, flush = min(runs)
        label = "metrics + trail" if with_trail else "metrics only, trail off"
        print(f"{label}: {inline:.1f} us per message in the calls"
              + (f", {flush:.1f} us per message later in the flush timer" if with_trail else ""))


if __name__ == "__main__":
    main()
