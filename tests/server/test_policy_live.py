"""Access rules, recipient tables and limits on the real server over real sockets.

Each test uses its own client address in 127.0.0.0/8 so that per-address
counters of one test never touch another's.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from goniec.testing.process import ServerProcess, make_server, to_toml


class Conn:
    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.buf = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        while True:
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                if line[3:4] != b"-":
                    return line
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def cmd(self, line: str | bytes) -> bytes:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def data(self, body: bytes) -> bytes:
        assert self.cmd("DATA").startswith(b"354")
        self.sock.sendall(body + b".\r\n")
        return self.reply()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.sock.close()


def session(port: int, source: str, helo: str = "client.example.test") -> Conn:
    c = Conn(port, source)
    assert c.greeting.startswith(b"220"), c.greeting
    assert c.cmd(f"EHLO {helo}").startswith(b"250")
    return c


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("policy")
    # make_server writes plain tables: nested ones go in as TOML dotted keys.
    srv = make_server(
        workdir,
        listeners=[{"name": "smtp", "tls": "none", "auth": "optional"}],
        auth={"allow_plaintext": True, "restrict_senders": True,
              "senders.alice": ["alice@goniec.test"]},
        domains={"local": ["goniec.test"]},
        recipients={'"goniec.test".mailboxes': ["alice", "bob", "carol", "dave"],
                    '"goniec.test".aliases.postmaster': "alice"},
        relay={"networks": []},
        limits={"recipients": 3, "hop_count": 5, "messages_per_connection": 2,
                "message_size": 2000, "session_size": 3000},
        rates={"connections_per_ip": 5, "login_delay": 0},
        peers={"helo": "strict"},
    )
    srv.config_path.write_text(to_toml(srv.config))
    subprocess.run([sys.executable, "-m", "goniec.cli.main", "user", "add", "alice",
                    "--password-stdin", "-c", str(srv.config_path)],
                   input=b"correct horse\n", check=True, capture_output=True, timeout=60)
    srv.start()
    yield srv
    srv.stop()


def test_unknown_recipient_is_refused_at_rcpt(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.11")
    assert c.cmd("MAIL FROM:<x@remote.example>").startswith(b"250")
    assert c.cmd("RCPT TO:<nobody@goniec.test>").startswith(b"550 5.1.1")
    assert c.cmd("RCPT TO:<Alice@goniec.test>").startswith(b"250")
    assert c.cmd("RCPT TO:<postmaster@goniec.test>").startswith(b"250")
    assert c.data(b"Subject: t\r\n\r\nhi\r\n").startswith(b"250")
    c.close()


def test_recipients_per_message(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.12")
    c.cmd("MAIL FROM:<x@remote.example>")
    for name in ("alice", "bob", "carol"):
        assert c.cmd(f"RCPT TO:<{name}@goniec.test>").startswith(b"250")
    assert c.cmd("RCPT TO:<dave@goniec.test>").startswith(b"452 4.5.3")
    assert c.data(b"Subject: t\r\n\r\nhi\r\n").startswith(b"250")
    # The rest goes in the next transaction.
    c.cmd("MAIL FROM:<x@remote.example>")
    assert c.cmd("RCPT TO:<dave@goniec.test>").startswith(b"250")
    c.close()


def test_hop_count(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.13")
    for hops, expected in ((4, b"250"), (5, b"554 5.4.6")):
        c.cmd("MAIL FROM:<x@remote.example>")
        c.cmd("RCPT TO:<alice@goniec.test>")
        head = b"".join(b"Received: from hop%d\r\n" % i for i in range(hops))
        assert c.data(head + b"Subject: loop\r\n\r\nReceived: in the body\r\n").startswith(
            expected)
    c.close()


def test_messages_per_connection(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.14")
    for _ in range(2):
        c.cmd("MAIL FROM:<x@remote.example>")
        c.cmd("RCPT TO:<alice@goniec.test>")
        assert c.data(b"Subject: t\r\n\r\nhi\r\n").startswith(b"250")
    assert c.cmd("MAIL FROM:<x@remote.example>").startswith(b"421 4.7.0")
    assert c.closed()


def test_session_size(server: ServerProcess) -> None:
    body = b"Subject: big\r\n\r\n" + (b"x" * 88 + b"\r\n") * 20
    c = session(server.port, "127.0.0.15")
    c.cmd("MAIL FROM:<x@remote.example>")
    c.cmd("RCPT TO:<alice@goniec.test>")
    assert c.data(body).startswith(b"250")
    # Declared with SIZE: refused at MAIL; undeclared: refused at the dot.
    assert c.cmd(f"MAIL FROM:<x@remote.example> SIZE={len(body)}").startswith(b"452 4.3.4")
    c.cmd("MAIL FROM:<x@remote.example>")
    c.cmd("RCPT TO:<alice@goniec.test>")
    assert c.data(body).startswith(b"452 4.3.4")
    c.close()


def auth(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_sender_login_map(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.16")
    assert c.cmd(auth("alice", "correct horse")).startswith(b"235")
    assert c.cmd("MAIL FROM:<bob@goniec.test>").startswith(b"553 5.7.1")
    assert c.cmd("MAIL FROM:<ALICE@goniec.test>").startswith(b"250")
    # Logged in, alice may relay, as herself only.
    assert c.cmd("RCPT TO:<friend@remote.example>").startswith(b"250")
    c.close()


def test_helo_strict(server: ServerProcess) -> None:
    c = Conn(server.port, "127.0.0.17")
    assert c.cmd("EHLO [127.0.0.99]").startswith(b"550 5.7.1")
    assert c.cmd("EHLO goniec.test").startswith(b"550 5.7.1")
    assert c.cmd("EHLO nodots").startswith(b"504 5.5.2")
    assert c.cmd("MAIL FROM:<x@remote.example>").startswith(b"503")  # no HELO accepted yet
    assert c.cmd("EHLO [127.0.0.17]").startswith(b"250")
    assert c.cmd("EHLO client.example.test").startswith(b"250")
    c.close()


def test_connection_rate(server: ServerProcess) -> None:
    greetings = []
    for _ in range(7):
        c = Conn(server.port, "127.0.0.18")
        greetings.append(c.greeting[:9])
        c.close()
    assert greetings[:5] == [b"220 mx.go"] * 5
    assert greetings[5:] == [b"421 4.7.0"] * 2
    other = Conn(server.port, "127.0.0.19")  # another address is not affected
    assert other.greeting.startswith(b"220")
    other.close()
    assert "Too many connections from your address" in server.log()


def test_connection_control_only_the_list(tmp_path: Path) -> None:
    srv = make_server(tmp_path, listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
                      access={"mode": "only", "networks": ["127.0.0.1", "::1"]}).start()
    try:
        ok = Conn(srv.port, "127.0.0.1")
        assert ok.greeting.startswith(b"220")
        ok.close()
        denied = Conn(srv.port, "127.0.0.2")
        assert denied.greeting == b"554 5.7.1 Access denied"
        assert denied.closed()
        denied.close()
    finally:
        srv.stop()
