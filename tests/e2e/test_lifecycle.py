"""Start-up, shutdown and configuration errors of the real `goniec serve` process."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goniec.testing.process import make_server, to_toml

pytestmark = pytest.mark.e2e


def test_self_signed_certificate_makes_starttls_work_out_of_the_box(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as s:
            s.starttls(context=ctx)
            cert = s.sock.getpeercert(binary_form=True)
            assert cert
            assert s.ehlo("c.goniec.test")[0] == 250
        assert (server.data_dir / "tls" / "selfsigned-cert.pem").exists()
        key = server.data_dir / "tls" / "selfsigned-key.pem"
        assert key.stat().st_mode & 0o077 == 0  # the key is private
    finally:
        server.stop()


def test_sigterm_closes_idle_sessions_with_421_and_exits(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    assert sock.recv(1024).startswith(b"220")
    start = time.monotonic()
    assert server.proc is not None
    server.proc.terminate()
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"421 4.3.2 mx.goniec.test"), data
    assert server.proc.wait(15) == 0
    assert time.monotonic() - start < 5
    sock.close()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "goniec.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_broken_config_stops_startup_with_one_clear_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nhostname = "mx.goniec.test"\n\n[[listeners]]\nname = "smtp"\n'
                   'address = "127.0.0.1:2999"\ntls = "yes"\n')
    out = run_cli("serve", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert "bad.toml" in out.stderr and "listeners[0].tls" in out.stderr
    cfg.write_text("[server\nhostname = 1\n")
    out = run_cli("serve", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and "bad.toml:1:" in out.stderr and "TOML syntax" in out.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    server = make_server(tmp_path, listeners=[{"name": "smtp", "tls": "none", "auth": "none",
                                               "address": f"127.0.0.1:{port}"}])
    server.config_path.write_text(to_toml(server.config))
    out = run_cli("serve", "-c", str(server.config_path), cwd=tmp_path)
    busy.close()
    assert out.returncode != 0
    assert f"127.0.0.1:{port}" in out.stderr, out.stderr


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def test_killed_workers_are_restarted_and_give_back_their_connection_slots(
        tmp_path: Path) -> None:
    server = make_server(tmp_path, server={"workers": 2}, limits={"connections_per_ip": 2},
                         listeners=[{"name": "p", "tls": "none", "auth": "none"}]).start()
    try:
        assert server.proc is not None
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(2)]
        for sock in held:
            assert sock.recv(1024).startswith(b"220")
        workers = _children(server.proc.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = _children(server.proc.pid)
            if len(now) == 2 and not set(now) & set(workers):
                break
            time.sleep(0.05)
        assert len(now) == 2 and not set(now) & set(workers), "workers were not restarted"
        for sock in held:
            sock.close()
        # Both slots of 127.0.0.1 are free again: the dead workers' counts were released.
        # (Polled briefly: the supervisor reaps and releases asynchronously; a leak
        # would last forever and still fail here.)
        deadline = time.monotonic() + 5
        while True:
            fresh = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                     for _ in range(2)]
            greetings = [sock.recv(1024) for sock in fresh]
            for sock in fresh:
                sock.close()
            if all(g.startswith(b"220") for g in greetings) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert all(g.startswith(b"220") for g in greetings), greetings
        assert "connections_released=" in server.log()
    finally:
        server.stop()
