"""Sender authentication in the real `goniec serve`: inbound checks and DKIM signing.

Everything on loopback: clients connect from addresses in 127.0.0.0/8 (only
127.0.0.1 is on the relay list, so 127.0.0.2 and up are "the internet"), and
every DNS question goes to a dnslib server on 127.0.0.1 holding the zone
below. Domains end in .example, .test or .invalid.
"""

from __future__ import annotations

import base64
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim as dkimpy
import dns.message
import dns.query
import pytest
from cryptography.hazmat.primitives import serialization
from tests.mailauth.dnsserver import ZoneServer

from goniec.mailauth.keys import generate, keygen, public_record
from goniec.testing.process import ServerProcess, make_server, to_toml
from goniec.testing.smtpclient import LineClient

AUTHSERV = "mx.goniec.test"
GOOD_KEY = generate("rsa")


def session(port: int, source: str, helo: str = "client.good.example") -> LineClient:
    c = LineClient(port, source=source, timeout=15)
    assert c.reply().startswith(b"220")
    assert c.cmd(f"EHLO {helo}").startswith(b"250")
    return c


def send(c: LineClient, sender: str, rcpt: str | list[str], message: bytes) -> bytes:
    """One transaction with DATA; the reply to the final dot."""
    assert c.cmd(f"MAIL FROM:<{sender}>").startswith(b"250")
    for one in [rcpt] if isinstance(rcpt, str) else rcpt:
        assert c.cmd(f"RCPT TO:<{one}>").startswith(b"250")
    assert c.cmd("DATA").startswith(b"354")
    c.send(re.sub(rb"(?m)^\.", b"..", message) + b".\r\n")
    return c.reply()


def message(sender: str, subject: str = "hello", body: bytes = b"Hello Bob.\r\n") -> bytes:
    return (f"From: Sender <{sender}>\r\nTo: <bob@goniec.test>\r\nSubject: {subject}\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <{time.monotonic_ns()}@mail.example>\r\n\r\n").encode() + body


def dkimpy_sign(msg: bytes, domain: str = "good.example", selector: str = "s1") -> bytes:
    pem = GOOD_KEY.private_bytes(serialization.Encoding.PEM,  # type: ignore[union-attr]
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    header: bytes = dkimpy.sign(msg, selector.encode(), domain.encode(), pem,
                                canonicalize=(b"relaxed", b"relaxed"))
    return header + msg


def queued_id(reply: bytes) -> str:
    assert reply.startswith(b"250"), reply
    return reply.decode().rsplit(" ", 1)[1]


def stored(server: ServerProcess, qid: str) -> bytes:
    from goniec.queue.fs import FsQueueStore

    store = FsQueueStore(server.data_dir / "spool")
    try:
        with store.open_message(qid) as fh:
            return fh.read()
    finally:
        store.close()


def headers(data: bytes, name: str) -> list[bytes]:
    """The unfolded values of header field `name`, top first."""
    head = data.split(b"\r\n\r\n", 1)[0]
    head = re.sub(rb"\r\n[ \t]+", b" ", head)
    prefix = name.lower().encode() + b":"
    return [line[len(prefix):].strip() for line in head.split(b"\r\n")
            if line.lower().startswith(prefix)]


def wait_log(server: ServerProcess, pattern: str, timeout: float = 10.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, server.log())
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r}:\n{server.log()[-3000:]}")


# --- the zone and the server ---------------------------------------------------------------
@pytest.fixture(scope="module")
def zone() -> Iterator[ZoneServer]:
    server = ZoneServer().start()
    server.zone = {
        # SPF, DKIM and DMARC all pass for mail from 127.0.0.2.
        "good.example": [("TXT", "v=spf1 ip4:127.0.0.2 -all")],
        "s1._domainkey.good.example": [("TXT", public_record(GOOD_KEY))],
        "_dmarc.good.example": [("TXT", "v=DMARC1; p=reject")],
        # A domain that asks receivers to refuse what fails DMARC; nobody at 127.0.0.x may
        # send for it.
        "strict.example": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
        "_dmarc.strict.example": [("TXT", "v=DMARC1; p=reject")],
        "careful.example": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
        "_dmarc.careful.example": [("TXT", "v=DMARC1; p=quarantine")],
    }
    try:
        yield server
    finally:
        server.stop()


def dns_txt(zone: ZoneServer):  # type: ignore[no-untyped-def]
    """A dnsfunc for dkimpy that asks the zone server over UDP, as a receiver would."""
    def lookup(name: bytes, timeout: float = 5) -> bytes:
        query = dns.message.make_query(name.decode().rstrip("."), "TXT")
        answer = dns.query.udp(query, "127.0.0.1", port=zone.port, timeout=timeout)
        return b"".join(b"".join(r.strings) for rrset in answer.answer for r in rrset)
    return lookup


