"""Filesystem spool only: recovery, full disks, memory use, concurrency, processes."""

from __future__ import annotations

import asyncio
import errno
import gc
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
from goniec.queue import fsutil, ids, records
from goniec.queue.fs import FsQueueStore
from goniec.queue.fswriter import FsMessageWriter

EMPTY: dict[str, list[str]] = {"incoming": [], "queue": [], "corrupt": []}


def _raise(err: int) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(err, os.strerror(err))
    return fail


# -- layout -------------------------------------------------------------------------------

def test_layout_after_commit(fs_store: FsQueueStore) -> None:
    qid = asyncio.run(put(fs_store, b"hello\r\n"))
    root = fs_store.root
    assert spool_files(root) == {"incoming": [], "queue": [f"{qid}.env", f"{qid}.msg"],
                                 "corrupt": []}
    assert (root / "queue" / f"{qid}.msg").read_bytes() == b"hello\r\n"
    text = (root / "queue" / f"{qid}.env").read_text()
    assert text.startswith("goniec-envelope 1\n") and text.endswith("\nend 1\n")
    assert (root / "queue" / f"{qid}.msg").stat().st_mode & 0o777 == 0o600


def test_fsyncs_per_commit(fs_store: FsQueueStore) -> None:
    asyncio.run(put(fs_store))
    assert fs_store.stats.snapshot() == (1, 2, 1)  # commits, file syncs, dir syncs


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


# -- recovery -----------------------------------------------------------------------------

def test_recovery(fs_store: FsQueueStore) -> None:
    good = asyncio.run(put(fs_store, b"good\r\n"))
    root = fs_store.root
    q = root / "queue"
    # an unfinished write and an unfinished record update
    (root / "incoming" / f"{ids.new_id()}.msg").write_bytes(b"partial")
    (root / "incoming" / f"{good}.{ids.new_id()}.upd").write_bytes(b"goniec-envelope 1\n")
    # a commit cut between its two renames
    orphan = ids.new_id()
    (q / f"{orphan}.msg").write_bytes(b"orphan")
    # a record without its end marker, with its message file
    record = (q / f"{good}.env").read_bytes()
    truncated = ids.new_id()
    (q / f"{truncated}.env").write_bytes(record.replace(good.encode(), truncated.encode())[:-6])
    (q / f"{truncated}.msg").write_bytes(b"good\r\n")
    # garbage, an unknown version, a record whose message file is missing or too short
    garbage, version, lost, short = (ids.new_id() for _ in range(4))
    (q / f"{garbage}.env").write_bytes(b"\x00\xffnot a record")
    (q / f"{version}.env").write_bytes(record.replace(b"goniec-envelope 1", b"goniec-envelope 9"))
    (q / f"{lost}.env").write_bytes(record.replace(good.encode(), lost.encode()))
    (q / f"{short}.env").write_bytes(record.replace(good.encode(), short.encode()))
    (q / f"{short}.msg").write_bytes(b"goo")
    (q / "stray.tmp").write_bytes(b"?")

    report = asyncio.run(fs_store.recover())

    assert report.messages == 1
    assert report.incoming_removed == 2
    assert report.orphans_removed == 1
    assert report.in_use == 0
    files = spool_files(root)
    assert files["incoming"] == []
    assert files["queue"] == [f"{good}.env", f"{good}.msg"]
    assert sorted(report.corrupt) == files["corrupt"] == sorted([
        f"{truncated}.env", f"{truncated}.msg", f"{garbage}.env", f"{version}.env",
        f"{lost}.env", f"{short}.env", f"{short}.msg", "stray.tmp"])
    # set aside, never deleted: the bytes are intact
    assert (root / "corrupt" / f"{garbage}.env").read_bytes() == b"\x00\xffnot a record"
    assert [m.id for m in fs_store.list_messages()] == [good]


