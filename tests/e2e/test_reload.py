"""Reloading the rules of a running server: SIGHUP and `goniec reload`.

A changed rule takes effect for new sessions; a broken file keeps the old rules
and the log says why in one line; an open session is never dropped; with
several workers the parent checks the file once and every worker follows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goniec.testing.process import ServerProcess, make_server, to_toml
from goniec.testing.smtpclient import LineClient

pytestmark = pytest.mark.e2e


class Conn(LineClient):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        assert self.reply().startswith(b"220")


def relay_reply(port: int) -> bytes:
    c = Conn(port)
    c.cmd("EHLO reload.example")
    c.cmd("MAIL FROM:<a@goniec.test>")
    reply = c.cmd("RCPT TO:<x@remote.example>")
    c.cmd("QUIT")
    c.close()
    return reply[:3]


def wait_for_log(server: ServerProcess, text: str, count: int, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if log.count(text) >= count:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} x{count} not in log:\n{log}")
        time.sleep(0.05)


def eventually_all(port: int, expected: bytes, tries: int = 12, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {relay_reply(port) for _ in range(tries)} == {expected}:
            return True
        time.sleep(0.1)
    return False


def start(tmp_path: Path, **extra: dict) -> ServerProcess:
    server = make_server(tmp_path, listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
                         relay={"networks": ["192.0.2.0/24"]}, **extra)
    return server.start()


def rewrite(server: ServerProcess, **sections: dict) -> None:
    for name, body in sections.items():
        server.config[name] = body
    tmp = server.config_path.with_suffix(".tmp")
    tmp.write_text(to_toml(server.config))
    os.replace(tmp, server.config_path)


def hup(server: ServerProcess) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGHUP)


def goniec(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GONIEC_CONFIG"}
    return subprocess.run([sys.executable, "-m", "goniec.cli.main", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_sighup_applies_new_rules_and_keeps_sessions(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        port = server.port
        assert relay_reply(port) == b"550"
        # A session in the middle of a transaction when the reload comes.
        open_session = Conn(port)
        open_session.cmd("EHLO reload.example")
        assert open_session.cmd("MAIL FROM:<a@goniec.test>").startswith(b"250")
        rewrite(server, relay={"networks": ["127.0.0.0/8"]})
        hup(server)
        log = wait_for_log(server, "event=reloaded", 1)
        assert "restart_needed=-" in log
        assert relay_reply(port) == b"250"  # new sessions: new rules
        # The open session was not dropped; it keeps its rules until its next MAIL.
        assert open_session.cmd("RCPT TO:<x@remote.example>").startswith(b"550")
        assert open_session.cmd("RSET").startswith(b"250")
        assert open_session.cmd("MAIL FROM:<a@goniec.test>").startswith(b"250")
        assert open_session.cmd("RCPT TO:<x@remote.example>").startswith(b"250")
        open_session.close()
    finally:
        server.stop()


def test_broken_file_keeps_old_rules_and_says_why(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        rewrite(server, relay={"networks": ["127.0.0.0/8"]})
        hup(server)
        wait_for_log(server, "event=reloaded", 1)
        # A file with a bad value: the old (reloaded) rules stay.
        good = server.config_path.read_text()
        server.config_path.write_text(good.replace('"127.0.0.0/8"', '"127.0.0.1/8"'))
        hup(server)
        log = wait_for_log(server, "event=reload_failed", 1)
        [line] = [x for x in log.splitlines() if "event=reload_failed" in x]
        assert "relay.networks[0]" in line and "host bits set" in line
        assert str(server.config_path) in line
        assert relay_reply(server.port) == b"250"
        # Broken TOML: the same.
        server.config_path.write_text("[relay\nnetworks = 1\n")
        hup(server)
        log = wait_for_log(server, "event=reload_failed", 2)
        assert "TOML syntax error" in log
        assert relay_reply(server.port) == b"250"
        # A key that needs a restart is named.
        rewrite(server, relay={"networks": ["127.0.0.0/8"]},
                queue={"min_free_space": "1MB"})
        hup(server)
        log = wait_for_log(server, "event=reloaded", 2)
        assert "restart_needed=queue" in log
    finally:
        server.stop()


def test_goniec_reload_command(tmp_path: Path) -> None:
    server = start(tmp_path, server={"workers": 2})
    try:
        pid_file = server.data_dir / "goniec.pid"
        assert server.proc is not None
        assert pid_file.read_text().strip() == str(server.proc.pid)
        # A broken file is reported by the command itself; the server is not touched.
        good = server.config_path.read_text()
        server.config_path.write_text(good + '\n[access]\nmode = "nobody"\n')
        out = goniec("reload", "-c", str(server.config_path))
        assert out.returncode == 2 and "access.mode" in out.stderr
        server.config_path.write_text(good)
        assert "event=reload" not in server.log()
        rewrite(server, relay={"networks": ["127.0.0.0/8"]}, access={"mode": "all_except"})
        out = goniec("reload", "-c", str(server.config_path))
        assert out.returncode == 0, out.stderr
        assert f"pid {server.proc.pid}" in out.stdout
        log = wait_for_log(server, "event=reloaded", 1)
        assert log.count("event=reloaded") == 1  # once, by the parent, for both workers
        # The workers apply it right after the parent's check; then whichever worker
        # takes a connection has the new rules.
        assert eventually_all(server.port, b"250")
        # A bad file with two workers: one log line, old rules kept.
        server.config_path.write_text("[relay]\nnetworks = 5\n")
        hup(server)
        log = wait_for_log(server, "event=reload_failed", 1)
        time.sleep(0.3)
        assert server.log().count("event=reload_failed") == 1
        assert {relay_reply(server.port) for _ in range(6)} == {b"250"}
    finally:
        server.stop()
    assert not pid_file.exists()
    out = goniec("reload", "-c", str(server.config_path.with_name("again.toml")))
    assert out.returncode == 2  # no such file


def test_reload_without_a_running_server(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.config_path.write_text(to_toml(server.config))
    out = goniec("reload", "-c", str(server.config_path))
    assert out.returncode == 1 and "no running server" in out.stderr


def test_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = start(tmp_path / "a")
    try:
        second = make_server(tmp_path / "b", listeners=[{"name": "smtp", "tls": "none",
                                                          "auth": "none"}])
        second.config["server"]["data_dir"] = first.config["server"]["data_dir"]
        (tmp_path / "b").mkdir()
        second.config_path.write_text(to_toml(second.config))
        out = goniec("serve", "-c", str(second.config_path))
        assert out.returncode == 2
        assert "another goniec server" in out.stderr and "goniec.pid" in out.stderr
        assert relay_reply(first.port) == b"550"  # the first one is unharmed
    finally:
        first.stop()