def write_config(srv: ServerProcess) -> None:
    srv.config_path.write_text(to_toml(srv.config))


def reload(srv: ServerProcess) -> None:
    """SIGHUP, then wait for the worker's `reloaded` line."""
    write_config(srv)
    before = srv.log().count("event=reloaded")
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while srv.log().count("event=reloaded") <= before:
        assert time.monotonic() < deadline, srv.log()[-2000:]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ours_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return keygen(tmp_path_factory.mktemp("dkim"), "ours.example", "sel1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, zone: ZoneServer,
           ours_key: tuple[Path, str]) -> Iterator[ServerProcess]:
    path, record = ours_key
    zone.zone["sel1._domainkey.ours.example"] = [("TXT", record)]
    workdir = tmp_path_factory.mktemp("mailauth")
    srv = make_server(
        workdir,
        listeners=[{"name": "smtp", "tls": "none", "auth": "optional"}],
        auth={"allow_plaintext": True},
        domains={"local": ["goniec.test", "lenient.test"]},
        relay={"networks": ["127.0.0.1"]},
        dns={"nameservers": ["127.0.0.1"], "port": zone.port, "timeout": 2},
        mailauth={"inbound": "on", "dmarc": "enforce", "max_size": "1MB", "memory": "2MB"},
    )
    # make_server writes two-level tables; an array of tables goes in by its dotted name.
    srv.config["mailauth.dkim"] = [{"domain": "ours.example", "selector": "sel1",
                                    "key_file": str(path), "subdomains": True}]
    write_config(srv)
    subprocess.run([sys.executable, "-m", "goniec.cli.main", "user", "add", "alice",
                    "--password-stdin", "-c", str(srv.config_path)],
                   input=b"correct horse\n", check=True, capture_output=True, timeout=60)
    srv.start()
    yield srv
    srv.stop()


# --- (a) inbound checks that pass ---------------------------------------------------------------
def test_passing_mail_gets_our_authentication_results(server: ServerProcess) -> None:
    signed = dkimpy_sign(message("alice@good.example"))
    forged = (f"Authentication-Results: {AUTHSERV}; spf=pass (forged) smtp.mailfrom=x@y.invalid;"
              " dkim=pass; dmarc=pass\r\n"
              f"Authentication-Results: (comment) {AUTHSERV.upper()}.; dmarc=pass (forged too)\r\n"
              "Authentication-Results: relay.other.example; spf=fail\r\n").encode()
    c = session(server.port, "127.0.0.2")
    qid = queued_id(send(c, "alice@good.example", "bob@goniec.test", forged + signed))
    c.close()
    data = stored(server, qid)
    results = headers(data, "Authentication-Results")
    ours = [r for r in results if r.lower().startswith(AUTHSERV.encode())]
    assert len(ours) == 1, results
    assert b"forged" not in data
    assert b"relay.other.example; spf=fail" in results  # another ADMD's field is kept
    text = ours[0].decode()
    assert "spf=pass" in text and "smtp.mailfrom=alice@good.example" in text
    assert "dkim=pass" in text and "header.d=good.example" in text
    assert "dmarc=pass" in text and "header.from=good.example" in text
    assert "arc=none" in text
    assert data.startswith(b"Received: ") and data.endswith(signed)
    line = wait_log(server, rf"event=mailauth [^\n]*msg={qid}[^\n]*")
    for field in ("spf=pass", "dkim=pass:good.example", "dmarc=pass", "arc=none",
                  "action=accept"):
        assert field in line.group(0), line.group(0)


