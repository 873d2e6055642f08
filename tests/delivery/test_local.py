"""Local delivery: Maildir and the IIS Drop folder, aliases and forwards, through the runner."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
from flufl.bounce import all_failures

from goniec.delivery.local import LocalDelivery, LocalError, mailbox_dir, unique_name
from goniec.delivery.pickup import parse_pickup
from goniec.model import Recipient
from goniec.policy.recipients import RecipientTable

from .runner_support import BODY, Harness, Peer


def opener(data: bytes):  # type: ignore[no-untyped-def]
    return lambda: io.BytesIO(data)


def test_maildir_layout_and_headers(tmp_path: Path) -> None:
    agent = LocalDelivery("maildir", maildir_root=tmp_path, drop_dir=tmp_path / "drop",
                          hostname="mx.goniec.test")
    path = agent.deliver(opener(BODY), sender="alice@sender.test", mailbox="bob@goniec.test",
                         original="Bobby@goniec.test")
    box = tmp_path / "goniec.test" / "bob"
    assert path.parent == box / "new" and (box / "cur").is_dir()
    assert os.listdir(box / "tmp") == []
    data = path.read_bytes()
    assert data == (b"Return-Path: <alice@sender.test>\r\nX-Original-To: Bobby@goniec.test\r\n"
                    b"Delivered-To: bob@goniec.test\r\n" + BODY)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # A second copy never overwrites the first.
    again = agent.deliver(opener(BODY), sender="", mailbox="bob@goniec.test",
                          original="bob@goniec.test")
    assert again != path and len(os.listdir(box / "new")) == 2
    assert again.read_bytes().startswith(b"Return-Path: <>\r\nDelivered-To: bob@goniec.test\r\n")


def test_maildir_names_are_unique_and_safe() -> None:
    names = {unique_name("host/with:odd") for _ in range(1000)}
    assert len(names) == 1000
    assert all("/" not in n and n.endswith(".host\\057with\\072odd") for n in names)
    for bad in ("../x@goniec.test", ".hidden@goniec.test", "a/b@goniec.test", "x@.."):
        with pytest.raises(LocalError) as exc:
            mailbox_dir(Path("/srv/mail"), bad)
        assert exc.value.reply.code == 550


def test_forwarding_loop_is_refused(tmp_path: Path) -> None:
    agent = LocalDelivery("maildir", maildir_root=tmp_path, drop_dir=tmp_path,
                          hostname="mx.goniec.test")
    looped = b"Delivered-To: bob@goniec.test\r\n" + BODY
    with pytest.raises(LocalError) as exc:
        agent.deliver(opener(looped), sender="a@x.test", mailbox="bob@goniec.test",
                      original="bob@goniec.test")
    assert exc.value.reply.enhanced == "5.4.6"


def test_drop_folder_files_replay_through_pickup(tmp_path: Path) -> None:
    agent = LocalDelivery("drop", maildir_root=tmp_path, drop_dir=tmp_path / "drop",
                          hostname="mx.goniec.test")
    path = agent.deliver(opener(BODY), sender="alice@sender.test", mailbox="bob@goniec.test",
                         original="bob@goniec.test")
    assert path.suffix == ".eml" and [p.name for p in path.parent.iterdir()] == [path.name]
    data = path.read_bytes()
    assert data.startswith(b"X-Sender: alice@sender.test\r\nX-Receiver: bob@goniec.test\r\n")
    parsed = parse_pickup(data)
    assert parsed.sender == "alice@sender.test" and parsed.recipients == ("bob@goniec.test",)
    assert parsed.data.endswith(BODY)


def test_runner_local_delivery_aliases_forwards_and_reports(tmp_path: Path) -> None:
    sink = Peer().start()
    table = RecipientTable(
        mailboxes=frozenset({"bob", "carol"}),
        aliases={"team": ("bob@goniec.test", "carol@goniec.test")},
        forwards={"away": ("away@far.test",)})

    async def main() -> None:
        h = Harness(tmp_path, {"far.test": sink.port, "sender.test": sink.port},
                    local_domains=frozenset({"goniec.test"}), tables={"goniec.test": table})
        await h.put(Recipient("team@goniec.test", frozenset({"SUCCESS"})), "away@goniec.test",
                    "nobody@goniec.test")
        for _ in range(3):
            await h.runner.run_once()
        root = tmp_path / "mail" / "goniec.test"
        for box in ("bob", "carol"):
            [name] = os.listdir(root / box / "new")
            data = (root / box / "new" / name).read_bytes()
            assert f"Delivered-To: {box}@goniec.test\r\n".encode() in data
            assert b"X-Original-To: team@goniec.test\r\n" in data and data.endswith(BODY)
        forwarded = [g for g in sink.received if g.rcpts == ["away@far.test"]]
        assert len(forwarded) == 1 and forwarded[0].sender == "alice@sender.test"
        assert forwarded[0].data.startswith(b"Delivered-To: away@goniec.test\r\n")
        reports = {r.get_payload()[1].get_payload()[1]["Action"]: r for r in sink.reports()}
        assert set(reports) == {"delivered", "failed"}
        assert set(all_failures(reports["failed"])[1]) == {b"nobody@goniec.test"}
        assert h.store.list_ids() == []
        await h.close()
    try:
        asyncio.run(main())
    finally:
        sink.stop()


def test_runner_drop_mode(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, {}, local_domains=frozenset({"goniec.test"}),
                    local={"mode": "drop", "drop_dir": "drop"})
        await h.put("bob@goniec.test", "carol@goniec.test")
        await h.runner.run_once()
        files = sorted((tmp_path / "drop").iterdir())
        assert len(files) == 2 and all(f.suffix == ".eml" for f in files)
        receivers = sorted(parse_pickup(f.read_bytes()).recipients[0] for f in files)
        assert receivers == ["bob@goniec.test", "carol@goniec.test"]
        assert h.store.list_ids() == []
        await h.close()
    asyncio.run(main())