def test_recovery_never_overwrites_in_corrupt(fs_store: FsQueueStore) -> None:
    q = fs_store.root / "queue"
    bad = ids.new_id()
    for n in range(3):
        (q / f"{bad}.env").write_bytes(b"bad %d" % n)
        asyncio.run(fs_store.recover())
    assert sorted(os.listdir(fs_store.corrupt_dir)) == [f"{bad}.env", f"{bad}.env.1",
                                                        f"{bad}.env.2"]
    assert (fs_store.root / "corrupt" / f"{bad}.env.2").read_bytes() == b"bad 2"


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


def test_orphan_check_respects_a_commit_in_progress(fs_store: FsQueueStore) -> None:
    """queue/<id>.msg without its record is not an orphan while its writer holds the lock."""
    qid = ids.new_id()
    path = os.path.join(fs_store.incoming_dir, qid + ".msg")
    fd = fsutil.create_locked(path)
    try:
        os.rename(path, os.path.join(fs_store.queue_dir, qid + ".msg"))
        report = asyncio.run(fs_store.recover())
        assert report.in_use == 1 and report.orphans_removed == 0
    finally:
        os.close(fd)
    assert asyncio.run(fs_store.recover()).orphans_removed == 1


def test_leftover_message_file_is_not_a_message(fs_store: FsQueueStore) -> None:
    from goniec.queue.api import MessageNotFound

    qid = ids.new_id()
    (fs_store.root / "queue" / f"{qid}.msg").write_bytes(b"x")
    assert fs_store.get(qid) is None
    with pytest.raises(MessageNotFound):
        fs_store.open_message(qid)


def test_unreadable_record_is_skipped_by_list_and_get(fs_store: FsQueueStore) -> None:
    good = asyncio.run(put(fs_store))
    bad = ids.new_id()
    (fs_store.root / "queue" / f"{bad}.env").write_bytes(b"goniec-envelope 1\n{}")
    assert fs_store.get(bad) is None
    assert [m.id for m in fs_store.list_messages()] == [good]


# -- failures -------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["writev", "fdatasync"])
def test_disk_full_at_commit(fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch,
                             target: str) -> None:
    async def main() -> None:
        w = fs_store.new_message()
        await w.write(b"hello\r\n")
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


@pytest.mark.parametrize("failing", ["rename-msg", "rename-env", "dir-fsync"])
def test_local_error_at_commit_leaves_nothing(
    fs_store: FsQueueStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        if dst.endswith(".msg" if failing == "rename-msg" else ".env"):
            raise OSError(errno.EIO, "I/O error")
        real_rename(src, dst)

    if failing == "dir-fsync":
        monkeypatch.setattr(os, "fsync", _raise(errno.EIO))
    else:
        monkeypatch.setattr("goniec.queue.fswriter.os.rename", rename)

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


def test_update_is_atomic_and_leaves_no_temp(fs_store: FsQueueStore) -> None:
    qid = asyncio.run(put(fs_store, env=envelope("a@x.test", "b@x.test")))
    msg = fs_store.get(qid)
    assert msg is not None
    new = records.RecipientState(msg.recipients[1].recipient, records.RecipientStatus.DEFERRED,
                                 1, 99.0, "421 try later")
    asyncio.run(fs_store.update_recipients(qid, {1: new}))
    assert os.listdir(fs_store.incoming_dir) == []
    raw = (fs_store.root / "queue" / f"{qid}.env").read_bytes()
    assert records.parse_record(raw).recipients[1] == new


# -- concurrency ------------------------------------------------------------------------------

def test_concurrent_commits_share_directory_fsyncs(fs_store: FsQueueStore) -> None:
    async def main() -> list[str]:
        return list(await asyncio.gather(*(put(fs_store) for _ in range(200))))

    qids = asyncio.run(main())
    assert sorted(m.id for m in fs_store.list_messages()) == sorted(qids)
    assert spool_files(fs_store.root)["incoming"] == []
    commits, file_syncs, dir_syncs = fs_store.stats.snapshot()
    assert (commits, file_syncs) == (200, 400)
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
