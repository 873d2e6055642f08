"""admin.queue_ops: filters, states and every queue action, on the real filesystem spool."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.message
import email.policy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flufl.bounce import all_failures

from goniec.admin import queue_ops
from goniec.admin.contract import QueueFilter
from goniec.admin.queue_ops import (
    BUSY,
    GONE,
    HOLD_REASON,
    ReportSettings,
    apply,
    list_rows,
    matches,
    message_state,
    select,
)
from goniec.model import Envelope, MailParams, Recipient
from goniec.queue.api import QueuedMessage, QueueStore, RecipientState, RecipientStatus
from goniec.queue.fs import FsQueueStore
from goniec.queue.records import SubmissionInfo

NOW = 1_800_000_000.0
HOUR = 3600.0
BODY = (b"From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: stuck mail\r\n"
        b"Message-ID: <q1@sender.test>\r\n\r\nHello.\r\n")
SESSION = SubmissionInfo("s1", "192.0.2.7", "client.test", None)
DSN_NOTE = "returned by the administrator"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FsQueueStore]:
    s = FsQueueStore(tmp_path / "spool", min_free_space=0)
    yield s
    s.close()


def rcpt(address: str, notify: set[str] | None = None, orcpt: str | None = None) -> Recipient:
    return Recipient(address, None if notify is None else frozenset(notify), orcpt)


async def put(store: QueueStore, *rcpts: str | Recipient, sender: str = "alice@sender.test",
              body: bytes = BODY, held: bool = False, **params: Any) -> str:
    recipients = tuple(r if isinstance(r, Recipient) else Recipient(r)
                       for r in rcpts or ("bob@dest.test",))
    w = store.new_message()
    await w.write(body)
    return await w.commit(Envelope(sender, recipients, MailParams(**params)), SESSION, held=held,
                          hold_reason="dmarc quarantine" if held else "")


async def defer(store: QueueStore, qid: str, index: int = 0, until: float = NOW + HOUR,
                reply: str = "451 4.3.0 try again later") -> None:
    msg = store.get(qid)
    assert msg is not None
    st = dataclasses.replace(msg.recipients[index], status=RecipientStatus.DEFERRED,
                             attempts=1, next_attempt=until, last_reply=reply)
    await store.update_recipients(qid, {index: st})


async def finish(store: QueueStore, qid: str, index: int, status: RecipientStatus) -> None:
    msg = store.get(qid)
    assert msg is not None
    st = dataclasses.replace(msg.recipients[index], status=status, attempts=1,
                             last_reply="250 2.0.0 ok")
    await store.update_recipients(qid, {index: st})


def get(store: QueueStore, qid: str) -> QueuedMessage:
    msg = store.get(qid)
    assert msg is not None
    return msg


def ids(flt: QueueFilter, store: QueueStore, now: float = NOW) -> list[str]:
    return [m.id for m in select(store, flt, now)]


def unfold(value: str) -> str:
    return " ".join(value.split())


def reports(store: QueueStore) -> list[tuple[QueuedMessage, Any]]:
    """The queued reports, parsed (Any: the tests index into their MIME parts)."""
    out: list[tuple[QueuedMessage, Any]] = []
    for msg in store.list_messages():
        if msg.sender == "":
            with store.open_message(msg.id) as f:
                out.append((msg, email.message_from_binary_file(f, policy=email.policy.compat32)))
    return out


# -- states and filters ------------------------------------------------------------------

def test_message_state(store: FsQueueStore) -> None:
    async def main() -> None:
        active = await put(store, "a@dest.test", "b@dest.test")
        deferred = await put(store)
        await defer(store, deferred)
        mixed = await put(store, "a@dest.test", "b@dest.test")  # one waits, one is due
        await defer(store, mixed, 0)
        done = await put(store)
        await finish(store, done, 0, RecipientStatus.DELIVERED)
        held = await put(store, held=True)
        states = {q: message_state(get(store, q), NOW) for q in
                  (active, deferred, mixed, done, held)}
        assert states == {active: "active", deferred: "deferred", mixed: "active",
                          done: "done", held: "held"}
        assert message_state(get(store, deferred), NOW + HOUR) == "active"  # due again
        assert ids(QueueFilter(state="deferred"), store) == [deferred]
        assert ids(QueueFilter(state="held"), store) == [held]
    asyncio.run(main())


def test_filters(store: FsQueueStore) -> None:
    async def main() -> None:
        a = await put(store, "Bob@Mail.Example.TEST", sender="Alice@Sender.test")
        b = await put(store, "carol@example.test", sender="")
        c = await put(store, "dave@notexample.test", "erin@other.test", sender="zed@x.test")
        assert ids(QueueFilter(), store) == [a, b, c]  # oldest first
        assert ids(QueueFilter(sender="alice@SENDER"), store) == [a]
        assert ids(QueueFilter(sender="<>"), store) == [b]
        assert ids(QueueFilter(recipient="BOB@mail"), store) == [a]
        assert ids(QueueFilter(recipient="erin"), store) == [c]
        # The domain itself or a parent domain, never a mere suffix of a label.
        assert ids(QueueFilter(domain="example.test"), store) == [a, b]
        assert ids(QueueFilter(domain="mail.example.test."), store) == [a]
        assert ids(QueueFilter(domain="@other.test"), store) == [c]
        assert ids(QueueFilter(domain="ample.test"), store) == []
        assert ids(QueueFilter(ids=(c, a)), store) == [a, c]
        assert ids(QueueFilter(ids=(c,), domain="example.test"), store) == []
        assert ids(QueueFilter(sender="alice", recipient="carol"), store) == []  # AND
        later = get(store, c).created + 100
        assert ids(QueueFilter(min_age=50), store, later) == [a, b, c]
        assert ids(QueueFilter(min_age=1000), store, later) == []
        assert ids(QueueFilter(max_age=50), store, later) == []
        msg = get(store, a)
        assert matches(QueueFilter(max_age=10), msg, msg.created + 5)
        assert not matches(QueueFilter(max_age=10), msg, msg.created + 11)
        assert not matches(QueueFilter(min_age=10), msg, msg.created + 5)
        rows = list_rows(store, QueueFilter(sender="<>"), NOW)
        assert [(r.id, r.sender, r.recipients[0].address) for r in rows] == \
            [(b, "", "carol@example.test")]
    asyncio.run(main())


def test_unreadable_record_is_skipped(store: FsQueueStore) -> None:
    async def main() -> None:
        good = await put(store)
        bad = await put(store)
        # Another writer's bug (or a disk) spoiled the record: listing goes on without it.
        Path(store.queue_dir, bad + ".env").write_bytes(b"goniec-envelope 1\nbroken\n")
        assert ids(QueueFilter(), store) == [good]
        result = await apply(store, "hold", QueueFilter(ids=(bad,)), NOW)
        assert result.done == [] and bad in result.skipped
    asyncio.run(main())


# -- actions -----------------------------------------------------------------------------

def test_retry_makes_deferred_recipients_due(store: FsQueueStore) -> None:
    async def main() -> None:
        qid = await put(store, "a@dest.test", "b@dest.test", "c@dest.test")
        await defer(store, qid, 0)
        await finish(store, qid, 2, RecipientStatus.DELIVERED)
        fresh = await put(store)  # nothing deferred: due already
        held = await put(store, held=True)
        await defer(store, held)
        result = await apply(store, "retry", QueueFilter(), NOW)
        assert result.action == "retry" and result.done == [qid]
        assert set(result.skipped) == {fresh, held}
        assert "nothing deferred" in result.skipped[fresh] and "held" in result.skipped[held]
        msg = get(store, qid)
        assert [r.next_attempt for r in msg.recipients] == [NOW, 0.0, 0.0]
        assert [r.status for r in msg.recipients] == [RecipientStatus.DEFERRED,
                                                      RecipientStatus.PENDING,
                                                      RecipientStatus.DELIVERED]
        assert msg.recipients[0].attempts == 1 and "451" in msg.recipients[0].last_reply
        assert message_state(msg, NOW) == "active"
        assert get(store, held).recipients[0].next_attempt == NOW + HOUR
    asyncio.run(main())


def test_hold_and_release(store: FsQueueStore) -> None:
    async def main() -> None:
        a = await put(store)
        b = await put(store)
        result = await apply(store, "hold", QueueFilter(ids=(a,)), NOW)
        assert result.done == [a] and result.skipped == {}
        assert (get(store, a).held, get(store, a).hold_reason) == (True, HOLD_REASON)
        result = await apply(store, "hold", QueueFilter(), NOW, reason="spam? ask the user")
        assert result.done == [a, b]  # a new reason replaces the old one
        assert get(store, a).hold_reason == "spam? ask the user"
        again = await apply(store, "hold", QueueFilter(ids=(b,)), NOW)
        assert again.skipped == {b: "already held"}

        result = await apply(store, "release", QueueFilter(ids=(a,)), NOW)
        assert result.done == [a]
        assert (get(store, a).held, get(store, a).hold_reason) == (False, "")
        result = await apply(store, "release", QueueFilter(), NOW)
        assert result.done == [b] and result.skipped == {a: "not held"}
    asyncio.run(main())


def test_delete_removes_for_good_without_a_report(store: FsQueueStore) -> None:
    async def main() -> None:
        a = await put(store, "x@dest.test")
        b = await put(store, "y@other.test")
        seen: list[tuple[int, int]] = []
        result = await apply(store, "delete", QueueFilter(domain="dest.test"), NOW,
                             progress=lambda done, total: seen.append((done, total)))
        assert result.done == [a] and seen == [(1, 1)]
        assert store.list_ids() == [b]
        assert not os.path.exists(os.path.join(store.queue_dir, a + ".msg"))
        missing = await apply(store, "delete", QueueFilter(ids=(a,)), NOW)
        assert missing.done == [] and missing.skipped == {a: "not in the queue"}
    asyncio.run(main())


def test_unknown_action_is_a_caller_bug(store: FsQueueStore) -> None:
    with pytest.raises(ValueError):
        asyncio.run(apply(store, "explode", QueueFilter(), NOW))


# -- bounce ------------------------------------------------------------------------------

def test_bounce_queues_an_rfc3464_report_to_the_sender(store: FsQueueStore) -> None:
    async def main() -> None:
        qid = await put(store, rcpt("done@dest.test"),
                        rcpt("slow@dest.test", {"FAILURE", "DELAY"}, "rfc822;Slow@Dest.test"),
                        rcpt("new@dest.test"), rcpt("quiet@dest.test", {"NEVER"}),
                        envid="ENV-7", ret="HDRS")
        await finish(store, qid, 0, RecipientStatus.DELIVERED)
        await defer(store, qid, 1, reply="451 4.4.1 connect to mx.dest.test: timed out")
        result = await apply(store, "bounce", QueueFilter(ids=(qid,)), NOW,
                             report=ReportSettings(hostname="mx.goniec.test"))
        assert result.done == [qid] and result.skipped == {}
        assert store.get(qid) is None  # every recipient final: the message is gone
        [(env, dsn)] = reports(store)
        # From the null reverse-path to the original sender (RFC 3461 6.2).
        assert env.sender == "" and [r.address for r in env.recipients] == ["alice@sender.test"]
        assert env.info.session_id == "dsn"
        assert dsn["Received"].startswith("by mx.goniec.test (goniec, delivery status)")
        assert dsn["To"] == "<alice@sender.test>"
        assert dsn["Subject"] == "Undelivered Mail Returned to Sender: stuck mail"
        assert dsn["Auto-Submitted"] == "auto-replied"
        assert dsn.get_content_type() == "multipart/report"
        assert dsn.get_param("report-type") == "delivery-status"
        temporary, permanent = all_failures(dsn)  # an independent RFC 3464 reader
        # (it names a recipient by its ORCPT when there is one)
        assert set(temporary) == set() and set(permanent) == {b"Slow@Dest.test",
                                                              b"new@dest.test"}
        human, status, original = dsn.get_payload()
        assert DSN_NOTE in human.get_payload()
        blocks = status.get_payload()
        assert blocks[0]["Reporting-MTA"] == "dns; mx.goniec.test"
        assert blocks[0]["Original-Envelope-Id"] == "ENV-7"
        slow, new = blocks[1:]  # done@ was delivered, quiet@ said NOTIFY=NEVER
        assert slow["Final-Recipient"] == "rfc822; slow@dest.test"
        assert slow["Original-Recipient"] == "rfc822; Slow@Dest.test"
        assert (slow["Action"], slow["Status"]) == ("failed", "5.0.0")
        assert unfold(slow["Diagnostic-Code"]) == (
            "X-Goniec; 550 5.0.0 message returned by the administrator "
            "(last attempt: 451 4.4.1 connect to mx.dest.test: timed out)")  # the last attempt's reason too
        assert new["Final-Recipient"] == "rfc822; new@dest.test" and "Remote-MTA" not in new
        # RET=HDRS: only the original's header comes back (RFC 3461 4.3).
        assert original.get_content_type() == "text/rfc822-headers"
        assert "Subject: stuck mail" in original.get_payload()
    asyncio.run(main())


def test_bounce_with_reason_copy_and_full_return(store: FsQueueStore) -> None:
    async def main() -> None:
        qid = await put(store, "bob@dest.test", ret="FULL")
        await apply(store, "bounce", QueueFilter(), NOW, reason="domain\r\nclosed",
                    report=ReportSettings("mx.goniec.test", ndr_copy_to="postmaster@goniec.test"))
        assert store.get(qid) is None
        [(env, dsn)] = reports(store)
        assert [r.address for r in env.recipients] == ["alice@sender.test",
                                                       "postmaster@goniec.test"]
        block = dsn.get_payload()[1].get_payload()[1]
        assert unfold(block["Diagnostic-Code"]) == \
            "X-Goniec; 550 5.0.0 message returned by the administrator: domain closed"
        original = dsn.get_payload()[2]
        assert original.get_content_type() == "message/rfc822"
        assert original.get_payload()[0]["Message-ID"] == "<q1@sender.test>"
    asyncio.run(main())


def test_bounce_never_reports_about_a_report_and_honours_notify(store: FsQueueStore) -> None:
    async def main() -> None:
        dsn = await put(store, "alice@sender.test", sender="")  # itself a report
        quiet = await put(store, rcpt("bob@dest.test", {"NEVER"}))
        success_only = await put(store, rcpt("carol@dest.test", {"SUCCESS"}))
        done = await put(store)
        await finish(store, done, 0, RecipientStatus.FAILED)
        result = await apply(store, "bounce", QueueFilter(), NOW)
        assert result.done == [dsn, quiet, success_only]
        assert result.skipped == {done: "every recipient is done"}
        assert reports(store) == [] and store.list_ids() == [done]
    asyncio.run(main())


def test_bounce_of_a_held_message(store: FsQueueStore) -> None:
    async def main() -> None:
        qid = await put(store, held=True)
        result = await apply(store, "bounce", QueueFilter(state="held"), NOW)
        assert result.done == [qid] and store.get(qid) is None
        [(env, _dsn)] = reports(store)
        assert env.recipients[0].address == "alice@sender.test"
    asyncio.run(main())


# -- leases and races --------------------------------------------------------------------

@pytest.mark.parametrize("action", ["retry", "hold", "release", "delete", "bounce"])
def test_message_in_delivery_is_skipped(store: FsQueueStore, action: str) -> None:
    async def main() -> None:
        qid = await put(store, held=action == "release")
        await defer(store, qid)
        before = get(store, qid)
        lease = store.lease(qid)  # a delivery runner (any process) is at it right now
        assert lease is not None
        try:
            result = await apply(store, action, QueueFilter(ids=(qid,)), NOW)
        finally:
            lease.release()
        assert result.done == [] and result.skipped == {qid: BUSY}
        assert get(store, qid) == before and reports(store) == []
        result = await apply(store, action, QueueFilter(ids=(qid,)), NOW)
        assert result.done == [qid] and result.skipped == {}
    asyncio.run(main())


def test_message_gone_meanwhile_is_skipped(store: FsQueueStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        a = await put(store)
        b = await put(store)
        take = store.lease

        def lease_after_a_runner_delivered(queue_id: str) -> Any:
            if queue_id == a:  # delivered and removed between the listing and the lease
                store._remove_sync(queue_id)
            return take(queue_id)

        monkeypatch.setattr(store, "lease", lease_after_a_runner_delivered)
        seen: list[tuple[int, int]] = []
        result = await apply(store, "hold", QueueFilter(), NOW,
                             progress=lambda done, total: seen.append((done, total)))
        assert result.done == [b] and result.skipped == {a: GONE}
        assert seen == [(1, 2), (2, 2)]
    asyncio.run(main())


def test_message_changed_meanwhile_is_skipped(store: FsQueueStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        qid = await put(store)
        await defer(store, qid)
        real_select = queue_ops.select

        def select_then_a_runner_retries(*args: Any) -> list[QueuedMessage]:
            found = real_select(*args)
            msg = get(store, qid)  # the runner tried again meanwhile: now delivered
            done = RecipientState(msg.recipients[0].recipient, RecipientStatus.DELIVERED, 2)
            asyncio.run(store.update_recipients(qid, {0: done}))
            return found

        monkeypatch.setattr(queue_ops, "select", select_then_a_runner_retries)
        result = await apply(store, "retry", QueueFilter(state="deferred"), NOW)
        assert result.done == []
        assert result.skipped == {qid: "changed meanwhile: does not match the filter"}
    asyncio.run(main())


def test_actions_are_written_to_the_message_trail(store: FsQueueStore, tmp_path: Path) -> None:
    from goniec.obs import trail

    log = trail.Trail(tmp_path / "trail", 30)
    trail.set_current(log)

    async def main() -> None:
        qid = await put(store)
        await apply(store, "hold", QueueFilter(ids=(qid,)), NOW)
        await apply(store, "release", QueueFilter(ids=(qid,)), NOW)
        log.flush()
        events = [(e["event"], e.get("by")) for e in log.search(qid)]
        assert events == [("held", "admin"), ("released", "admin")], events

    try:
        asyncio.run(main())
    finally:
        trail.set_current(None)
        log.close()
