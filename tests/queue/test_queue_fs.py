"""Filesystem spool only: recovery, full disks, memory use, concurrency, processes."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import hashlib
import multiprocessing
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from queue_helpers import SESSION, commit_many, envelope, put, spool_files

from goniec.errors import SMTPError
from goniec.queue import fsfile, fsutil, ids, records
from goniec.queue.api import MessageNotFound, RecoveryReport
from goniec.queue.fs import FsQueueStore
from goniec.queue.fswriter import FsMessageWriter

EMPTY: dict[str, list[str]] = {"incoming": [], "queue": [], "corrupt": []}


def _raise(err: int) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(err, os.strerror(err))
    return fail


# -- layout -------------------------------------------------------------------------------

def msg_file(store: FsQueueStore, qid: str) -> Path:
    return store.root / "queue" / f"{qid}.msg"


def test_footer_format() -> None:
    assert fsfile.footer(1234) == b"goniec-footer 1 00000000000000001234\n"
    assert len(fsfile.footer(0)) == len(fsfile.footer(10**19)) == fsfile.FOOTER_LEN == 37


def test_layout_after_commit(fs_store: FsQueueStore) -> None:
    """One file per accepted message: the message, its record, the footer."""
    qid = asyncio.run(put(fs_store, b"hello\r\n", env=envelope("a@x.test", "b@x.test")))
    assert spool_files(fs_store.root) == {"incoming": [], "queue": [f"{qid}.msg"],
                                          "corrupt": []}
    raw = msg_file(fs_store, qid).read_bytes()
    msg = fs_store.get(qid)
    assert msg is not None and msg.size == 7
    assert raw == b"hello\r\n" + records.format_record(msg) + fsfile.footer(7)
    text = raw[7:].decode("ascii")
    assert text.startswith("goniec-envelope 1\n")
    assert text.endswith("\nend 2\ngoniec-footer 1 00000000000000000007\n")
    assert msg_file(fs_store, qid).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("size", [1000, 1 << 20])  # in memory, spilled
def test_one_file_sync_per_commit(fs_store: FsQueueStore, size: int) -> None:
    qid = asyncio.run(put(fs_store, b"z" * size))
    assert fs_store.stats.snapshot() == (1, 1, 1)  # commits, file syncs, dir syncs
    assert spool_files(fs_store.root)["queue"] == [f"{qid}.msg"]
    with fs_store.open_message(qid) as f:
        assert f.read() == b"z" * size


def test_commit_is_one_job_and_one_write_without_copies(
    fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-memory chunks, record and footer go out in one writev, by one pool job."""
    chunks = [b"Received: x\r\n", b"Subject: y\r\n\r\n", b"body\r\n"]
    writes: list[list[Any]] = []
    jobs: list[Any] = []
    real_writev, real_submit = os.writev, fs_store._executor.submit

    def writev(fd: int, buffers: list[Any]) -> int:
        writes.append(list(buffers))
        return real_writev(fd, buffers)

    def submit(fn: Any, *args: Any) -> Any:
        jobs.append(fn)
        return real_submit(fn, *args)

    async def main() -> str:
        w = fs_store.new_message()
        for c in chunks:
            await w.write(c)
        monkeypatch.setattr(os, "writev", writev)
        monkeypatch.setattr(fs_store._executor, "submit", submit)
        return await w.commit(envelope(), SESSION)

    qid = asyncio.run(main())
    monkeypatch.undo()
    assert len(jobs) == 1 and len(writes) == 1
    sent = writes[0]
    assert len(sent) == 5 and all(a is b for a, b in zip(sent, chunks, strict=False))
    assert sent[4] == fsfile.footer(sum(map(len, chunks)))
    with fs_store.open_message(qid) as f:
        assert f.read() == b"".join(chunks)


@pytest.mark.parametrize("body_size", [0, 100, 1 << 20])
def test_record_larger_than_one_tail_read(fs_store: FsQueueStore, body_size: int) -> None:
    addrs = [f"recipient-{i:04d}@a-rather-long-domain-name.example" for i in range(500)]
    qid = asyncio.run(put(fs_store, b"b" * body_size, env=envelope(*addrs)))
    record_size = msg_file(fs_store, qid).stat().st_size - body_size - fsfile.FOOTER_LEN
    assert record_size > 2 * (16 << 10)
    msg = fs_store.get(qid)
    assert msg is not None and [r.address for r in msg.recipients] == addrs
    with fs_store.open_message(qid) as f:
        assert f.read() == b"b" * body_size
    assert asyncio.run(fs_store.recover()).messages == 1


