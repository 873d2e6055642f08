"""Delivery end to end: the real `goniec serve` delivering to real peers on loopback.

"A" is a goniec with delivery on, resolving MX records through a dnslib server
on 127.0.0.1 (never the system resolver), sending outbound mail to the port of
its destination (`[delivery] port`; every MX host resolves to loopback). "B"
is a second real goniec, delivery off, local domain dest.test: what A delivers
stays in B's spool, where the test reads it. Reports to the sender come back to
A's own Maildir (sender.test is local to A).
"""

from __future__ import annotations

import email.message
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from flufl.bounce import all_failures

from goniec.queue.api import RecipientStatus
from goniec.testing.dnsserver import ZoneServer
from goniec.testing.process import ServerProcess, free_port, make_server, to_toml

from mailpeers import (  # isort: skip
    DEST_HOST, SENDER_HOST, Sink, logs_of, maildir, parse, sender_server, split_trace, spool,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ORIGINAL = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: User <user@dest.test>\r\n"
    b"Subject: end-to-end delivery\r\n"
    b"Message-ID: <e2e-1@sender.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello from A to B.\r\n"
    b".\r\n"  # a lone dot: a false end of data unless dot-stuffed on both hops
    b"..two dots\r\n"
    b".one dot\r\n"
    + "Zażółć gęślą jaźń\r\n".encode()
    + b"x" * 900 + b"\r\n"
    + b"last line\r\n"
)
RELAY_PASSWORD = "smart host secret"


def send(port: int, sender: str, rcpts: list[str], body: bytes = ORIGINAL,
         **options: Any) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.sender.test")
        refused = client.sendmail(sender, rcpts, body, mail_options=["BODY=8BITMIME"], **options)
        assert not refused


def add_user(server: ServerProcess, name: str, password: str) -> None:
    server.config_path.write_text(to_toml(server.config))
    subprocess.run([sys.executable, "-m", "goniec.cli.main", "user", "add", name,
                    "--password-stdin", "-c", str(server.config_path)],
                   input=(password + "\n").encode(), check=True, capture_output=True, timeout=60)


