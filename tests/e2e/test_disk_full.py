"""A spool on a real, really full filesystem: 452 4.3.1, never half a message.

Mounts a small tmpfs (needs root, as in CI); skipped where mounting is not allowed.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from goniec.testing.process import make_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                          capture_output=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_full_disk_gives_452_and_keeps_only_whole_messages(tmp_path: Path,
                                                           small_fs: Path) -> None:
    server = make_server(tmp_path, listeners=[{"name": "p", "tls": "none", "auth": "none"}],
                         queue={"min_free_space": 0})
    server.config["server"]["data_dir"] = str(small_fs / "data")
    server.start()
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 400  # ~400 KB
    accepted: list[str] = []
    refused = None
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as s:
            s.ehlo("c.goniec.test")
            for _ in range(20):  # 8 MB in all: far more than the 3 MB filesystem
                # Refused at MAIL once the spool knows it is full, or after the
                # body when the write itself runs out of room.
                code, text = s.mail("a@goniec.test")
                if code == 250:
                    s.rcpt("b@goniec.test")
                    code, text = s.data(body)
                if code != 250:
                    refused = (code, text)
                    s.rset()
                    break
                accepted.append(text.decode().rsplit(" ", 1)[1])
            assert refused is not None, "the filesystem never filled up"
            assert refused[0] == 452 and refused[1].startswith(b"4.3.1"), refused
            # The session is still usable after the refusal.
            assert s.noop()[0] == 250
        spool = server.data_dir / "spool"
        assert not list((spool / "incoming").iterdir())
        stored = sorted(p.name for p in (spool / "queue").iterdir())
        assert len(accepted) >= 1
        for qid in accepted:
            assert any(name.startswith(qid) for name in stored)
        # Every stored message is whole: it ends with the body we sent.
        from goniec.queue.fs import FsQueueStore

        store = FsQueueStore(spool, min_free_space=0)
        ids = [m.id for m in store.list_messages()]
        assert sorted(ids) == sorted(accepted)
        for qid in ids:
            with store.open_message(qid) as fh:
                assert fh.read().endswith(body)
        store.close()
    finally:
        server.stop()