def test_small_message_stays_in_memory_until_commit(fs_store: FsQueueStore) -> None:
    async def main() -> None:
        w = fs_store.new_message()
        await w.write(b"x" * 1000)
        assert spool_files(fs_store.root) == EMPTY
        await w.commit(envelope(), SESSION)

    asyncio.run(main())


def test_large_message_is_not_kept_in_memory(fs_store: FsQueueStore) -> None:
    chunk = b"y" * (64 << 10)

    async def main() -> tuple[int, int]:
        w = fs_store.new_message()
        assert isinstance(w, FsMessageWriter)
        peak_buffered = 0
        tracemalloc.start()
        try:
            for _ in range(80):  # 5 MiB
                await w.write(chunk)
                peak_buffered = max(peak_buffered, w.buffered)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert os.listdir(fs_store.incoming_dir) == [f"{w.queue_id}.msg"]
        await w.commit(envelope(), SESSION)
        return peak_buffered, peak

    peak_buffered, peak = asyncio.run(main())
    assert peak_buffered <= fs_store.memory_threshold
    assert peak < 1 << 20, peak  # 5 MiB went through; well under 1 MiB was ever allocated
    assert os.listdir(fs_store.incoming_dir) == []


def _spilled_body() -> bytes:
    return b"".join(hashlib.sha256(b"%d" % i).digest() * 2048 for i in range(80))  # 5 MiB


def test_open_message_is_exactly_the_body_of_a_spilled_message(fs_store: FsQueueStore) -> None:
    body = _spilled_body()

    async def main() -> str:
        w = fs_store.new_message()
        for i in range(0, len(body), 100_003):  # odd chunks, spilled along the way
            await w.write(body[i:i + 100_003])
        return await w.commit(envelope(), SESSION)

    qid = asyncio.run(main())
    assert msg_file(fs_store, qid).stat().st_size > len(body)  # record and footer follow
    with fs_store.open_message(qid) as f:
        assert f.read() == body  # everything at once
        assert f.read() == b"" and f.read(10) == b""
    with fs_store.open_message(qid) as f:
        parts = []
        while part := f.read(65_537):  # in pieces that do not divide the size
            parts.append(part)
        assert b"".join(parts) == body
        assert f.tell() == len(body)
    with fs_store.open_message(qid) as f:
        buf = bytearray(1 << 20)
        got = bytearray()
        while n := f.readinto(buf):
            got += buf[:n]
        assert got == body
    with fs_store.open_message(qid) as f:
        assert f.seek(-10, os.SEEK_END) == len(body) - 10
        assert f.read(100) == body[-10:]  # stops at the body's end, not the file's
        f.seek(12345)
        assert f.read(5) == body[12345:12350] and f.tell() == 12350
        f.seek(len(body) + 50)
        assert f.read() == b""


def test_open_message_is_exactly_the_body_of_a_small_message(fs_store: FsQueueStore) -> None:
    body = b"Subject: hi\r\n\r\nline one\r\nline two\r\n"
    qid = asyncio.run(put(fs_store, body))
    with fs_store.open_message(qid) as f:
        assert f.readable() and f.seekable()
        assert list(f) == body.splitlines(keepends=True)
    with fs_store.open_message(qid) as f:
        assert f.read(1) == b"S" and f.read(10_000) == body[1:] and f.read(1) == b""
    f = fs_store.open_message(qid)
    f.close()
    f.close()
    with pytest.raises(ValueError):
        f.read()


# -- record updates and removal -------------------------------------------------------------

