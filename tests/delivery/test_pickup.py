"""The Pickup folder: both file forms byte-correct, claimed once across a crash, Badmail."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

import pytest

from goniec.delivery.badmail import Badmail
from goniec.delivery.pickup import PROCESSING, PickupError, PickupFolder, parse_pickup
from goniec.queue.fs import FsQueueStore

MESSAGE = (b"From: App <app@sender.test>\r\nTo: Bob <bob@dest.test>\r\nSubject: pickup\r\n"
           b"\r\nline one\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n")


def smtp_form(message: bytes) -> bytes:
    """How .NET Framework / IIS write it: dots doubled, a lone dot at the end."""
    lines = message.splitlines(keepends=True)
    return b"".join(b"." + ln if ln.startswith(b".") else ln for ln in lines) + b".\r\n"


def test_envelope_lines_and_smtp_form_are_byte_correct() -> None:
    data = (b"x-sender: <robot@sender.test>\r\nX-Receiver: a@dest.test\r\n"
            b"x-receiver: <b@dest.test>\r\n" + smtp_form(MESSAGE))
    msg = parse_pickup(data)
    assert msg.sender == "robot@sender.test"
    assert msg.recipients == ("a@dest.test", "b@dest.test")  # not the To: header
    assert msg.data == MESSAGE


def test_plain_file_is_taken_as_is() -> None:
    # .NET Core / MimeKit: no dot-stuffing, no final dot; ".." stays "..".
    msg = parse_pickup(b"X-Sender: app@sender.test\r\nX-Receiver: bob@dest.test\r\n" + MESSAGE)
    assert msg.data == MESSAGE
    assert parse_pickup(MESSAGE, dot_stuffed="never").data == MESSAGE


def test_always_mode_unstuffs_without_final_dot() -> None:
    stuffed = smtp_form(MESSAGE)[:-3]  # IIS SmtpDotStuffPickupDirFiles, no terminator
    assert parse_pickup(stuffed, dot_stuffed="always").data == MESSAGE


def test_envelope_from_headers_and_bcc_removed() -> None:
    data = (b"From: \"App\" <app@sender.test>\nTo: a@dest.test, B <b@dest.test>\n"
            b"Cc: c@dest.test\nBcc: hidden@dest.test,\n  other@dest.test\nSubject: x\n\nbody\n")
    msg = parse_pickup(data)
    assert msg.sender == "app@sender.test"
    assert msg.recipients == ("a@dest.test", "b@dest.test", "c@dest.test", "hidden@dest.test",
                              "other@dest.test")
    assert b"Bcc" not in msg.data and b"hidden" not in msg.data
    assert msg.data == (b"From: \"App\" <app@sender.test>\r\nTo: a@dest.test, B <b@dest.test>\r\n"
                        b"Cc: c@dest.test\r\nSubject: x\r\n\r\nbody\r\n")


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"From: a@b.test\r\nSubject: no one\r\n\r\nbody\r\n", "no recipients"),
    (b"To: a@dest.test\r\n\r\nbody\r\n", "no sender"),
    (b"x-receiver: not an address\r\nFrom: a@b.test\r\n\r\nx\r\n", "not an address"),
    (b"just some text\r\n", "header"),
    (b"From: a@b.test\r\nTo: c@d.test\r\n\r\nbody\r\n.\r\nMAIL FROM:<x@y>\r\n", "after the end"),
])
def test_bad_files(data: bytes, why: str) -> None:
    with pytest.raises(PickupError, match=why):
        parse_pickup(data, dot_stuffed="always" if b"MAIL FROM" in data else "auto")


def _folder(tmp_path: Path, store: FsQueueStore) -> PickupFolder:
    badmail = Badmail(tmp_path / "badmail")
    return PickupFolder(tmp_path / "pickup", store, badmail, hostname="mx.goniec.test")


def test_folder_queues_once_and_survives_a_crash(tmp_path: Path) -> None:
    store = FsQueueStore(tmp_path / "spool", min_free_space=0)
    pickup = tmp_path / "pickup"
    (pickup / PROCESSING).mkdir(parents=True)
    (pickup / "a.eml").write_bytes(smtp_form(MESSAGE))
    (pickup / "b.txt").write_bytes(b"X-Sender: x@sender.test\r\nX-Receiver: y@dest.test\r\n"
                                   + MESSAGE)
    (pickup / ".partial.tmp").write_bytes(b"being written")
    (pickup / "bad.eml").write_bytes(b"nothing useful\r\n")

    async def main() -> None:
        folder = _folder(tmp_path, store)
        # A crash right after claiming c.eml: it sits in .processing/, never queued.
        (pickup / "c.eml").write_bytes(MESSAGE)
        claimed = folder._claim("c.eml")
        assert claimed is not None and not (pickup / "c.eml").exists()
        restarted = _folder(tmp_path, store)
        assert await restarted.recover() == 1
        assert await restarted.scan_once() == 3  # a, b, bad; the dot-file is left alone
        assert await restarted.scan_once() == 0
    asyncio.run(main())
    assert sorted(os.listdir(pickup)) == [".partial.tmp", PROCESSING]
    assert os.listdir(pickup / PROCESSING) == []
    queued = {m.envelope.recipients[0].address: m for m in store.list_messages()}
    assert sorted(queued) == ["bob@dest.test", "y@dest.test"] and len(store.list_ids()) == 3
    for msg in store.list_messages():
        with store.open_message(msg.id) as f:
            data = f.read()
        assert data.startswith(b"Received: by mx.goniec.test (goniec, pickup)")
        assert data.endswith(MESSAGE)  # both forms byte-correct
        assert data[data.index(b"\r\n\tid ") + 6:].startswith(msg.id.encode())
    bad = sorted((tmp_path / "badmail").iterdir())
    assert [p.name for p in bad] == ["pickup-bad.eml.bad", "pickup-bad.eml.bdr"]
    assert "does not start with a header" in bad[1].read_text()
    store.close()


def test_file_held_by_its_writer_is_left_alone(tmp_path: Path) -> None:
    store = FsQueueStore(tmp_path / "spool", min_free_space=0)
    pickup = tmp_path / "pickup"
    pickup.mkdir()
    path = pickup / "busy.eml"
    path.write_bytes(MESSAGE)
    with open(path, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # .NET's FileShare.None on Unix
        assert asyncio.run(_folder(tmp_path, store).scan_once()) == 0
    assert asyncio.run(_folder(tmp_path, store).scan_once()) == 1
    store.close()


def test_badmail_retention(tmp_path: Path) -> None:
    now = [time.time()]
    bad = Badmail(tmp_path, max_size=1000, max_age=3600, clock=lambda: now[0])
    for i in range(5):
        bad.put(f"m{i}", [b"x" * 300], f"reason {i}")
        old = time.time() - 10 * (5 - i)
        for ext in ("bad", "bdr"):
            os.utime(tmp_path / f"m{i}.{ext}", (old, old))
    bad.prune()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m2.bad", "m2.bdr", "m3.bad", "m3.bdr", "m4.bad", "m4.bdr"]  # <= 1000 bytes
    now[0] += 7200
    bad.prune()
    assert list(tmp_path.iterdir()) == []
    assert Badmail(tmp_path, max_size=0).put("x", [b"y"], "kept nothing") is None
