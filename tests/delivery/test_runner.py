"""The queue runner against real SMTP peers on loopback, with a controllable clock.

Peers accept, defer (451), refuse (550), drop the connection or stall; every
failure report is read back with flufl.bounce, an independent RFC 3464 reader.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
from collections.abc import Iterator
from pathlib import Path

import pytest
from flufl.bounce import all_failures

from goniec.model import Recipient
from goniec.queue.api import RecipientStatus

from .runner_support import BODY, Harness, Peer

MIN = 60.0
HOUR = 3600.0


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    p = Peer().start()
    yield p
    p.stop()


@pytest.fixture
def sink(peer: Peer) -> Iterator[Peer]:
    peer.received.clear()
    yield peer


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def settle(h: Harness) -> None:
    """Run until nothing new is due now (reports queued by a pass go out in the next)."""
    for _ in range(5):
        await h.runner.run_once()
        now = h.clock()
        if not any(m for m in h.store.list_messages()
                   if any(not r.status.is_final and r.next_attempt <= now for r in m.recipients)):
            return


def failures(msg: email.message.Message) -> tuple[set[bytes], set[bytes]]:
    temporary, permanent = all_failures(msg)
    return set(temporary), set(permanent)


def test_delivers_byte_exact_and_removes(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port})
        qid = await h.put("ok1@dest.test", "ok2@dest.test")
        await settle(h)
        assert h.store.get(qid) is None and h.store.list_ids() == []
        await h.close()
    run(main())
    [got] = sink.received
    assert got.sender == "alice@sender.test"
    assert sorted(got.rcpts) == ["ok1@dest.test", "ok2@dest.test"]
    assert got.data == BODY  # dot-stuffed on the wire, un-stuffed by the peer: byte-exact


def test_failure_defer_retry_delay_notice_expiry(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        ports = {"dest.test": sink.port, "sender.test": sink.port}
        h = Harness(tmp_path, ports)
        qid = await h.put("ok1@dest.test", "refuse1@dest.test", "defer1@dest.test",
                          envid="ENV-42")
        await settle(h)
        msg = h.store.get(qid)
        assert msg is not None
        states = {r.address: r for r in msg.recipients}
        assert states["ok1@dest.test"].status is RecipientStatus.DELIVERED
        assert states["refuse1@dest.test"].status is RecipientStatus.FAILED
        deferred = states["defer1@dest.test"]
        assert deferred.status is RecipientStatus.DEFERRED and deferred.attempts == 1
        assert deferred.next_attempt == pytest.approx(h.clock() + 15 * MIN)
        assert "451 4.3.0" in deferred.last_reply
        [report] = sink.reports()
        assert failures(report) == (set(), {b"refuse1@dest.test"})
        status = report.get_payload()[1].get_payload()  # message/delivery-status blocks
        assert status[0]["Original-Envelope-Id"] == "ENV-42"
        assert status[1]["Action"] == "failed" and status[1]["Status"] == "5.1.1"
        assert status[1]["Remote-MTA"] == "dns; mx.dest.test"
        assert status[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
        assert report.get_payload()[2].get_content_type() == "message/rfc822"

        # Nothing due before the first retry interval; then 15, 30, 60 minutes.
        sink.received.clear()
        h.clock.advance(14 * MIN)
        await settle(h)
        assert h.store.get(qid).recipients[2].attempts == 1  # type: ignore[union-attr]
        for wait, expected in ((1 * MIN, 2), (30 * MIN, 3), (60 * MIN, 4)):
            h.clock.advance(wait)
            await settle(h)
            assert h.store.get(qid).recipients[2].attempts == expected  # type: ignore[union-attr]
        assert sink.reports() == []

        # 12 hours: one delay notice, and only one.
        h.clock.advance(12 * HOUR)
        await settle(h)
        [delayed] = sink.reports()
        assert failures(delayed) == ({b"defer1@dest.test"}, set())
        blocks = delayed.get_payload()[1].get_payload()
        assert blocks[1]["Action"] == "delayed" and "Will-Retry-Until" in blocks[1]
        assert delayed.get_payload()[2].get_content_type() == "text/rfc822-headers"
        assert h.store.get(qid).recipients[2].delay_notified  # type: ignore[union-attr]
        h.clock.advance(4 * HOUR)
        await settle(h)
        assert len(sink.reports()) == 1

        # Two days: the failure report, and the message leaves the queue.
        sink.received.clear()
        h.clock.advance(2 * 24 * HOUR)
        await settle(h)
        assert h.store.get(qid) is None
        [expired] = sink.reports()
        assert failures(expired) == (set(), {b"defer1@dest.test"})
        assert "expired" in expired.get_payload()[1].get_payload()[1]["Diagnostic-Code"]
        await h.close()
    run(main())


def test_retries_stop_at_expiry_time(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port, "sender.test": sink.port},
                    retry=["10h"], expire="12h", delay_notice="11h")
        qid = await h.put("defer@dest.test")
        await settle(h)
        created = h.store.get(qid).created  # type: ignore[union-attr]
        h.clock.advance(10 * HOUR)
        await settle(h)
        # The next retry would be at 20 h; the message expires at 12 h: try then.
        assert h.store.get(qid).recipients[0].next_attempt == pytest.approx(  # type: ignore[union-attr]
            created + 12 * HOUR)
        await h.close()
    run(main())


def test_notify_rules(tmp_path: Path, sink: Peer) -> None:
    never = Recipient("refuse-never@dest.test", frozenset({"NEVER"}))
    success = Recipient("ok-success@dest.test", frozenset({"SUCCESS"}), "rfc822;Boss@dest.test")
    no_delay = Recipient("defer-x@dest.test", frozenset({"FAILURE"}))

    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port, "sender.test": sink.port},
                    delay_notice="1h")
        await h.put(never, success, no_delay, ret="HDRS")
        await settle(h)
        [relayed] = sink.reports()  # aiosmtpd has no DSN: our duty ends with "relayed"
        block = relayed.get_payload()[1].get_payload()[1]
        assert block["Action"] == "relayed" and block["Original-Recipient"] == \
            "rfc822; Boss@dest.test"
        sink.received.clear()
        h.clock.advance(2 * HOUR)
        await settle(h)
        assert sink.reports() == []  # NOTIFY=FAILURE only: no delay notice
        await h.close()
    run(main())


def test_null_sender_failure_goes_to_badmail_with_admin_copy_of_others(
        tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port, "sender.test": sink.port,
                               "admin.test": sink.port}, ndr_copy_to="postmaster@admin.test")
        await h.put("refuse@dest.test", sender="")
        await h.put("refuse2@dest.test")
        await settle(h)
        # One report (to the sender, copied to the admin: two domains, two deliveries);
        # none about the report that failed.
        reports = sink.reports()
        assert [failures(r) for r in reports] == [(set(), {b"refuse2@dest.test"})] * 2
        got = sorted(r for g in sink.received if g.sender in ("", "<>") for r in g.rcpts)
        assert got == ["alice@sender.test", "postmaster@admin.test"]
        bad = sorted((tmp_path / "badmail").iterdir())
        assert [p.suffix for p in bad] == [".bad", ".bdr"]
        assert b"X-Receiver: refuse@dest.test" in bad[0].read_bytes()
        assert "delivery status notification" in bad[1].read_text()
        await h.close()
    run(main())


@pytest.mark.parametrize("mode", ["drop", "stall"])
def test_broken_peers_defer(tmp_path: Path, mode: str) -> None:
    bad = Peer(mode).start()
    try:
        async def main() -> None:
            h = Harness(tmp_path, {"dest.test": bad.port}, command_timeout=1)
            qid = await h.put("ok@dest.test")
            await asyncio.wait_for(settle(h), 30)
            [state] = h.store.get(qid).recipients  # type: ignore[union-attr]
            assert state.status is RecipientStatus.DEFERRED and state.last_reply
            await h.close()
        run(main())
    finally:
        bad.stop()


def test_unknown_domain_fails_at_once(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"sender.test": sink.port})
        await h.put("x@nowhere.test")
        await settle(h)
        [report] = sink.reports()
        assert failures(report) == (set(), {b"x@nowhere.test"})
        await h.close()
    run(main())


def test_smart_host_and_direct_first(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"sender.test": sink.port}, smart_host=f"[127.0.0.1]:{sink.port}")
        await h.put("ok@far.test", "ok@other.test")
        await settle(h)
        assert [sorted(g.rcpts) for g in sink.received] == [["ok@far.test", "ok@other.test"]]
        assert h.resolver.asked == [f"[127.0.0.1]:{sink.port}"]  # no MX lookup at all
        await h.close()

        # Direct first: MX defers, so the smart host gets it in the same attempt.
        sink.received.clear()
        mx = Peer("defer").start()
        try:
            h = Harness(tmp_path / "2", {"far.test": mx.port, "sender.test": sink.port},
                        smart_host=f"[127.0.0.1]:{sink.port}", direct_first=True)
            qid = await h.put("ok@far.test")
            await settle(h)
            assert h.resolver.asked[0] == "far.test" and mx.received == []
            assert [g.rcpts for g in sink.received] == [["ok@far.test"]]
            assert h.store.get(qid) is None
            await h.close()
        finally:
            mx.stop()
    run(main())


def test_leased_message_is_left_alone(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port})
        qid = await h.put("ok@dest.test")
        lease = h.store.lease(qid)  # another runner (or process) is on it
        assert lease is not None
        await settle(h)
        assert sink.received == [] and h.store.get(qid) is not None
        lease.release()
        h.clock.advance(10)
        await settle(h)
        assert h.store.get(qid) is None and len(sink.received) == 1
        await h.close()
    run(main())


def test_done_message_left_by_a_crash_is_removed(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port})
        qid = await h.put("ok@dest.test")
        msg = h.store.get(qid)
        assert msg is not None
        done = dataclasses.replace(msg.recipients[0], status=RecipientStatus.DELIVERED)
        await h.store.update_recipients(qid, {0: done})  # ... and the crash, before remove
        await settle(h)
        assert h.store.get(qid) is None and sink.received == []
        await h.close()
    run(main())


def test_held_message_waits_for_release(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port, "sender.test": sink.port})
        qid = await h.put("ok1@dest.test")
        await h.store.hold(qid, "dmarc quarantine")
        await settle(h)
        h.clock.advance(30 * 24 * HOUR)  # far past the queue lifetime: held mail never expires
        await settle(h)
        msg = h.store.get(qid)
        assert msg is not None and msg.held
        assert [(r.status, r.attempts) for r in msg.recipients] == [(RecipientStatus.PENDING, 0)]
        assert sink.received == []  # neither delivered nor bounced
        await h.store.release(qid)
        h.clock.advance(h.runner.hold_recheck)  # the runner looks at held mail this often
        await settle(h)
        assert h.store.get(qid) is None
        await h.close()
    run(main())
    # Released past the queue lifetime: it still gets one attempt (here it succeeds; a
    # temporary failure would expire it then and there).
    [got] = sink.received
    assert got.sender == "alice@sender.test" and got.rcpts == ["ok1@dest.test"]


def test_held_message_is_delivered_after_release(tmp_path: Path, sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port})
        qid = await h.put("ok1@dest.test")
        await h.store.hold(qid, "operator")
        await settle(h)
        h.clock.advance(HOUR)
        await settle(h)
        assert h.store.get(qid) is not None and sink.received == []
        await h.store.release(qid)
        h.clock.advance(h.runner.hold_recheck)
        await settle(h)
        assert h.store.get(qid) is None
        await h.close()
    run(main())
    [got] = sink.received
    assert got.rcpts == ["ok1@dest.test"] and got.data == BODY


def test_retry_now_reschedules_a_deferred_message(tmp_path: Path, sink: Peer) -> None:
    from goniec.admin.contract import QueueFilter
    from goniec.admin.queue_ops import apply

    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port})
        qid = await h.put("defer1@dest.test")
        await settle(h)  # deferred: the next attempt is 15 minutes away
        msg = h.store.get(qid)
        assert msg is not None and msg.recipients[0].attempts == 1
        # An operator's "retry now": the record says "due now", then the runner is told.
        result = await apply(h.store, "retry", QueueFilter(ids=(qid,)), h.clock())
        assert result.done == [qid]
        assert h.runner.reschedule([qid]) == 1
        await h.runner.run_once()
        msg = h.store.get(qid)
        assert msg is not None and msg.recipients[0].attempts == 2, msg.recipients
        await h.close()
    run(main())


def test_offered_message_is_due_at_once_and_shares_split_scanned_ones(tmp_path: Path,
                                                                         sink: Peer) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {"dest.test": sink.port})
        h.runner.share_index, h.runner.share_count = 0, 2
        ids = [await h.put(f"ok{i}@dest.test") for i in range(12)]
        await h.runner.scan()
        now = h.clock()
        mine = {q for q in ids if h.runner._mine(q)}
        assert 0 < len(mine) < len(ids)  # a hash split, both sides get some
        due = dict(h.runner._due)
        assert all(due[q] <= now for q in mine)
        assert all(due[q] >= now + h.runner.share_grace - 1 for q in set(ids) - mine)
        await h.runner.run_once()  # only its own share is due now
        assert len(sink.received) == len(mine)
        h.clock.advance(h.runner.share_grace)  # the other runner's share, if it never came
        await h.runner.run_once()
        assert len(sink.received) == len(ids)
        fresh = await h.put("ok-new@dest.test")
        h.runner.offer(fresh)  # accepted by this process: due now whoever owns it
        assert h.runner._due[fresh] <= h.clock()
        await h.runner.run_once()
        assert len(sink.received) == len(ids) + 1
        await h.close()
    run(main())