def test_mail_from_the_relay_list_is_not_checked(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.1")
    qid = queued_id(send(c, "alice@good.example", "bob@goniec.test", message("alice@good.example")))
    c.close()
    assert not headers(stored(server, qid), "Authentication-Results")


# --- (b) spoofed mail from a p=reject domain ------------------------------------------------------
def test_spoofed_mail_refused_when_enforcing_recorded_when_not(server: ServerProcess) -> None:
    spoof = message("ceo@strict.example", "urgent wire transfer")
    before = server.spool_ids()
    c = session(server.port, "127.0.0.3", helo="mail.spoofer.invalid")
    reply = send(c, "ceo@strict.example", "bob@goniec.test", spoof)
    assert reply.startswith(b"550 5.7.1"), reply
    assert server.spool_ids() == before  # nothing stored
    assert c.cmd("NOOP").startswith(b"250")  # the session goes on
    c.close()
    line = wait_log(server, r"event=reject session=\S+ stage=mailauth [^\n]*")
    assert "dmarc=fail" in line.group(0) and "spf=fail" in line.group(0)

    server.config["mailauth"]["dmarc"] = "record"
    try:
        reload(server)
        c = session(server.port, "127.0.0.3", helo="mail.spoofer.invalid")
        qid = queued_id(send(c, "ceo@strict.example", "bob@goniec.test", spoof))
        c.close()
    finally:
        server.config["mailauth"]["dmarc"] = "enforce"
        reload(server)
    ours = headers(stored(server, qid), "Authentication-Results")
    assert len(ours) == 1
    assert b"dmarc=fail (p=reject dis=reject) header.from=strict.example" in ours[0]
    assert b"spf=fail" in ours[0]


def test_quarantine_is_stored_held(server: ServerProcess) -> None:
    from goniec.queue.fs import FsQueueStore

    c = session(server.port, "127.0.0.3", helo="mail.spoofer.invalid")
    qid = queued_id(send(c, "billing@careful.example", "bob@goniec.test",
                           message("billing@careful.example", "invoice")))
    c.close()
    ours = headers(stored(server, qid), "Authentication-Results")
    assert b"dmarc=fail (p=quarantine dis=quarantine)" in ours[0]
    store = FsQueueStore(server.data_dir / "spool")
    try:
        msg = store.get(qid)
    finally:
        store.close()
    assert msg is not None and msg.held and msg.hold_reason == "dmarc quarantine"
    line = wait_log(server, rf"event=mailauth [^\n]*msg={qid}[^\n]*").group(0)
    assert "action=hold" in line and "unsupported" not in line, line
    assert wait_log(server, rf"event=queued [^\n]*msg={qid}[^\n]*held=")


def test_policy_per_recipient_domain_strictest_wins(server: ServerProcess) -> None:
    spoof = message("ceo@strict.example", "per-domain")
    table = 'mailauth.domains."goniec.test"'
    server.config["mailauth"]["dmarc"] = "record"
    server.config[table] = {"dmarc": "enforce"}
    try:
        reload(server)
        c = session(server.port, "127.0.0.3", helo="mail.spoofer.invalid")
        qid = queued_id(send(c, "ceo@strict.example", "carol@lenient.test", spoof))
        assert c.cmd("RSET").startswith(b"250")
        refused = send(c, "ceo@strict.example", "bob@goniec.test", spoof)
        assert refused.startswith(b"550 5.7.1"), refused
        assert c.cmd("RSET").startswith(b"250")
        both = send(c, "ceo@strict.example", ["carol@lenient.test", "bob@goniec.test"], spoof)
        assert both.startswith(b"550 5.7.1"), both  # one reply for the message: strictest
        c.close()
    finally:
        server.config["mailauth"]["dmarc"] = "enforce"
        del server.config[table]
        reload(server)
    ours = headers(stored(server, qid), "Authentication-Results")
    assert b"dmarc=fail (p=reject dis=reject)" in ours[0]


# --- (c) DKIM signing of our own mail ---------------------------------------------------------------
def login(c: LineClient) -> None:
    token = base64.b64encode(b"\0alice\0correct horse").decode()
    assert c.cmd(f"AUTH PLAIN {token}").startswith(b"235")


def test_authenticated_mail_is_signed_once_and_verifies(server: ServerProcess,
                                                        zone: ZoneServer) -> None:
    c = session(server.port, "127.0.0.4", helo="laptop.ours.example")
    login(c)
    original = message("alice@ours.example", "signed")
    qid = queued_id(send(c, "alice@ours.example", "carol@elsewhere.example", original))
    c.close()
    data = stored(server, qid)
    sigs = headers(data, "DKIM-Signature")
    assert len(sigs) == 1, sigs
    assert b"d=ours.example" in sigs[0] and b"s=sel1" in sigs[0] and b"a=rsa-sha256" in sigs[0]
    assert not headers(data, "Authentication-Results")  # our own mail is not checked
    assert data.endswith(original)
    assert dkimpy.verify(data, dnsfunc=dns_txt(zone))
    tampered = data.replace(b"Hello Bob.", b"Hello Bob!")
    assert not dkimpy.verify(tampered, dnsfunc=dns_txt(zone))
    line = wait_log(server, rf"event=mailauth [^\n]*msg={qid}[^\n]*")
    assert "action=sign" in line.group(0) and "dkim_sign=ours.example/sel1" in line.group(0)


def test_trusted_network_subdomain_and_large_messages_are_signed(server: ServerProcess,
                                                                  zone: ZoneServer) -> None:
    big = b"".join(b"line %06d of a large message\r\n" % i for i in range(10_000))  # ~320 KB
    c = session(server.port, "127.0.0.1")
    qid = queued_id(send(c, "news@lists.ours.example", "bob@goniec.test",
                           message("news@lists.ours.example", "big", big)))
    c.close()
    data = stored(server, qid)
    assert len(headers(data, "DKIM-Signature")) == 1
    assert dkimpy.verify(data, dnsfunc=dns_txt(zone))


@pytest.mark.parametrize("bare_lf", [False, True])
def test_bdat_pieces_are_signed_and_verify(server: ServerProcess, zone: ZoneServer,
                                           bare_lf: bool) -> None:
    # Chunks cut anywhere, white space to reduce, empty lines at the end; and a bare LF,
    # which only BDAT lets through (the signature covers it as a CRLF, as dkimpy reads it).
    body = b"one  two \t\r\n\r\n" * 300 + (b"bare\nLF\r\n" if bare_lf else b"") + b"\r\n \r\n"
    msg = message("alice@ours.example", "pieces", body)
    c = session(server.port, "127.0.0.4", helo="laptop.ours.example")
    login(c)
    assert c.cmd("MAIL FROM:<alice@ours.example>").startswith(b"250")
    assert c.cmd("RCPT TO:<carol@elsewhere.example>").startswith(b"250")
    cuts = [0, 5, 200, 1001, 4000, len(msg)]
    for start, end in zip(cuts, cuts[1:], strict=False):
        last = b" LAST" if end == len(msg) else b""
        c.send(b"BDAT %d%s\r\n" % (end - start, last) + msg[start:end])
        reply = c.reply()
        assert reply.startswith(b"250"), reply
    qid = queued_id(reply)
    c.close()
    data = stored(server, qid)
    assert len(headers(data, "DKIM-Signature")) == 1 and data.endswith(msg)
    assert dkimpy.verify(data, dnsfunc=dns_txt(zone))
    assert not dkimpy.verify(data.replace(b"one  two", b"one  tw0", 1), dnsfunc=dns_txt(zone))


def test_mail_without_a_key_streams_unsigned(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.1")
    original = message("someone@elsewhere.example")
    qid = queued_id(send(c, "someone@elsewhere.example", "bob@goniec.test", original))
    c.close()
    data = stored(server, qid)
    assert not headers(data, "DKIM-Signature") and data.endswith(original)


def test_message_over_max_size_is_stored_unchecked(server: ServerProcess) -> None:
    big = b"x" * 70 + b"\r\n"
    body = big * 16_000  # ~1.15 MB, over mailauth.max_size = 1MB
    c = session(server.port, "127.0.0.2")
    original = message("alice@good.example", "too big", body)
    qid = queued_id(send(c, "alice@good.example", "bob@goniec.test", original))
    c.close()
    data = stored(server, qid)
    assert not headers(data, "Authentication-Results") and data.endswith(original)
    line = wait_log(server, rf"event=mailauth [^\n]*msg={qid}[^\n]*")
    assert "action=skip" in line.group(0) and "max_size" in line.group(0)


def test_bdat_body_is_checked(server: ServerProcess) -> None:
    c = session(server.port, "127.0.0.2")
    msg = dkimpy_sign(message("alice@good.example", "chunked"))
    assert c.cmd("MAIL FROM:<alice@good.example>").startswith(b"250")
    assert c.cmd("RCPT TO:<bob@goniec.test>").startswith(b"250")
    half = len(msg) // 2
    c.send(b"BDAT %d\r\n" % half + msg[:half])
    assert c.reply().startswith(b"250")
    c.send(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
    qid = queued_id(c.reply())
    c.close()
    ours = headers(stored(server, qid), "Authentication-Results")
    assert len(ours) == 1 and b"dkim=pass" in ours[0] and b"dmarc=pass" in ours[0]


# --- (d) a name server that never answers -------------------------------------------------------------
@pytest.fixture
def silent_dns() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # bound, never read: queries vanish, nothing answers
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_silent_dns_gives_temperror_within_the_timeout(tmp_path: Path, silent_dns: int) -> None:
    timeout = 1.0
    srv = make_server(
        tmp_path,
        listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
        domains={"local": ["goniec.test"]},
        relay={"networks": ["127.0.0.1"]},
        dns={"nameservers": ["127.0.0.1"], "port": silent_dns, "timeout": timeout},
        mailauth={"inbound": "on"},
    )
    srv.start()
    try:
        c = session(srv.port, "127.0.0.5")
        signed = dkimpy_sign(message("alice@good.example"))
        started = time.monotonic()
        reply = send(c, "alice@good.example", "bob@goniec.test", signed)
        took = time.monotonic() - started
        qid = queued_id(reply)
        # SPF, DKIM and DMARC ask at the same time: about one timeout, well below SPF's 20 s.
        assert took < 3 * timeout + 1.5, took
        assert c.cmd("NOOP").startswith(b"250")  # the session is not stuck
        c.close()
        ours = headers(stored(srv, qid), "Authentication-Results")
        assert len(ours) == 1
        for word in (b"spf=temperror", b"dkim=temperror", b"dmarc=temperror"):
            assert word in ours[0], ours[0]
    finally:
        srv.stop()


# --- the config names a bad key -----------------------------------------------------------------------
def test_config_check_names_an_unreadable_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    config: dict[str, Any] = {"mailauth.dkim": [{"domain": "ours.example", "selector": "s",
                                                 "key_file": "bad.key"}]}
    path = tmp_path / "goniec.toml"
    path.write_text(to_toml(config))
    out = subprocess.run([sys.executable, "-m", "goniec.cli.main", "config", "check", "-c",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "mailauth.dkim[0].key_file" in out.stderr and str(bad) in out.stderr, out.stderr


# --- the pure parts of the session step --------------------------------------------------------------
def test_keys_for_exact_domain_then_parents_with_subdomains() -> None:
    from goniec.mailauth.keys import DkimKey
    from goniec.server.mailauth_step import MailAuthSettings

    a, b, c = (DkimKey(d, s, GOOD_KEY) for d, s in (("ex.test", "a"), ("ex.test", "b"),
                                                   ("sub.ex.test", "c")))
    ma = MailAuthSettings(keys={"ex.test": (a, b), "sub.ex.test": (c,)},
                          parent_keys={"ex.test": (b,)})
    assert ma.keys_for("ex.test") == (a, b)
    assert ma.keys_for("sub.ex.test") == (c,)  # its own key wins over the parent's
    assert ma.keys_for("deep.other.ex.test") == (b,)
    assert ma.keys_for("ex.test.invalid") == () and ma.keys_for("test") == ()
    assert ma.active and not MailAuthSettings().active


def test_held_body_budget_and_key_lookup() -> None:
    from goniec.mailauth.keys import DkimKey
    from goniec.server.mailauth_step import Held, MailAuthRuntime, MailAuthSettings

    runtime = MailAuthRuntime("mx.goniec.test")
    key = DkimKey("ours.example", "s", GOOD_KEY)
    ma = MailAuthSettings(keys={"ours.example": (key,)}, max_size=100, memory=150)
    # Signing: held until the header ends, then kept only for a domain with a key.
    held = Held(runtime, ma, inbound=False)
    assert held.add(b"From: a@ours.example\r") is None
    assert held.add(b"\nSubject: x\r\n\r") is None  # the blank line split across chunks
    assert held.add(b"\nbody\r\n") is None and held.keys == (key,)
    assert runtime.held == len(held.take()) and not held.buf  # still charged
    other = Held(runtime, ma, inbound=False)
    assert other.add(b"From: a@else.example\r\n\r\nbody") == (
        b"From: a@else.example\r\n\r\nbody")  # no key: stream it
    assert other.reason == ""
    # The budget: a second held message may not take more than `memory` in all.
    inbound = Held(runtime, ma, inbound=True)
    assert inbound.add(b"x" * 90) is None
    third = Held(runtime, ma, inbound=True)
    assert third.add(b"y" * 40) == b"y" * 40 and "memory" in third.reason
    assert inbound.add(b"x" * 20) == b"x" * 110 and "max_size" in inbound.reason
    held.release()
    held.release()  # idempotent
    assert runtime.held == 0


def test_trusted_network_needs_relay_mode_only() -> None:
    import ipaddress

    from goniec.policy.netset import NetSet
    from goniec.policy.rules import UNCHECKED, ClientList, RelayRules, Rules
    from goniec.server.mailauth_step import trusted_network

    ip = ipaddress.ip_address("10.1.2.3")
    only = Rules(relay=RelayRules(ClientList("only", NetSet(["10.0.0.0/8"]))))
    all_except = Rules(relay=RelayRules(ClientList("all_except", NetSet(["192.0.2.0/24"]))))
    assert trusted_network(only, ip, UNCHECKED)
    assert not trusted_network(only, ipaddress.ip_address("192.0.2.1"), UNCHECKED)
    assert not trusted_network(all_except, ip, UNCHECKED)  # may relay, but is not ours
