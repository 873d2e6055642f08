"""The QueueStore contract: every backend must pass these (DESIGN 4, 6)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import multiprocessing

import pytest
from queue_helpers import SESSION, envelope, mint_ids, put

from goniec.model import Envelope, MailParams, Recipient
from goniec.queue import ids
from goniec.queue.api import (
    MessageNotFound,
    QueueStore,
    RecipientState,
    RecipientStatus,
    SubmissionInfo,
)

BODY = b"Subject: hi\r\n\r\nhello\r\n"


def test_store_satisfies_protocol(store: QueueStore) -> None:
    assert isinstance(store, QueueStore)


def test_round_trip(store: QueueStore) -> None:
    env = Envelope(
        "alice@example.org",
        (Recipient("bob@example.net", frozenset({"FAILURE", "DELAY"}), "rfc822;bob@example.net"),
         Recipient("carol@example.com")),
        MailParams(size=1234, body="8BITMIME", smtputf8=False, ret="HDRS", envid="ENV-1",
                   auth="<>"),
    )

    async def main() -> str:
        w = store.new_message()
        assert ids.is_valid(w.queue_id)
        header = b"Received: from x by y id " + w.queue_id.encode() + b"\r\n"
        await w.write(header)
        await w.write(BODY)
        assert w.size == len(header) + len(BODY)
        qid = await w.commit(env, SESSION)
        assert qid == w.queue_id
        return qid

    qid = asyncio.run(main())
    msg = store.get(qid)
    assert msg is not None
    assert msg.id == qid
    assert msg.envelope == env
    assert msg.sender == "alice@example.org"
    assert msg.info == SubmissionInfo("s1", "192.0.2.7", "client.test", "alice")
    assert abs(msg.created - ids.id_time(qid)) < 0.002
    assert [r.status for r in msg.recipients] == [RecipientStatus.PENDING] * 2
    assert [r.recipient for r in msg.recipients] == list(env.recipients)
    assert all(r.attempts == 0 and r.next_attempt == 0.0 for r in msg.recipients)
    assert not msg.is_done
    with store.open_message(qid) as f:
        data = f.read()
    assert data.endswith(BODY) and data.startswith(b"Received: ")
    assert msg.size == len(data)
    assert [m.id for m in store.list_messages()] == [qid]


def test_null_sender_and_utf8_addresses(store: QueueStore) -> None:
    env = Envelope("", (Recipient("józef@przykład.pl"), Recipient("\u7528\u6237@例子.cn")),
                   MailParams(smtputf8=True))
    qid = asyncio.run(put(store, env=env))
    msg = store.get(qid)
    assert msg is not None and msg.envelope == env and msg.sender == ""


def test_many_recipients_each_with_own_state(store: QueueStore) -> None:
    addrs = [f"user{i}@example.net" for i in range(100)]
    qid = asyncio.run(put(store, env=envelope(*addrs)))
    msg = store.get(qid)
    assert msg is not None and len(msg.recipients) == 100
    updates = {}
    for i, st in enumerate(msg.recipients):
        if i % 3 == 0:
            updates[i] = dataclasses.replace(st, status=RecipientStatus.DELIVERED, attempts=1,
                                             last_reply="250 2.0.0 Ok")
        elif i % 3 == 1:
            updates[i] = dataclasses.replace(st, status=RecipientStatus.DEFERRED, attempts=i,
                                             next_attempt=1e9 + i,
                                             last_reply=f"451 4.7.1 greylisted {i}\nsecond line")
    asyncio.run(store.update_recipients(qid, updates))
    again = store.get(qid)
    assert again is not None
    for i, st in enumerate(again.recipients):
        assert st.address == addrs[i]
        if i % 3 == 0:
            assert (st.status, st.attempts, st.last_reply) == (
                RecipientStatus.DELIVERED, 1, "250 2.0.0 Ok")
        elif i % 3 == 1:
            assert st.status is RecipientStatus.DEFERRED
            assert (st.attempts, st.next_attempt) == (i, 1e9 + i)
            assert st.last_reply == f"451 4.7.1 greylisted {i}\nsecond line"
        else:
            assert st == msg.recipients[i]


def test_abort_leaves_nothing(store: QueueStore) -> None:
    async def main() -> str:
        w = store.new_message()
        await w.write(BODY)
        await w.abort()
        await w.abort()  # idempotent
        with pytest.raises(RuntimeError):
            await w.write(b"more")
        return w.queue_id

    qid = asyncio.run(main())
    assert store.get(qid) is None
    assert list(store.list_messages()) == []
    with pytest.raises(MessageNotFound):
        store.open_message(qid)


def test_abort_after_commit_keeps_the_message(store: QueueStore) -> None:
    async def main() -> str:
        w = store.new_message()
        await w.write(BODY)
        qid = await w.commit(envelope(), SESSION)
        await w.abort()
        with pytest.raises(RuntimeError):
            await w.commit(envelope(), SESSION)
        return qid

    qid = asyncio.run(main())
    assert store.get(qid) is not None


def test_commit_without_recipients_is_a_caller_bug(store: QueueStore) -> None:
    async def main() -> None:
        w = store.new_message()
        await w.write(BODY)
        with pytest.raises(ValueError):
            await w.commit(Envelope("a@b.c", ()), SESSION)
        await w.abort()

    asyncio.run(main())
    assert list(store.list_messages()) == []


def test_empty_message(store: QueueStore) -> None:
    async def main() -> str:
        w = store.new_message()
        await w.write(b"")
        return await w.commit(envelope(), SESSION)

    qid = asyncio.run(main())
    with store.open_message(qid) as f:
        assert f.read() == b""


def test_ids_unique_and_ordered(store: QueueStore) -> None:
    writers = [store.new_message() for _ in range(2000)]
    qids = [w.queue_id for w in writers]
    assert len(set(qids)) == len(qids)
    assert all(ids.is_valid(q) for q in qids)
    times = [ids.id_time(q) for q in qids]
    assert times == sorted(times)


def test_ids_unique_across_processes() -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        a, b = pool.map(mint_ids, [20000, 20000])
    assert len(set(a) | set(b)) == 40000


def test_list_is_oldest_first(store: QueueStore) -> None:
    async def main() -> list[str]:
        out = []
        for _ in range(5):
            out.append(await put(store))
            await asyncio.sleep(0.002)  # ids are ordered to the millisecond
        return out

    qids = asyncio.run(main())
    assert [m.id for m in store.list_messages()] == qids


def test_update_and_remove(store: QueueStore) -> None:
    qid = asyncio.run(put(store, env=envelope("a@x.test", "b@x.test")))
    msg = store.get(qid)
    assert msg is not None
    a, b = msg.recipients

    async def main() -> None:
        done = await store.update_recipients(
            qid, {0: dataclasses.replace(a, status=RecipientStatus.DELIVERED, attempts=1)})
        assert not done.is_done
        with pytest.raises(ValueError):
            await store.update_recipients(qid, {2: a})
        with pytest.raises(ValueError):  # the identity of a recipient never changes
            await store.update_recipients(qid, {1: a})
        with pytest.raises(MessageNotFound):
            await store.update_recipients(ids.new_id(), {0: a})
        done = await store.update_recipients(
            qid, {1: dataclasses.replace(b, status=RecipientStatus.FAILED, attempts=3,
                                         last_reply="550 5.1.1 no such user")})
        assert done.is_done
        assert store.get(qid) == done
        assert await store.remove(qid) is True
        assert await store.remove(qid) is False
        assert await store.remove("../../etc/passwd") is False

    asyncio.run(main())
    assert store.get(qid) is None
    assert list(store.list_messages()) == []
    with pytest.raises(MessageNotFound):
        store.open_message(qid)


def test_recipient_state_defaults_fit_updates(store: QueueStore) -> None:
    qid = asyncio.run(put(store))
    msg = store.get(qid)
    assert msg is not None
    new = RecipientState(msg.recipients[0].recipient, RecipientStatus.DEFERRED, 1, 5.0, "x")
    after = asyncio.run(store.update_recipients(qid, {0: new}))
    assert after.recipients == (new,)


def test_large_message_round_trips(store: QueueStore) -> None:
    chunk_count, chunk_size = 80, 64 << 10  # 5 MiB

    def chunk(i: int) -> bytes:
        return hashlib.sha256(b"%d" % i).digest() * (chunk_size // 32)

    async def main() -> tuple[str, str]:
        w = store.new_message()
        h = hashlib.sha256()
        for i in range(chunk_count):
            c = chunk(i)
            h.update(c)
            await w.write(c)
        return await w.commit(envelope(), SESSION), h.hexdigest()

    qid, digest = asyncio.run(main())
    msg = store.get(qid)
    assert msg is not None and msg.size == chunk_count * chunk_size
    h = hashlib.sha256()
    with store.open_message(qid) as f:
        while block := f.read(1 << 20):
            h.update(block)
    assert h.hexdigest() == digest


def test_open_message_reads_like_a_file(store: QueueStore) -> None:
    body = b"".join(b"line %05d\r\n" % i for i in range(3000))
    qid = asyncio.run(put(store, body))
    msg = store.get(qid)
    assert msg is not None and msg.size == len(body)
    first_line_end = body.index(b"\n") + 1
    with store.open_message(qid) as f:
        assert f.read(7) == body[:7] and f.tell() == 7
        assert f.readline() == body[7:first_line_end]
        assert f.read(1 << 20) == body[first_line_end:]
        assert f.read() == b"" and f.read(1) == b""
        assert f.seek(0) == 0
        assert f.read() == body
        f.seek(-4, 2)
        assert f.read() == body[-4:]


def test_many_concurrent_commits(store: QueueStore) -> None:
    async def main() -> list[str]:
        return list(await asyncio.gather(*(put(store, b"n: %d\r\n\r\n" % i) for i in range(200))))

    qids = asyncio.run(main())
    assert len(set(qids)) == 200
    assert sorted(m.id for m in store.list_messages()) == sorted(qids)
    for i, qid in enumerate(qids):
        with store.open_message(qid) as f:
            assert f.read() == b"n: %d\r\n\r\n" % i


def test_recover_counts_messages(store: QueueStore) -> None:
    async def main() -> int:
        for _ in range(3):
            await put(store)
        return (await store.recover()).messages

    assert asyncio.run(main()) == 3


def test_invalid_ids_are_not_found(store: QueueStore) -> None:
    for bad in ("", "../queue", "A" * 23, "x" * 500):
        assert store.get(bad) is None
        with pytest.raises(MessageNotFound):
            store.open_message(bad)


def test_free_space(store: QueueStore) -> None:
    assert store.free_space_ok(0)
    assert store.free_space_ok(1024)


# -- delivery leases ---------------------------------------------------------------------

def test_lease_is_exclusive_until_released(store: QueueStore) -> None:
    qid = asyncio.run(put(store))
    first = store.lease(qid)
    assert first is not None and first.queue_id == qid
    assert store.lease(qid) is None  # held: even this process cannot take it twice
    first.release()
    first.release()  # idempotent
    again = store.lease(qid)
    assert again is not None
    again.release()


def test_lease_of_missing_or_removed_message(store: QueueStore) -> None:
    assert store.lease(ids.new_id()) is None
    assert store.lease("../etc/passwd") is None
    qid = asyncio.run(put(store))
    lease = store.lease(qid)
    assert lease is not None
    asyncio.run(store.remove(qid))  # the holder delivered it
    lease.release()
    assert store.lease(qid) is None


def test_delay_notified_survives_an_update(store: QueueStore) -> None:
    qid = asyncio.run(put(store))
    msg = store.get(qid)
    assert msg is not None
    new = dataclasses.replace(msg.recipients[0], status=RecipientStatus.DEFERRED,
                              delay_notified=True)
    asyncio.run(store.update_recipients(qid, {0: new}))
    got = store.get(qid)
    assert got is not None and got.recipients[0].delay_notified


def test_list_ids_matches_list_messages(store: QueueStore) -> None:
    qids = [asyncio.run(put(store)) for _ in range(3)]
    assert store.list_ids() == sorted(qids) == [m.id for m in store.list_messages()]


def test_commit_held(store: QueueStore) -> None:
    async def main() -> tuple[str, str]:
        w = store.new_message()
        await w.write(BODY)
        held = await w.commit(envelope(), SESSION, held=True, hold_reason="dmarc quarantine")
        return held, await put(store)

    held, normal = asyncio.run(main())
    msg = store.get(held)
    assert msg is not None and msg.held and msg.hold_reason == "dmarc quarantine"
    other = store.get(normal)
    assert other is not None and not other.held and other.hold_reason == ""
    assert {m.id: m.held for m in store.list_messages()} == {held: True, normal: False}


def test_hold_and_release(store: QueueStore) -> None:
    qid = asyncio.run(put(store, env=envelope("a@x.test", "b@x.test")))

    async def main() -> None:
        msg = await store.hold(qid, "operator")
        assert msg.held and msg.hold_reason == "operator"
        assert store.get(qid) == msg
        again = await store.hold(qid, "other reason")  # holding again: a new reason
        assert again.held and again.hold_reason == "other reason"
        a = msg.recipients[0]
        # recipient updates keep the hold
        after = await store.update_recipients(
            qid, {0: dataclasses.replace(a, status=RecipientStatus.DEFERRED, attempts=1)})
        assert after.held and after.hold_reason == "other reason"
        released = await store.release(qid)
        assert not released.held and released.hold_reason == ""
        assert released.recipients == after.recipients
        assert store.get(qid) == released
        assert await store.release(qid) == released  # not held: unchanged
        with pytest.raises(MessageNotFound):
            await store.hold(ids.new_id(), "x")
        with pytest.raises(MessageNotFound):
            await store.release(ids.new_id())
        assert await store.remove(qid) is True
        with pytest.raises(MessageNotFound):
            await store.release(qid)

    asyncio.run(main())
