"""A password brute force over real sockets: slowed, then locked out; others are served.

The attacker is 127.0.0.1, the honest user 127.0.0.2 (all of 127.0.0.0/8 is
loopback). Small limits keep it quick: 5 failures a minute, 0.05 s of
slow-down per failure, and several hundred attempts in all.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goniec.testing.process import make_server, to_toml

pytestmark = pytest.mark.e2e

ATTEMPTS = 300


def plain(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n"


class Conn:
    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.buf = b""

    def reply(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            while i >= 0:
                line, rest = self.buf[:i], self.buf[i + 2 :]
                if line[3:4] != b"-":
                    self.buf = rest
                    return line
                self.buf = rest
                i = self.buf.find(b"\r\n")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def open_session(port: int, source: str = "127.0.0.1") -> Conn:
    c = Conn(port, source)
    assert c.reply().startswith(b"220")
    assert c.cmd(b"EHLO brute.example\r\n").startswith(b"250")
    return c


@pytest.mark.timeout(120)
def test_brute_force_is_slowed_then_locked_out(tmp_path: Path) -> None:
    server = make_server(
        tmp_path,
        listeners=[{"name": "smtp", "tls": "none", "auth": "optional"}],
        auth={"allow_plaintext": True},
        rates={"failed_logins_per_ip": 5, "failed_logins_per_user": 0, "login_delay": 0.05,
               "login_delay_max": 1, "lockout": 60},
    )
    server.config_path.write_text(to_toml(server.config))
    subprocess.run([sys.executable, "-m", "goniec.cli.main", "user", "add", "alice",
                    "--password-stdin", "-c", str(server.config_path)],
                   input=b"correct horse\n", check=True, capture_output=True, timeout=60)
    server.start()
    try:
        port = server.port
        codes: list[bytes] = []
        timings: list[float] = []
        conn = open_session(port)
        start = time.monotonic()
        for i in range(ATTEMPTS):
            t0 = time.monotonic()
            try:
                reply = conn.cmd(plain("alice", f"guess-{i}"))
            except (ConnectionError, OSError):
                conn.close()
                conn = open_session(port)
                reply = conn.cmd(plain("alice", f"guess-{i}"))
            timings.append(time.monotonic() - t0)
            codes.append(reply[:3])
            if reply.startswith(b"421"):
                conn.close()
                conn = open_session(port)
        conn.close()
        elapsed = time.monotonic() - start

        # Slowed: the first failures are answered 535 after a growing delay
        # (0.05 s, 0.10 s, ... 0.25 s: 0.75 s in all, on top of the password checks).
        assert codes[:5] == [b"535"] * 5, codes[:8]
        assert sum(timings[:5]) >= 0.75
        # Then locked out: every further attempt is 421 at once, the password unchecked.
        assert set(codes[5:]) == {b"421"}, codes[:10]
        assert sum(timings[10:]) / len(timings[10:]) < 0.2  # no argon2, no slow-down
        assert elapsed < 30

        # Even the right password is refused from the locked address...
        c = open_session(port)
        assert c.cmd(plain("alice", "correct horse")).startswith(b"421 4.7.0")
        c.close()
        # ...which may still send mail to local domains (only AUTH is locked).
        c = open_session(port)
        assert c.cmd(b"MAIL FROM:<a@goniec.test>\r\n").startswith(b"250")
        assert c.cmd(b"RCPT TO:<b@goniec.test>\r\n").startswith(b"250")
        c.close()
        # Another client logs in at once.
        c = open_session(port, "127.0.0.2")
        assert c.cmd(plain("alice", "correct horse")).startswith(b"235")
        c.close()

        log = server.log()
        assert "event=lockout" in log and "client=127.0.0.1" in log
        delays = [line.rsplit("delay=", 1)[1] for line in log.splitlines()
                  if "result=failed" in line]
        assert [float(d) for d in delays[:5]] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25])
        assert log.count("result=failed") == 6  # 5 slowed 535s + the one that locked
    finally:
        server.stop()
