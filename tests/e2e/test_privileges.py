"""Dropping root: a server started as root with `server.user` runs as that user.

Runs only as root (CI does). The work directory is made outside pytest's
0700 tmp root so the unprivileged user can reach it. Checks every process's
uid and gid, that data_dir changed hands, that mail is still accepted and
the control socket answers (root may connect), and that an unknown user is
a clear error at start.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from goniec.testing.process import make_server, to_toml
from goniec.testing.smtpclient import LineClient

pytestmark = [
    pytest.mark.e2e, pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root"),
]


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="goniec-priv-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ids_of(pid: int) -> tuple[int, int, str]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0]),
            fields["Groups"].strip())


def test_drops_to_nobody_after_binding(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody")
    server = make_server(workdir, listeners=[{"name": "smtp", "tls": "starttls", "auth": "none"}],
                         server={"workers": 2, "user": "nobody"})
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # as systemd's, for Type=notify
    sink.bind(str(workdir / "notify"))
    (workdir / "notify").chmod(0o777)  # as systemd's: the server sends after dropping root
    sink.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(workdir / "notify"))
    server.start()
    try:
        pids = [server.proc.pid]  # type: ignore[union-attr]
        assert sink.recv(200) == f"READY=1\nMAINPID={pids[0]}".encode()
        pids += [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(pids[0])], capture_output=True, text=True).stdout.split()]
        assert len(pids) == 3  # the supervisor and two workers
        for pid in pids:
            uid, gid, groups = ids_of(pid)
            assert (uid, gid) == (nobody.pw_uid, nobody.pw_gid), pid
            assert "0" not in groups.split()
        for path in [server.data_dir, *server.data_dir.rglob("*")]:
            assert path.lstat().st_uid == nobody.pw_uid, path
        c = LineClient(server.port)
        assert c.reply().startswith(b"220")
        for line in ("EHLO c.example", "MAIL FROM:<a@sender.example>",
                     "RCPT TO:<postmaster@goniec.test>", "DATA"):
            assert c.cmd(line)[:1] in (b"2", b"3")
        assert c.cmd(b"Subject: x\r\n\r\nas nobody\r\n.").startswith(b"250")
        c.close()
        st = json.loads(server.cli("status", "--json").stdout)
        assert st["state"] == "running" and st["workers"] == 2
        assert "event=privileges_dropped user=nobody" in server.log()
        # Files the CLI writes as root stay readable by the server's user.
        assert server.cli("token", "add", "ci").returncode == 0
        assert server.cli("user", "add", "boss", "--admin", "--password-stdin",
                          input="pw\n").returncode == 0
        for name in ("admin-tokens", "admin-users"):
            assert (server.data_dir / name).stat().st_uid == nobody.pw_uid, name
        r = server.cli("stop")
        assert r.returncode == 0, r.stderr
    finally:
        sink.close()
        server.stop()


def test_unknown_user_is_a_config_error(workdir: Path) -> None:
    config = make_server(workdir, server={"user": "no-such-user-goniec"}).config
    path = workdir / "goniec.toml"
    path.write_text(to_toml(config))
    r = subprocess.run([sys.executable, "-m", "goniec.cli.main", "serve", "-c", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "server.user: no such user 'no-such-user-goniec'" in r.stderr
