"""Stopping the runner while a peer stalls: the attempt under way gets `stop_grace`, then
it is cancelled; the message stays queued, its lease is free, and the next runner
delivers it (as after a crash)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from goniec.queue.api import RecipientStatus

from .runner_support import BODY, Harness, Peer


def test_stop_cancels_an_attempt_stuck_on_a_stalled_peer(tmp_path: Path) -> None:
    stall, sink = Peer("stall").start(), Peer().start()

    async def main() -> None:
        # A long command timeout: only the stop grace can end the stuck attempt.
        h = Harness(tmp_path, {"dest.test": stall.port}, command_timeout=60)
        h.runner.stop_grace = 0.3
        try:
            qid = await h.put("ok@dest.test")
            stop = asyncio.Event()
            task = asyncio.ensure_future(h.runner.run(stop))
            deadline = time.monotonic() + 10
            while not h.runner._active:  # the attempt has started and waits on the peer
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            stop.set()
            await asyncio.wait_for(task, 5)
            assert time.monotonic() - started < 2
            msg = h.store.get(qid)
            assert msg is not None  # nothing lost, nothing recorded
            assert [r.status for r in msg.recipients] == [RecipientStatus.PENDING]
            lease = h.store.lease(qid)  # the cancelled attempt gave its lease back
            assert lease is not None
            lease.release()
        finally:
            await h.close()
        # The next start (a new runner on the same spool) delivers it.
        h2 = Harness(tmp_path, {"dest.test": sink.port})
        try:
            await h2.runner.run_once()
            assert h2.store.get(qid) is None
            assert [g.data for g in sink.received] == [BODY]
        finally:
            await h2.close()

    try:
        asyncio.run(main())
    finally:
        stall.stop()
        sink.stop()
