"""The open-relay test suite, over real sockets against the real `goniec serve`.

The client is 127.0.0.1, which this config does NOT trust (relay.networks is a
documentation network), so it may only send to the local domains unless it
logs in. Every classic trick (the sixteen of the old relay testers, plus
mixed case, trailing dots, UTF-8 domains, our own name and address literal,
after a failed login, after STARTTLS without login) must be refused or stay
local, and at the end nothing may sit in the spool for a remote domain.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from goniec.policy.addresses import has_routing_syntax, normalize_domain, split_address
from goniec.testing.process import ServerProcess, make_server, to_toml
from goniec.testing.smtpclient import LineClient

pytestmark = pytest.mark.e2e

LOCAL = {"goniec.test", "xn--bcher-kva.test"}
BODY = b"Subject: relay test\r\n\r\nThis must not leave.\r\n.\r\n"


class Client(LineClient):
    def starttls_with(self, ca: trustme.CA) -> None:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        self.starttls(ctx, "mx.goniec.test")
        assert self.cmd("EHLO relaytest.example").startswith(b"250")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.cmd("QUIT")
        super().close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           server_cert: tuple[Path, Path]) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("relay")
    srv = make_server(
        workdir,
        listeners=[{"name": "smtp", "tls": "starttls", "auth": "optional"},
                   {"name": "submission", "tls": "starttls", "auth": "required"}],
        tls={"certificate": str(server_cert[0]), "key": str(server_cert[1])},
        domains={"local": ["goniec.test", "bücher.test"]},
        relay={"networks": ["192.0.2.0/24"]},
        rates={"login_delay": 0},
    )
    srv.config_path.write_text(to_toml(srv.config))
    subprocess.run([sys.executable, "-m", "goniec.cli.main", "user", "add", "alice",
                    "--password-stdin", "-c", str(srv.config_path)],
                   input=b"correct horse\n", check=True, capture_output=True, timeout=60)
    srv.start()
    yield srv
    srv.stop()


# (MAIL FROM argument, RCPT TO argument): the classic relay tests (after the
# abuse.net / ORDB testers), with our own name and address literal as "local".
TRICKS = [
    ("<spamtest@goniec.test>", "<victim@remote.example>"),                 # 1 plain relay
    ("<>", "<victim@remote.example>"),                                     # 2 null sender
    ("<spamtest@[127.0.0.1]>", "<victim@remote.example>"),                 # 3 literal sender
    ("<spamtest@mx.goniec.test>", "<victim@remote.example>"),              # 4 our name as sender
    ("<spamtest@goniec.test>", "<victim%remote.example@goniec.test>"),     # 5 percent hack
    ("<spamtest@goniec.test>", "<victim%remote.example@[127.0.0.1]>"),     # 6 percent, literal
    ("<spamtest@goniec.test>", '<"victim@remote.example">'),               # 7 quoted, no domain
    ("<spamtest@goniec.test>", '<"victim%remote.example">'),               # 8 quoted percent
    ("<spamtest@goniec.test>", "<victim@remote.example@goniec.test>"),     # 9 double @
    ("<spamtest@goniec.test>", '<"victim@remote.example"@goniec.test>'),   # 10 quoted @, local
    ("<spamtest@goniec.test>", "<victim@remote.example@[127.0.0.1]>"),     # 11 double @, literal
    ("<spamtest@goniec.test>", "<@goniec.test:victim@remote.example>"),    # 12 source route
    ("<spamtest@goniec.test>", "<@[127.0.0.1]:victim@remote.example>"),    # 13 route via literal
    ("<spamtest@goniec.test>", "<remote.example!victim>"),                 # 14 bang path
    ("<spamtest@goniec.test>", "<remote.example!victim@goniec.test>"),     # 15 bang path, local
    ("<spamtest@goniec.test>", "<remote.example!victim@[127.0.0.1]>"),     # 16 bang, literal
    # and more
    ("<victim@remote.example>", "<victim@remote.example>"),                # spoofed remote sender
    ("<spamtest@goniec.test>", "<@a.example,@b.example:victim@remote.example>"),
    ("<spamtest@goniec.test>", "<victim@[127.0.0.1]>"),                    # our address literal
    ("<spamtest@goniec.test>", "<victim@[IPv6:::1]>"),
    ("<spamtest@goniec.test>", "<victim@mx.goniec.test>"),                 # our host name
    ("<spamtest@goniec.test>", "<VICTIM@REMOTE.EXAMPLE>"),                 # mixed case
    ("<spamtest@goniec.test>", "<victim@Remote.Example>"),
    ("<spamtest@goniec.test>", "<victim@remote.example.>"),                # trailing dot
    ("<spamtest@goniec.test>", "<victim@goniec.test.>"),
    ("<spamtest@goniec.test>", "<victim@goniec.test.remote.example>"),     # local as prefix
    ("<spamtest@goniec.test>", "<victim@remote-goniec.test>"),
    ("<spamtest@goniec.test> SMTPUTF8", "<ofiara@zdalny-ł.example>"),      # UTF-8 domain
    ("<spamtest@goniec.test> SMTPUTF8", "<victim@gоniec.test>"),           # Cyrillic "о"
    ("<spamtest@goniec.test> SMTPUTF8", "<victim%zdalny-ł.example@bücher.test>"),
    ("<spamtest@goniec.test>", "<victim%remote.example@GONIEC.TEST>"),
    ("<spamtest@goniec.test>", "<victim@remote.example> NOTIFY=NEVER"),
]


def assert_refused_or_local(reply: bytes, rcpt: str) -> None:
    code = int(reply[:3])
    if code >= 400:
        return
    assert code == 250, reply
    address = rcpt.split(">")[0].lstrip("<").rsplit(":", 1)[-1]
    local, domain = split_address(address)
    assert normalize_domain(domain) in LOCAL and not has_routing_syntax(local), (rcpt, reply)


@pytest.mark.parametrize(("sender", "rcpt"), TRICKS, ids=[f"{i + 1}" for i in range(len(TRICKS))])
def test_relay_trick_is_refused(server: ServerProcess, sender: str, rcpt: str) -> None:
    c = Client(server.ports["smtp"])
    c.reply()
    c.cmd("EHLO relaytest.example")
    assert c.cmd(f"MAIL FROM:{sender}")[:3] in (b"250", b"501", b"555"), sender
    reply = c.cmd(f"RCPT TO:{rcpt}")
    assert_refused_or_local(reply, rcpt)
    data = c.cmd("DATA")
    if data.startswith(b"354"):
        c.sock.sendall(BODY)
        c.reply()
    c.close()


def test_pipelined_tricks_in_one_transaction(server: ServerProcess) -> None:
    c = Client(server.ports["smtp"])
    c.reply()
    c.cmd("EHLO relaytest.example")
    batch = [b"MAIL FROM:<spamtest@goniec.test>"] + [
        f"RCPT TO:{r}".encode() for s, r in TRICKS if "SMTPUTF8" not in s
    ] + [b"RCPT TO:<alice@goniec.test>", b"DATA"]
    c.sock.sendall(b"\r\n".join(batch) + b"\r\n")
    assert c.reply().startswith(b"250")
    for line in batch[1:-1]:
        assert_refused_or_local(c.reply(), line.decode()[8:])
    assert c.reply().startswith(b"354")  # alice@goniec.test is local
    c.sock.sendall(BODY)
    assert c.reply().startswith(b"250")
    c.close()


def auth_plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_relay_after_failed_login(server: ServerProcess, ca: trustme.CA) -> None:
    c = Client(server.ports["smtp"])
    c.reply()
    c.cmd("EHLO relaytest.example")
    c.starttls_with(ca)
    assert c.cmd(auth_plain("alice", "wrong")).startswith(b"535")
    assert c.cmd(auth_plain("nobody", "")).startswith(b"5")
    c.cmd("MAIL FROM:<alice@goniec.test>")
    assert c.cmd("RCPT TO:<victim@remote.example>").startswith(b"550 5.7.1")
    c.close()


def test_relay_after_starttls_without_login(server: ServerProcess, ca: trustme.CA) -> None:
    c = Client(server.ports["smtp"])
    c.reply()
    c.cmd("EHLO relaytest.example")
    c.starttls_with(ca)
    # RFC 4954 5: an AUTH= parameter is a claim about the message, not a login.
    assert c.cmd("MAIL FROM:<alice@goniec.test> AUTH=alice@goniec.test").startswith(b"250")
    assert c.cmd("RCPT TO:<victim@remote.example>").startswith(b"550 5.7.1")
    c.close()


def test_login_does_not_survive_starttls_or_a_new_connection(server: ServerProcess,
                                                             ca: trustme.CA) -> None:
    c = Client(server.ports["submission"])
    c.reply()
    c.cmd("EHLO relaytest.example")
    c.starttls_with(ca)
    assert c.cmd(auth_plain("alice", "correct horse")).startswith(b"235")
    c.close()
    c = Client(server.ports["submission"])
    c.reply()
    c.cmd("EHLO relaytest.example")
    # No login on this connection: the submission port wants one before MAIL.
    assert c.cmd("MAIL FROM:<alice@goniec.test>").startswith(b"530")
    c.close()


def test_authenticated_relay_works_as_a_control(server: ServerProcess, ca: trustme.CA) -> None:
    """The positive control: the same server does relay for a logged-in user."""
    c = Client(server.ports["submission"])
    c.reply()
    c.cmd("EHLO relaytest.example")
    c.starttls_with(ca)
    assert c.cmd(auth_plain("alice", "correct horse")).startswith(b"235")
    c.cmd("MAIL FROM:<alice@goniec.test>")
    assert c.cmd("RCPT TO:<friend@control.example>").startswith(b"250")
    assert c.cmd("DATA").startswith(b"354")
    c.sock.sendall(BODY)
    assert c.reply().startswith(b"250")
    c.close()


def test_nothing_queued_for_a_remote_domain(server: ServerProcess) -> None:
    """Runs last in this module: read the spool through the queue API."""
    from goniec.queue.fs import FsQueueStore

    store = FsQueueStore(server.data_dir / "spool")
    try:
        messages = list(store.list_messages())
    finally:
        store.close()
    assert messages, "the local deliveries above should be queued"
    for msg in messages:
        for r in msg.recipients:
            local, domain = split_address(r.address)
            if normalize_domain(domain) == "control.example":
                assert msg.envelope.sender == "alice@goniec.test"
                continue
            assert normalize_domain(domain) in LOCAL, f"{msg.id} queued for {r.address}"
            assert not has_routing_syntax(local), f"{msg.id} queued for {r.address}"
