"""`goniec sendmail`: a real subprocess hands messages to the spool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from goniec.cli.sendmail import parse_args
from goniec.queue.fs import FsQueueStore
from goniec.testing.process import to_toml


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "goniec.toml"
    path.write_text(to_toml({"server": {"hostname": "mx.goniec.test",
                                        "data_dir": str(tmp_path / "data")}}))
    return path


def sendmail(config: Path, *args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "goniec.cli.sendmail", "-C", str(config), *args],
                          input=data, capture_output=True, timeout=60)


def queued(config: Path) -> list[tuple[str, list[str], bytes]]:
    store = FsQueueStore(config.parent / "data" / "spool", min_free_space=0)
    try:
        out = []
        for m in store.list_messages():
            with store.open_message(m.id) as f:
                out.append((m.sender, [r.address for r in m.envelope.recipients], f.read()))
        return out
    finally:
        store.close()


def test_t_extracts_recipients_and_removes_bcc(config: Path) -> None:
    msg = (b"From: App <app@sender.test>\nTo: a@dest.test\nCc: b@dest.test\n"
           b"Bcc: hidden@dest.test\nSubject: cron\n\nline\n.\nafter the dot\n")
    r = sendmail(config, "-t", "-i", "-f", "bounces@sender.test", "extra@dest.test", data=msg)
    assert r.returncode == 0, r.stderr
    [(sender, rcpts, data)] = queued(config)
    assert sender == "bounces@sender.test"
    assert rcpts == ["extra@dest.test", "a@dest.test", "b@dest.test", "hidden@dest.test"]
    assert data.startswith(b"Received: by mx.goniec.test (goniec, sendmail, from userid ")
    assert b"Bcc" not in data and b"hidden" not in data
    assert b"\r\nFrom: App <app@sender.test>\r\n" in data  # kept; Date, Message-ID added
    assert b"\r\nDate: " in data and b"\r\nMessage-ID: <" in data
    assert data.endswith(b"\r\n\r\nline\r\n.\r\nafter the dot\r\n")  # -i: dots are data


def test_explicit_recipients_and_lone_dot_ends_input(config: Path) -> None:
    msg = b"Subject: hi\r\nFrom: me@sender.test\r\n\r\nbody\r\n.\r\nnot part of it\r\n"
    r = sendmail(config, "-odq", "bob@dest.test", data=msg)
    assert r.returncode == 0, r.stderr
    [(sender, rcpts, data)] = queued(config)
    assert rcpts == ["bob@dest.test"] and sender.endswith("@mx.goniec.test")
    assert data.endswith(b"\r\n\r\nbody\r\n") and b"Message-ID: <" in data


def test_usage_and_config_errors(config: Path, tmp_path: Path) -> None:
    assert sendmail(config, data=b"Subject: x\n\nbody\n").returncode == 64  # no recipients
    assert sendmail(config, "-bp", data=b"").returncode == 64
    r = subprocess.run([sys.executable, "-m", "goniec.cli.sendmail", "-C",
                        str(tmp_path / "missing.toml"), "a@b.test"], input=b"x\n",
                       capture_output=True, timeout=60)
    assert r.returncode == 78 and b"no such file" in r.stderr
    opts = parse_args(["-oi", "-fme@x.test", "-N", "success,delay", "-R", "hdrs", "-V", "id1",
                       "--", "-odd@x.test"])
    assert opts.ignore_dots and opts.sender == "me@x.test" and opts.ret == "HDRS"
    assert opts.notify == frozenset({"SUCCESS", "DELAY"}) and opts.recipients == ["-odd@x.test"]