@pytest.fixture
def dest(tmp_path: Path, server_cert: tuple[Path, Path]) -> Iterator[ServerProcess]:
    """goniec B: an MX listener (STARTTLS offered, login optional) and a submission listener
    (STARTTLS, login required), a certificate from the test CA, one user; delivery off."""
    workdir = tmp_path / "b"
    workdir.mkdir()
    server = make_server(
        workdir,
        listeners=[{"name": "mx", "tls": "starttls", "auth": "optional"},
                   {"name": "submission", "tls": "starttls", "auth": "required"}],
        server={"hostname": DEST_HOST},
        tls={"certificate": str(server_cert[0]), "key": str(server_cert[1])},
        domains={"local": ["dest.test", "pref.test"]},
    )
    add_user(server, "relay", RELAY_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def started(server: ServerProcess) -> ServerProcess:
    server.workdir.mkdir(exist_ok=True)
    return server.start()


def delivered_to(server: ServerProcess, count: int, *others: ServerProcess,
                 empty: ServerProcess | None = None, timeout: float = 15.0) -> None:
    def done() -> bool:
        return len(server.spool_ids()) == count and (empty is None or not empty.spool_ids())
    wait_until(done, f"{count} message(s) in {server.workdir.name}'s spool", timeout=timeout,
               logs=logs_of(server, *others))


# --- MX delivery through the loopback DNS server ----------------------------------------

def test_mx_delivery_to_a_second_goniec(tmp_path: Path, dns: ZoneServer, zone: dict[str, Any],
                                        dest: ServerProcess) -> None:
    zone["dest.test"] = {"MX": [(10, "mx1.dest.test")]}
    zone["mx1.dest.test"] = {"A": ["127.0.0.1"]}
    a = started(sender_server(tmp_path / "a", dns, dest.ports["mx"]))
    try:
        send(a.port, "alice@sender.test", ["user@dest.test"])
        delivered_to(dest, 1, a, empty=a)
    finally:
        a.stop()
    [got] = spool(dest)
    assert got.record.envelope.sender == "alice@sender.test"
    assert [r.address for r in got.record.envelope.recipients] == ["user@dest.test"]
    assert got.record.envelope.params.body == "8BITMIME"  # passed on by A
    # B's copy is B's Received:, A's Received:, then exactly the bytes smtplib sent.
    trace, rest = split_trace(got.data)
    assert rest == ORIGINAL
    assert len(trace) == 2, trace
    by_b, by_a = trace
    assert by_b.startswith(b"Received: from mx-a.sender.test (unknown [127.0.0.1])")
    assert b"(using TLSv1." in by_b  # A took B's STARTTLS (opportunistic: not verified)
    assert f"by {DEST_HOST} (Goniec) with ESMTPS id".encode() in by_b
    assert by_a.startswith(b"Received: from client.sender.test (unknown [127.0.0.1])")
    assert f"by {SENDER_HOST} (Goniec) with ESMTP id".encode() in by_a
    assert ("dest.test", "MX") in dns.queries
    assert ("mx1.dest.test", "A") in dns.queries
    assert not maildir(a, "sender.test", "alice")  # no report of any kind


def test_mx_preference_order_skips_a_dead_first_mx(tmp_path: Path, dns: ZoneServer,
                                                   zone: dict[str, Any],
                                                   dest: ServerProcess) -> None:
    port = dest.ports["mx"]
    with pytest.raises(OSError):  # the first MX: loopback, but nothing listens there
        socket.create_connection(("127.0.0.2", port), timeout=2).close()
    zone["pref.test"] = {"MX": [(20, "mx2.pref.test"), (10, "mx1.pref.test")]}
    zone["mx1.pref.test"] = {"A": ["127.0.0.2"]}
    zone["mx2.pref.test"] = {"A": ["127.0.0.1"]}
    a = started(sender_server(tmp_path / "a", dns, port))
    try:
        send(a.port, "alice@sender.test", ["user@pref.test"])
        delivered_to(dest, 1, a, empty=a)
    finally:
        a.stop()
    [got] = spool(dest)
    assert [r.address for r in got.record.envelope.recipients] == ["user@pref.test"]
    assert split_trace(got.data)[1] == ORIGINAL
    log = a.log()
    refused = log.index("event=connect_failed")
    assert "relay=mx1.pref.test[127.0.0.2]" in log[refused:].splitlines()[0]
    delivered = log.index("relay=mx2.pref.test[127.0.0.1]")
    assert refused < delivered, log
    assert "status=delivered" in log[delivered:].splitlines()[0]


@pytest.mark.parametrize(("domain", "records", "status"), [
    ("nullmx.test", {"nullmx.test": {"MX": [(0, ".")]}}, "5.1.10"),  # RFC 7505
    ("nowhere.test", {}, "5.1.2"),  # NXDOMAIN
])
def test_undeliverable_domain_gets_a_failure_report(tmp_path: Path, dns: ZoneServer,
                                                    zone: dict[str, Any], dest: ServerProcess,
                                                    domain: str, records: dict[str, Any],
                                                    status: str) -> None:
    zone.update(records)
    zone["dest.test"] = {"MX": [(10, "mx1.dest.test")]}
    zone["mx1.dest.test"] = {"A": ["127.0.0.1"]}
    failed = f"user@{domain}"
    a = started(sender_server(tmp_path / "a", dns, dest.ports["mx"]))
    try:
        send(a.port, "alice@sender.test", ["ok@dest.test", failed])
        wait_until(lambda: bool(maildir(a, "sender.test", "alice")) and not a.spool_ids()
                   and len(dest.spool_ids()) == 1, "the report in alice's Maildir",
                   logs=logs_of(a, dest))
    finally:
        a.stop()
    # The recipient that could be delivered was, at once; only the other is reported.
    [got] = spool(dest)
    assert [r.address for r in got.record.envelope.recipients] == ["ok@dest.test"]
    [raw] = maildir(a, "sender.test", "alice")
    assert raw.startswith(b"Return-Path: <>\r\n")  # a report comes from the null sender
    report = parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["To"] == "alice@sender.test"
    assert report["Auto-Submitted"] == "auto-replied"
    [dsn] = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    blocks = dsn.get_payload()
    assert isinstance(blocks, list)
    per_rcpt = [b for b in blocks if isinstance(b, email.message.Message) and b["Action"]]
    assert len(per_rcpt) == 1
    fields = per_rcpt[0]
    assert fields["Final-Recipient"].lower() == f"rfc822; {failed}"
    assert fields["Action"] == "failed"
    assert fields["Status"] == status
    assert domain in fields["Diagnostic-Code"] or status in fields["Diagnostic-Code"]
    [original] = [p for p in report.walk() if p.get_content_type() == "message/rfc822"]
    assert b"Subject: end-to-end delivery" in original.as_bytes()
    # An independent RFC 3464 reader finds the failed recipient, and only it.
    temporary, permanent = all_failures(email.message_from_bytes(raw))
    assert set(permanent) == {failed.encode()}
    assert not set(temporary)


# --- smart host -----------------------------------------------------------------------------

def test_smart_host_without_tls(tmp_path: Path, dns: ZoneServer, zone: dict[str, Any],
                                dest: ServerProcess) -> None:
    # dest.test has no records at all: "[address]" means no MX lookup (and delivery.port,
    # where nobody listens, is not used: the smart host names its own port).
    a = started(sender_server(tmp_path / "a", dns, free_port(),
                              smart_host=f"[127.0.0.1]:{dest.ports['mx']}",
                              smart_host_tls="none"))
    try:
        send(a.port, "alice@sender.test", ["user@dest.test"])
        delivered_to(dest, 1, a, empty=a)
    finally:
        a.stop()
    [got] = spool(dest)
    trace, rest = split_trace(got.data)
    assert rest == ORIGINAL
    assert f"by {DEST_HOST} (Goniec) with ESMTP id".encode() in trace[0]  # no S: no TLS
    assert b"(using TLS" not in trace[0]
    assert not [q for q in dns.queries if q[0].endswith("dest.test")]


def test_smart_host_with_verified_tls_and_login(tmp_path: Path, dns: ZoneServer,
                                                zone: dict[str, Any], dest: ServerProcess,
                                                ca_pem: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The test CA is trusted through [delivery] ca_file; verification stays on: the
    # next test shows a certificate from an unknown CA is refused.
    (tmp_path / "a").mkdir()
    password_file = tmp_path / "a" / "smarthost.password"
    password_file.write_text(RELAY_PASSWORD + "\n")
    a = started(sender_server(tmp_path / "a", dns, free_port(),
                              smart_host=f"[127.0.0.1]:{dest.ports['submission']}",
                              smart_host_tls="verify", smart_host_username="relay",
                              smart_host_password_file=str(password_file), ca_file=ca_pem))
    try:
        send(a.port, "alice@sender.test", ["user@dest.test"])
        delivered_to(dest, 1, a, empty=a)
    finally:
        a.stop()
    [got] = spool(dest)
    assert got.record.info.auth_user == "relay"  # B's submission port requires the login
    trace, rest = split_trace(got.data)
    assert rest == ORIGINAL
    assert b"(using TLSv1." in trace[0]
    assert f"by {DEST_HOST} (Goniec) with ESMTPSA id".encode() in trace[0]
    assert RELAY_PASSWORD not in a.log()


def test_smart_host_certificate_from_an_unknown_ca_is_refused(
        tmp_path: Path, dns: ZoneServer, zone: dict[str, Any], dest: ServerProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    (tmp_path / "a").mkdir()
    password_file = tmp_path / "a" / "smarthost.password"
    password_file.write_text(RELAY_PASSWORD + "\n")
    a = started(sender_server(tmp_path / "a", dns, free_port(),
                              smart_host=f"[127.0.0.1]:{dest.ports['submission']}",
                              smart_host_tls="verify", smart_host_username="relay",
                              smart_host_password_file=str(password_file)))
    try:
        send(a.port, "alice@sender.test", ["user@dest.test"])

        def deferred() -> bool:
            states = [s for m in spool(a) for s in m.record.recipients]
            return bool(states) and all(s.status is RecipientStatus.DEFERRED for s in states)
        wait_until(deferred, "a deferral", logs=logs_of(a, dest))
    finally:
        a.stop()
    [state] = spool(a)[0].record.recipients
    assert "certificate" in state.last_reply.lower(), state.last_reply
    assert not dest.spool_ids()  # never sent: not to an unverified server, not the password
    assert not maildir(a, "sender.test", "alice")  # a deferral, not a bounce


# --- retry ------------------------------------------------------------------------------------

def test_greylisted_message_is_delivered_on_the_retry(tmp_path: Path, dns: ZoneServer,
                                                      zone: dict[str, Any]) -> None:
    zone["grey.test"] = {"MX": [(10, "mx.grey.test")]}
    zone["mx.grey.test"] = {"A": ["127.0.0.1"]}
    with Sink(defer_first=1) as sink:
        a = started(sender_server(tmp_path / "a", dns, sink.port, retry=["1s"]))
        try:
            send(a.port, "alice@sender.test", ["user@grey.test"])
            wait_until(lambda: sink.count() == 1 and not a.spool_ids(), "the second attempt",
                       timeout=15, logs=logs_of(a))
        finally:
            a.stop()
        first, second = sink.transactions  # exactly two attempts
        assert 0.9 <= second - first < 5, (first, second)
        [got] = sink.received()
    assert got.sender == "alice@sender.test"
    assert got.rcpts == ("user@grey.test",)
    assert split_trace(got.data)[1] == ORIGINAL
    log = a.log()
    assert "status=deferred" in log and "4.7.1" in log
    assert not maildir(a, "sender.test", "alice")  # no delay notice for a 1 s delay


# --- stopping while a destination stalls -------------------------------------------------------

def test_sigterm_while_a_destination_stalls(tmp_path: Path, dns: ZoneServer,
                                            zone: dict[str, Any]) -> None:
    """The attempt under way gets the runner's stop grace (10 s), not the command timeout
    (here 300 s); the message stays queued and goes out after the restart."""
    zone["stall.test"] = {"MX": [(10, "mx.stall.test")]}
    zone["mx.stall.test"] = {"A": ["127.0.0.1"]}
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def greet_then_stall() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(b"220 stall.test ESMTP\r\n")
            held.append(conn)  # and never answer EHLO

    threading.Thread(target=greet_then_stall, daemon=True).start()
    a = started(sender_server(tmp_path / "a", dns, listener.getsockname()[1],
                              command_timeout=300))
    try:
        send(a.port, "alice@sender.test", ["user@stall.test"])
        wait_until(lambda: bool(held), "A to connect to the stalled peer", logs=logs_of(a))
        time.sleep(0.3)  # A waits for the EHLO reply
        began = time.monotonic()
        code = a.stop(timeout=30)
        took = time.monotonic() - began
    finally:
        a.stop()
        listener.close()
        for conn in held:
            conn.close()
    assert code == 0, a.log()
    assert took < 15, f"SIGTERM took {took:.1f}s"
    assert "runner.stop_cancelled attempts=1" in a.log()
    assert "event=stopped" in a.log()
    [queued] = spool(a)
    assert [s.status for s in queued.record.recipients] == [RecipientStatus.PENDING]
    with Sink() as sink:
        a.config["delivery"]["port"] = sink.port
        a.start()
        try:
            wait_until(lambda: sink.count() == 1 and not a.spool_ids(), "delivery after restart",
                       logs=logs_of(a))
        finally:
            a.stop()
        [got] = sink.received()
    assert got.rcpts == ("user@stall.test",)
    assert split_trace(got.data)[1] == ORIGINAL


def test_a_reload_moves_delivery_to_a_new_smart_host(tmp_path: Path, dns: ZoneServer,
                                                      zone: dict[str, Any]) -> None:
    """[delivery] routes follow `goniec reload`: no restart, no lost or stuck mail."""
    zone["direct.test"] = {"MX": [(10, "mx.direct.test")]}
    zone["mx.direct.test"] = {"A": ["127.0.0.1"]}
    with Sink() as first, Sink() as second:
        a = sender_server(tmp_path / "a", dns, first.port, workers=2)
        a.workdir.mkdir()
        a.start()
        try:
            send(a.port, "alice@sender.test", ["user@direct.test"])
            wait_until(lambda: first.count() == 1, "delivery by MX", logs=logs_of(a))
            a.config["delivery"]["smart_host"] = f"[127.0.0.1]:{second.port}"
            a.config["delivery"]["smart_host_tls"] = "none"
            a.config_path.write_text(to_toml(a.config))
            r = a.cli("reload")
            assert r.returncode == 0, r.stderr
            wait_until(lambda: a.log().count("event=reloaded") >= 1, "the reload",
                       logs=logs_of(a))
            line = [x for x in a.log().splitlines() if "event=reloaded" in x][-1]
            assert "restart_needed=-" in line, line  # routes are not a restart key any more
            for i in range(4):  # both workers' runners use the new route
                send(a.port, "alice@sender.test", [f"user{i}@direct.test"])
            wait_until(lambda: second.count() == 4 and not a.spool_ids(), "via the smart host",
                       logs=logs_of(a))
            assert first.count() == 1
        finally:
            a.stop()