def test_update_writes_an_env_that_wins(fs_store: FsQueueStore) -> None:
    qid = asyncio.run(put(fs_store, env=envelope("a@x.test", "b@x.test")))
    before = msg_file(fs_store, qid).read_bytes()
    msg = fs_store.get(qid)
    assert msg is not None
    new = records.RecipientState(msg.recipients[1].recipient, records.RecipientStatus.DEFERRED,
                                 1, 99.0, "421 try later")
    asyncio.run(fs_store.update_recipients(qid, {1: new}))
    assert spool_files(fs_store.root) == {"incoming": [], "queue": [f"{qid}.env", f"{qid}.msg"],
                                          "corrupt": []}
    assert msg_file(fs_store, qid).read_bytes() == before  # the message file never changes
    raw = (fs_store.root / "queue" / f"{qid}.env").read_bytes()
    assert records.parse_record(raw).recipients[1] == new
    for store in (fs_store, FsQueueStore(fs_store.root, min_free_space=0)):
        got = store.get(qid)
        assert got is not None and got.recipients == (msg.recipients[0], new)
        assert [m.recipients[1] for m in store.list_messages()] == [new]
    report = asyncio.run(fs_store.recover())
    assert (report.messages, report.corrupt) == (1, ())
    assert fs_store.get(qid) == got
    # a second update replaces the .env; the file syncs: one per update
    done = dataclasses.replace(new, status=records.RecipientStatus.DELIVERED, attempts=2)
    asyncio.run(fs_store.update_recipients(qid, {1: done}))
    got = fs_store.get(qid)
    assert got is not None and got.recipients[1] == done
    assert asyncio.run(fs_store.remove(qid)) is True
    assert spool_files(fs_store.root) == EMPTY


def test_remove_message_never_updated(fs_store: FsQueueStore) -> None:
    qid = asyncio.run(put(fs_store))
    assert asyncio.run(fs_store.remove(qid)) is True
    assert spool_files(fs_store.root) == EMPTY
    assert asyncio.run(fs_store.remove(qid)) is False


def test_remove_takes_the_message_durably_before_its_record(
    fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash mid-remove may leave the .env (inert), never the message file alone."""
    qid = asyncio.run(put(fs_store, env=envelope("a@x.test", "b@x.test")))
    msg = fs_store.get(qid)
    assert msg is not None
    delivered = dataclasses.replace(msg.recipients[0], status=records.RecipientStatus.DELIVERED)
    asyncio.run(fs_store.update_recipients(qid, {0: delivered}))
    steps: list[str] = []
    real_unlink, real_fsync = os.unlink, os.fsync

    def unlink(path: str, *args: Any, **kwargs: Any) -> None:
        steps.append("unlink " + os.path.basename(path).split(".")[1])
        if path.endswith(".env"):
            raise OSError(errno.EIO, "I/O error")  # as if the process died right here
        real_unlink(path, *args, **kwargs)

    def fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "fsync", fsync)
    assert asyncio.run(fs_store.remove(qid)) is True  # the message is gone for good
    monkeypatch.undo()
    assert steps == ["unlink msg", "fsync", "unlink env"]
    assert spool_files(fs_store.root)["queue"] == [f"{qid}.env"]
    # the leftover record is not a message, and recovery deletes it
    assert fs_store.get(qid) is None and list(fs_store.list_messages()) == []
    with pytest.raises(MessageNotFound):
        fs_store.open_message(qid)
    with pytest.raises(MessageNotFound):
        asyncio.run(fs_store.update_recipients(qid, {0: delivered}))
    report = asyncio.run(fs_store.recover())
    assert (report.messages, report.orphans_removed, report.corrupt) == (0, 1, ())
    assert spool_files(fs_store.root) == EMPTY


def test_remove_cleans_a_leftover_record(fs_store: FsQueueStore) -> None:
    qid = ids.new_id()
    (fs_store.root / "queue" / f"{qid}.env").write_bytes(b"left over")
    assert asyncio.run(fs_store.remove(qid)) is False
    assert spool_files(fs_store.root) == EMPTY


# -- readers while the server runs ------------------------------------------------------------

def test_list_skips_a_message_removed_after_the_listing(fs_store: FsQueueStore) -> None:
    async def three() -> list[str]:
        out = []
        for _ in range(3):
            out.append(await put(fs_store))
            await asyncio.sleep(0.002)
        return out

    a, b, c = asyncio.run(three())
    (fs_store.root / "incoming" / f"{ids.new_id()}.msg").write_bytes(
        msg_file(fs_store, a).read_bytes())  # complete-looking, but not a message yet
    listing = fs_store.list_messages()
    assert next(listing).id == a
    asyncio.run(fs_store.remove(b))
    assert [m.id for m in listing] == [c]


def test_get_of_a_message_removed_while_reading(fs_store: FsQueueStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Opened, then removed before its record was read: not found, not its old state."""
    qid = asyncio.run(put(fs_store))
    real = fsfile.open_read

    def open_then_removed(path: str) -> int:
        fd = real(path)
        asyncio.run(fs_store.remove(qid))
        return fd

    monkeypatch.setattr(fsfile, "open_read", open_then_removed)
    assert fs_store.get(qid) is None


def test_list_while_messages_come_and_go(fs_store: FsQueueStore,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """`goniec queue list` runs beside the server: never a half file, never an error."""
    stop = threading.Event()
    errors: list[BaseException] = []

    async def churn() -> None:
        while not stop.is_set():
            qids = await asyncio.gather(*(put(fs_store, b"x" * n) for n in (10, 300 << 10)))
            for qid in qids:
                msg = fs_store.get(qid)
                assert msg is not None
                await fs_store.update_recipients(qid, {0: dataclasses.replace(
                    msg.recipients[0], status=records.RecipientStatus.DEFERRED, attempts=1)})
                await fs_store.remove(qid)

    def run() -> None:
        try:
            asyncio.run(churn())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=run)
    writer.start()
    reader = FsQueueStore(fs_store.root, min_free_space=0)
    seen = 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for msg in reader.list_messages():
                seen += 1
                try:
                    with reader.open_message(msg.id) as f:
                        assert f.read() in (b"x" * 10, b"x" * (300 << 10))
                except MessageNotFound:
                    pass
    finally:
        stop.set()
        writer.join()
        reader.close()
    assert not errors, errors
    assert seen > 0
    assert "bad_record" not in caplog.text
    assert spool_files(fs_store.root) == EMPTY


# -- recovery -----------------------------------------------------------------------------

def test_recovery(fs_store: FsQueueStore) -> None:
    good = asyncio.run(put(fs_store, b"good\r\n", env=envelope("a@x.test", "b@x.test")))
    updated = asyncio.run(put(fs_store, b"updated\r\n"))
    msg = fs_store.get(updated)
    assert msg is not None
    asyncio.run(fs_store.update_recipients(updated, {0: dataclasses.replace(
        msg.recipients[0], status=records.RecipientStatus.DEFERRED, attempts=1)}))
    root = fs_store.root
    q = root / "queue"
    good_raw = (q / f"{good}.msg").read_bytes()

    def copy_of_good(new_id: str) -> bytes:
        return good_raw.replace(good.encode(), new_id.encode())

    # an unfinished write and an unfinished record update
    (root / "incoming" / f"{ids.new_id()}.msg").write_bytes(b"partial")
    (root / "incoming" / f"{good}.{ids.new_id()}.upd").write_bytes(b"goniec-envelope 1\n")
    # a remove cut between its two unlinks
    orphan = ids.new_id()
    (q / f"{orphan}.env").write_bytes(b"whatever it says")
    # a message file cut short, one of garbage, one with a record of an unknown version
    short, garbage, version = (ids.new_id() for _ in range(3))
    (q / f"{short}.msg").write_bytes(copy_of_good(short)[:-1])
    (q / f"{garbage}.msg").write_bytes(b"\x00\xffnot a message")
    (q / f"{version}.msg").write_bytes(
        copy_of_good(version).replace(b"goniec-envelope 1", b"goniec-envelope 9"))
    # a good message file whose later record does not parse: both set aside
    bad_env = ids.new_id()
    (q / f"{bad_env}.msg").write_bytes(copy_of_good(bad_env))
    (q / f"{bad_env}.env").write_bytes(b"goniec-envelope 1\n{}")
    (q / "stray.tmp").write_bytes(b"?")

    report = asyncio.run(fs_store.recover())

    assert report.messages == 2
    assert report.incoming_removed == 2
    assert report.orphans_removed == 1
    assert report.in_use == 0
    files = spool_files(root)
    assert files["incoming"] == []
    assert files["queue"] == sorted([f"{good}.msg", f"{updated}.env", f"{updated}.msg"])
    assert sorted(report.corrupt) == files["corrupt"] == sorted([
        f"{short}.msg", f"{garbage}.msg", f"{version}.msg", f"{bad_env}.msg", f"{bad_env}.env",
        "stray.tmp"])
    # set aside, never deleted: the bytes are intact
    assert (root / "corrupt" / f"{garbage}.msg").read_bytes() == b"\x00\xffnot a message"
    assert [m.id for m in fs_store.list_messages()] == [good, updated]
    assert asyncio.run(fs_store.recover()) == RecoveryReport(messages=2)


def _damage(raw: bytes, qid: str, how: str) -> bytes:
    foot = fsfile.FOOTER_LEN
    offset = int(raw[-foot:][len(fsfile.FOOTER_MAGIC):-1])
    other = ids.new_id()
    if how == "torn":  # cut anywhere: the footer is gone or misplaced
        return raw[: len(raw) // 2]
    if how == "no-newline":
        return raw[:-1]
    if how == "footer-garbage":
        return raw[:-foot] + b"x" * foot
    if how == "offset-past-end":
        return raw[:-foot] + fsfile.footer(len(raw))
    if how == "offset-off-by-one":
        return raw[:-foot] + fsfile.footer(offset + 1)
    if how == "record-cut":  # the end marker line lost, footer intact
        record = raw[offset:-foot]
        cut = record[: record.rindex(b"end ")]
        return raw[:offset] + cut + fsfile.footer(offset)
    if how == "other-id":
        return raw.replace(qid.encode(), other.encode())
    if how == "size-differs":
        return b"X" + raw[:-foot] + fsfile.footer(offset + 1)
    if how == "empty":
        return b""
    raise AssertionError(how)


DAMAGE = ["torn", "no-newline", "footer-garbage", "offset-past-end", "offset-off-by-one",
          "record-cut", "other-id", "size-differs", "empty"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_message_file_goes_to_corrupt(fs_store: FsQueueStore, how: str) -> None:
    qid = asyncio.run(put(fs_store, b"Subject: x\r\n\r\n" + b"b" * 20_000))
    path = msg_file(fs_store, qid)
    damaged = _damage(path.read_bytes(), qid, how)
    path.write_bytes(damaged)
    assert fs_store.get(qid) is None
    assert list(fs_store.list_messages()) == []
    with pytest.raises(MessageNotFound):
        fs_store.open_message(qid)
    report = asyncio.run(fs_store.recover())
    assert (report.messages, report.corrupt) == (0, (f"{qid}.msg",))
    assert (fs_store.root / "corrupt" / f"{qid}.msg").read_bytes() == damaged


@pytest.mark.parametrize("how", ["garbage", "other-id", "other-size", "other-envelope"])
def test_damaged_env_sets_the_message_aside(fs_store: FsQueueStore, how: str) -> None:
    qid = asyncio.run(put(fs_store, b"hello\r\n"))
    msg = fs_store.get(qid)
    assert msg is not None
    if how == "garbage":
        data = b"\x00garbage"
    elif how == "other-id":
        data = records.format_record(dataclasses.replace(msg, id=ids.new_id()))
    elif how == "other-size":
        data = records.format_record(dataclasses.replace(msg, size=msg.size + 1))
    else:
        data = records.format_record(records.new_message(
            qid, msg.created, envelope("mallory@x.test"), SESSION, msg.size))
    (fs_store.root / "queue" / f"{qid}.env").write_bytes(data)
    if how in ("garbage", "other-id"):  # readers refuse it (never fall back to the old state)
        assert fs_store.get(qid) is None and list(fs_store.list_messages()) == []
    report = asyncio.run(fs_store.recover())
    assert (report.messages, sorted(report.corrupt)) == (0, [f"{qid}.env", f"{qid}.msg"])
    assert spool_files(fs_store.root)["queue"] == []


def test_recovery_never_overwrites_in_corrupt(fs_store: FsQueueStore) -> None:
    q = fs_store.root / "queue"
    bad = ids.new_id()
    for n in range(3):
        (q / f"{bad}.msg").write_bytes(b"bad %d" % n)
        asyncio.run(fs_store.recover())
    assert sorted(os.listdir(fs_store.corrupt_dir)) == [f"{bad}.msg", f"{bad}.msg.1",
                                                        f"{bad}.msg.2"]
    assert (fs_store.root / "corrupt" / f"{bad}.msg.2").read_bytes() == b"bad 2"


def test_recovery_leaves_a_live_writer_alone(fs_store: FsQueueStore, tmp_path: Path) -> None:
    """Another worker process recovering the same spool must not eat work in progress."""
    other = FsQueueStore(fs_store.root, min_free_space=0)

    async def main() -> str:
        w = fs_store.new_message()
        await w.write(b"z" * (300 << 10))  # over the threshold: now in incoming/, locked
        report = await other.recover()
        assert report.in_use == 1 and report.incoming_removed == 0
        return await w.commit(envelope(), SESSION)

    try:
        qid = asyncio.run(main())
    finally:
        other.close()
    assert fs_store.get(qid) is not None


# -- failures -------------------------------------------------------------------------------

# Every step of a commit: create, write, sync, rename, directory sync.
COMMIT_STEPS = ["open", "writev", "fdatasync", "rename", "fsync"]


@pytest.mark.parametrize(("target", "spilled"), [
    *((t, False) for t in COMMIT_STEPS),
    *((t, True) for t in COMMIT_STEPS if t != "open"),  # its file was created by a write
])
def test_disk_full_at_commit(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch,
                             target: str, spilled: bool) -> None:
    """A full disk at any step: 452, and nothing left in queue/ or incoming/."""
    async def main() -> None:
        w = fs_store.new_message()
        await w.write(b"s" * (300 << 10) if spilled else b"hello\r\n")
        monkeypatch.setattr(os, target, _raise(errno.ENOSPC))
        with pytest.raises(SMTPError) as info:
            await w.commit(envelope(), SESSION)
        monkeypatch.undo()
        assert (info.value.reply.code, info.value.reply.enhanced) == (452, "4.3.1")
        assert info.value.temporary
        with pytest.raises(SMTPError):  # the writer stays failed
            await w.commit(envelope(), SESSION)
        await w.abort()
        await w.abort()

    asyncio.run(main())
    assert spool_files(fs_store.root) == EMPTY
    assert fs_store.stats.commits == 0


@pytest.mark.parametrize("target", COMMIT_STEPS)
def test_disk_full_at_update(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch,
                             target: str) -> None:
    qid = asyncio.run(put(fs_store))
    msg = fs_store.get(qid)
    assert msg is not None
    new = dataclasses.replace(msg.recipients[0], status=records.RecipientStatus.DELIVERED)
    monkeypatch.setattr(os, target, _raise(errno.ENOSPC))
    with pytest.raises(OSError):
        asyncio.run(fs_store.update_recipients(qid, {0: new}))
    monkeypatch.undo()
    assert spool_files(fs_store.root)["incoming"] == []
    if target != "fsync":  # renamed but perhaps not durable: either state is fine
        assert fs_store.get(qid) == msg


def test_disk_full_while_spilling(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        w = fs_store.new_message()
        await w.write(b"a" * (200 << 10))
        monkeypatch.setattr(os, "writev", _raise(errno.ENOSPC))
        with pytest.raises(SMTPError) as info:
            await w.write(b"b" * (200 << 10))
        monkeypatch.undo()
        assert info.value.reply.code == 452
        assert spool_files(fs_store.root) == EMPTY
        with pytest.raises(SMTPError):  # later writes report the same failure
            await w.write(b"c")
        await w.abort()

    asyncio.run(main())
    assert spool_files(fs_store.root) == EMPTY


def test_short_writes_are_completed(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.writev

    def short(fd: int, buffers: list[bytes]) -> int:  # the kernel may write less than asked
        first = bytes(buffers[0])
        return real(fd, [first[: max(1, len(first) // 3)]])

    monkeypatch.setattr(os, "writev", short)
    body = b"".join(b"line %d\r\n" % i for i in range(5000))
    qid = asyncio.run(put(fs_store, body))
    monkeypatch.undo()
    with fs_store.open_message(qid) as f:
        assert f.read() == body


@pytest.mark.parametrize("failing", ["rename", "fsync"])
def test_local_error_at_commit_leaves_nothing(
    fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    monkeypatch.setattr(os, failing, _raise(errno.EIO))

    async def main() -> None:
        w = fs_store.new_message()
        await w.write(b"hello\r\n")
        with pytest.raises(SMTPError) as info:
            await w.commit(envelope(), SESSION)
        assert (info.value.reply.code, info.value.reply.enhanced) == (451, "4.3.0")
        await w.abort()

    asyncio.run(main())
    monkeypatch.undo()
    assert spool_files(fs_store.root) == EMPTY


def test_cancelled_commit_then_abort(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client gone mid-commit: the commit finishes in its thread; abort waits for it."""
    real = os.fdatasync
    started = threading.Event()

    def slow(fd: int) -> None:
        started.set()
        time.sleep(0.2)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow)

    async def main() -> str:
        w = fs_store.new_message()
        await w.write(b"hello\r\n")
        task = asyncio.create_task(w.commit(envelope(), SESSION))
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await w.abort()
        return w.queue_id

    qid = asyncio.run(main())
    # Committed before abort could act: kept (a duplicate is better than a loss).
    assert fs_store.get(qid) is not None
    assert spool_files(fs_store.root)["incoming"] == []


@pytest.mark.parametrize("fails", [False, True])
def test_cancelled_write_then_commit(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch,
                                     fails: bool) -> None:
    """A write whose caller was cancelled still finishes (or fails) before anything else."""
    real = os.writev
    started = threading.Event()

    def slow(fd: int, buffers: list[bytes]) -> int:
        started.set()
        time.sleep(0.1)
        if fails:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, buffers)

    async def main() -> str:
        w = fs_store.new_message()
        await w.write(b"a" * (200 << 10))
        monkeypatch.setattr(os, "writev", slow)
        task = asyncio.create_task(w.write(b"b" * (200 << 10)))
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.undo()
        if fails:
            with pytest.raises(SMTPError) as info:
                await w.write(b"c")
            assert info.value.reply.code == 452
            with pytest.raises(SMTPError):
                await w.commit(envelope(), SESSION)
            await w.abort()
            return ""
        await w.write(b"c")
        return await w.commit(envelope(), SESSION)

    qid = asyncio.run(main())
    if fails:
        assert spool_files(fs_store.root) == EMPTY
    else:
        with fs_store.open_message(qid) as f:
            assert f.read() == b"a" * (200 << 10) + b"b" * (200 << 10) + b"c"


def test_dropped_writer_removes_its_file(fs_store: FsQueueStore) -> None:
    async def main() -> None:
        w = fs_store.new_message()
        await w.write(b"q" * (300 << 10))
        assert os.listdir(fs_store.incoming_dir)

    asyncio.run(main())
    gc.collect()
    assert os.listdir(fs_store.incoming_dir) == []


def test_free_space_is_cached(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = os.statvfs

    def statvfs(path: Any) -> os.statvfs_result:
        calls.append(path)
        return real(path)

    monkeypatch.setattr("goniec.queue.fs.os.statvfs", statvfs)
    free = real(fs_store.root).f_bavail * real(fs_store.root).f_frsize
    assert fs_store.free_space_ok(1024)
    assert not fs_store.free_space_ok(free * 2)
    assert len(calls) == 1
    fs_store.min_free_space = free * 2
    assert not fs_store.free_space_ok(0)


# -- concurrency ------------------------------------------------------------------------------

def test_concurrent_commits_share_directory_fsyncs(fs_store: FsQueueStore) -> None:
    async def main() -> list[str]:
        return list(await asyncio.gather(*(put(fs_store) for _ in range(200))))

    qids = asyncio.run(main())
    assert sorted(m.id for m in fs_store.list_messages()) == sorted(qids)
    assert spool_files(fs_store.root)["incoming"] == []
    commits, file_syncs, dir_syncs = fs_store.stats.snapshot()
    assert (commits, file_syncs) == (200, 200)
    assert 1 <= dir_syncs <= 200


def test_dir_syncer_coalesces() -> None:
    stats = fsutil.SyncStats()
    fd = fsutil.open_dir(".")
    syncer = fsutil.DirSyncer(fd, stats)
    try:
        threads = [threading.Thread(target=syncer.sync) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    assert 1 <= stats.dir_syncs <= 32


def test_two_processes_share_one_spool(fs_store: FsQueueStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        a, b = pool.starmap(commit_many, [(str(fs_store.root), 50)] * 2)
    assert len(set(a) | set(b)) == 100
    assert sorted(m.id for m in fs_store.list_messages()) == sorted(a + b)
    assert asyncio.run(fs_store.recover()).messages == 100


def test_writer_of_a_closed_store_fails_temporarily(tmp_path: Path) -> None:
    store = FsQueueStore(tmp_path / "spool", min_free_space=0)

    async def main() -> None:
        w = store.new_message()
        await w.write(b"x")
        store.close()
        with pytest.raises(SMTPError) as info:
            await w.commit(envelope(), SESSION)
        assert info.value.reply.code == 451
        await w.abort()

    asyncio.run(main())
    assert spool_files(store.root) == EMPTY


def _try_lease(root: str, qid: str) -> bool:
    store = FsQueueStore(root, min_free_space=0)
    try:
        lease = store.lease(qid)
        if lease is None:
            return False
        lease.release()
        return True
    finally:
        store.close()


def test_lease_excludes_other_processes_and_dies_with_holder(fs_store: FsQueueStore) -> None:
    qid = asyncio.run(put(fs_store))
    lease = fs_store.lease(qid)
    assert lease is not None
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_try_lease, (str(fs_store.root), qid)) is False
        lease.release()
        assert pool.apply(_try_lease, (str(fs_store.root), qid)) is True
    # A lease is an flock on the message file: nothing is left behind to clean up.
    assert not os.path.exists(fs_store.lease_dir)
    # ... but lease files of an older version are cleaned by recover (a held one stays).
    os.mkdir(fs_store.lease_dir)
    open(os.path.join(fs_store.lease_dir, qid), "w").close()
    asyncio.run(fs_store.recover())
    assert os.listdir(fs_store.lease_dir) == []


def test_lease_of_a_removed_message_is_refused(fs_store: FsQueueStore) -> None:
    qid = asyncio.run(put(fs_store))
    lease = fs_store.lease(qid)
    assert lease is not None
    assert fs_store.lease(qid) is None  # one holder at a time, in this process too
    assert asyncio.run(fs_store.remove(qid))
    lease.release()
    assert fs_store.lease(qid) is None  # gone: no lease


def test_hold_survives_reopen(fs_store: FsQueueStore) -> None:
    async def main() -> tuple[str, str]:
        w = fs_store.new_message()
        await w.write(b"hello\r\n")
        at_commit = await w.commit(envelope(), SESSION, held=True, hold_reason="quarantine")
        assert fs_store.stats.file_syncs == 1  # held at commit: no second write
        later = await put(fs_store)
        await fs_store.hold(later, "operator")
        return at_commit, later

    at_commit, later = asyncio.run(main())
    # held at commit: in the embedded record, no .env written
    assert not (fs_store.root / "queue" / f"{at_commit}.env").exists()
    other = FsQueueStore(fs_store.root, min_free_space=0)
    try:
        a, b = other.get(at_commit), other.get(later)
        assert a is not None and a.held and a.hold_reason == "quarantine"
        assert b is not None and b.held and b.hold_reason == "operator"
        asyncio.run(other.release(at_commit))
    finally:
        other.close()
    third = FsQueueStore(fs_store.root, min_free_space=0)
    try:
        a = third.get(at_commit)
        assert a is not None and not a.held and a.hold_reason == ""
        assert asyncio.run(third.recover()).corrupt == ()
    finally:
        third.close()


def test_release_of_a_message_not_held_writes_nothing(fs_store: FsQueueStore) -> None:
    qid = asyncio.run(put(fs_store))
    asyncio.run(fs_store.release(qid))
    assert not (fs_store.root / "queue" / f"{qid}.env").exists()
