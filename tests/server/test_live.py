"""The real server over real sockets on loopback: smtplib, STARTTLS, implicit TLS, AUTH."""

from __future__ import annotations

import email
import smtplib
import ssl
import time
from pathlib import Path

import pytest
import trustme

from goniec.testing.process import ServerProcess
from goniec.testing.smtpclient import LineClient

MSG = b"From: a@goniec.test\r\nTo: b@goniec.test\r\nSubject: hi\r\n\r\nHello\r\n"


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def stored(server: ServerProcess, qid: str) -> bytes:
    """The stored message, read through the queue API (the file format is the queue's)."""
    from goniec.queue.fs import FsQueueStore

    store = FsQueueStore(server.data_dir / "spool")
    try:
        with store.open_message(qid) as fh:
            return fh.read()
    finally:
        store.close()


def queued_id(reply: tuple[int, bytes]) -> str:
    code, text = reply
    assert code == 250, reply
    assert b"queued as" in text, text
    return text.decode().rsplit(" ", 1)[1]


def send_data(s: smtplib.SMTP, sender: str, rcpts: list[str], body: bytes) -> str:
    s.mail(sender)
    for r in rcpts:
        code, text = s.rcpt(r)
        assert code == 250, (code, text)
    return queued_id(s.data(body))





def test_plain_delivery_and_received_header(live_server: ServerProcess) -> None:
    with smtplib.SMTP("127.0.0.1", live_server.ports["smtp"], timeout=10) as s:
        code, banner = s.ehlo("client.goniec.test")
        assert code == 250
        feats = banner.decode().upper()
        for word in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                     "CHUNKING", "DSN", "STARTTLS"):
            assert word in feats
        assert "AUTH" not in feats  # only inside TLS
        qid = send_data(s, "a@goniec.test", ["b@goniec.test"], MSG)
    data = stored(live_server, qid)
    assert data.endswith(MSG)
    head = email.message_from_bytes(data)
    received = head["Received"]
    assert "from client.goniec.test" in received and "[127.0.0.1]" in received
    assert "with ESMTP id " + qid in " ".join(received.split())


def test_greeting(live_server: ServerProcess) -> None:
    c = LineClient(live_server.ports["smtp"])
    assert c.reply().startswith(b"220 mx.goniec.test ESMTP")
    assert c.cmd(b"QUIT").startswith(b"221 2.0.0")
    c.close()


def test_starttls_then_auth_plain_and_login(live_server: ServerProcess, ca: trustme.CA) -> None:
    for mech in ("PLAIN", "LOGIN"):
        with smtplib.SMTP("127.0.0.1", live_server.ports["smtp"], timeout=10) as s:
            s.starttls(context=client_ctx(ca))
            code, feats = s.ehlo("c.goniec.test")
            assert b"AUTH PLAIN LOGIN" in feats and b"STARTTLS" not in feats
            s.user, s.password = "alice", "correct horse"
            code, _ = s.auth(mech, getattr(s, f"auth_{mech.lower()}"))
            assert code == 235
            # An authenticated client may relay even though 127.0.0.1 is not trusted here.
            qid = send_data(s, "alice@goniec.test", ["someone@remote.example"], MSG)
        received = email.message_from_bytes(stored(live_server, qid))["Received"]
        assert "ESMTPSA" in received and "TLSv1." in received


def test_wrong_password_is_535_and_session_survives(live_server: ServerProcess,
                                                    ca: trustme.CA) -> None:
    with smtplib.SMTP("127.0.0.1", live_server.ports["smtp"], timeout=10) as s:
        s.starttls(context=client_ctx(ca))
        s.ehlo("c.goniec.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login("alice", "wrong")
        assert err.value.smtp_code == 535
        assert s.noop()[0] == 250
        s.login("alice", "correct horse")


def test_implicit_tls_requires_auth(live_server: ServerProcess, ca: trustme.CA) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", live_server.ports["smtps"], timeout=10,
                          context=client_ctx(ca)) as s:
        s.ehlo("c.goniec.test")
        code, text = s.mail("alice@goniec.test")
        assert (code, text[:5]) == (530, b"5.7.0")
        s.rset()
        s.login("alice", "correct horse")
        qid = send_data(s, "alice@goniec.test", ["b@goniec.test"], MSG)
    assert "ESMTPSA" in email.message_from_bytes(stored(live_server, qid))["Received"]


def test_relay_denied_without_login(live_server: ServerProcess) -> None:
    with smtplib.SMTP("127.0.0.1", live_server.ports["smtp"], timeout=10) as s:
        s.ehlo("c.goniec.test")
        s.mail("a@goniec.test")
        code, text = s.rcpt("victim@remote.example")
        assert code == 550 and text.startswith(b"5.7.1 Unable to relay")
        assert s.rcpt("b@goniec.test")[0] == 250


def test_auth_not_offered_in_plaintext(live_server: ServerProcess) -> None:
    c = LineClient(live_server.ports["smtp"])
    c.reply()
    c.cmd(b"EHLO c.goniec.test")
    assert c.cmd(b"AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=").startswith(b"538 5.7.11")
    c.close()


def test_pipelining_in_one_packet(live_server: ServerProcess) -> None:
    c = LineClient(live_server.ports["plain"])
    c.reply()
    c.send(b"EHLO c.goniec.test\r\nMAIL FROM:<a@goniec.test>\r\nRCPT TO:<b@goniec.test>\r\n"
           b"RCPT TO:<c@goniec.test>\r\nDATA\r\n")
    assert c.reply().startswith(b"250-mx.goniec.test")
    assert c.reply().startswith(b"250 2.1.0")
    assert c.reply().startswith(b"250 2.1.5")
    assert c.reply().startswith(b"250 2.1.5")
    assert c.reply().startswith(b"354")
    c.send(b"Subject: x\r\n\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n")
    end = c.reply()
    assert end.startswith(b"250 2.0.0 Ok: queued as ")
    assert c.reply().startswith(b"250")
    assert c.reply().startswith(b"221")
    qid = end.decode().rsplit(" ", 1)[1]
    assert stored(live_server, qid).endswith(b"Subject: x\r\n\r\n.dot\r\n")


def test_smtputf8_and_8bit(live_server: ServerProcess) -> None:
    body = "Subject: zażółć\r\n\r\nGęślą jaźń\r\n".encode()
    with smtplib.SMTP("127.0.0.1", live_server.ports["plain"], timeout=10) as s:
        s.ehlo("c.goniec.test")
        s.mail("józef@goniec.test", ["SMTPUTF8", "BODY=8BITMIME"])
        assert s.rcpt("zofia@goniec.test")[0] == 250
        qid = queued_id(s.data(body))
    assert stored(live_server, qid).endswith(body)


def test_bdat(live_server: ServerProcess) -> None:
    c = LineClient(live_server.ports["plain"])
    c.reply()
    c.cmd(b"EHLO c.goniec.test")
    assert c.cmd(b"MAIL FROM:<a@goniec.test>").startswith(b"250")
    assert c.cmd(b"RCPT TO:<b@goniec.test>").startswith(b"250")
    part1 = b"Subject: bdat\r\n\r\n.line with dot\r\n"
    part2 = b"bare\nLF is taken byte for byte in BDAT\r\n"
    c.send(b"BDAT %d\r\n" % len(part1) + part1)
    assert c.reply().startswith(b"250")
    c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    end = c.reply()
    assert end.startswith(b"250 2.0.0 Ok: queued as"), end
    assert stored(live_server, end.decode().rsplit(" ", 1)[1]).endswith(part1 + part2)
    c.close()


def test_smuggling_bare_lf_never_ends_data(live_server: ServerProcess) -> None:
    before = live_server.spool_ids()
    c = LineClient(live_server.ports["plain"])
    c.reply()
    c.cmd(b"EHLO c.goniec.test")
    c.cmd(b"MAIL FROM:<a@goniec.test>")
    c.cmd(b"RCPT TO:<b@goniec.test>")
    assert c.cmd(b"DATA").startswith(b"354")
    c.send(b"Subject: s\r\n\r\nhi\n.\nMAIL FROM:<evil@goniec.test>\r\nRCPT TO:<x@goniec.test>\r\n"
           b"DATA\r\nsmuggled\r\n.\r\n")
    reply = c.reply()
    assert reply[:1] == b"5", reply
    assert c.cmd(b"NOOP").startswith(b"250")  # the session is still usable
    c.close()
    assert live_server.spool_ids() == before


def test_bad_input_gets_replies_and_others_are_served(live_server: ServerProcess) -> None:
    bad = LineClient(live_server.ports["plain"])
    bad.reply()
    assert bad.cmd(b"X" * 2000).startswith(b"500 5.5.2")
    assert bad.cmd(b"\x00\xff\xfe garbage").startswith(b"500")
    assert bad.cmd(b"RCPT TO:<b@goniec.test>")[:3] in (b"503", b"500")
    # Meanwhile another client is served normally.
    with smtplib.SMTP("127.0.0.1", live_server.ports["plain"], timeout=10) as s:
        s.ehlo("c.goniec.test")
        send_data(s, "a@goniec.test", ["b@goniec.test"], MSG)
    # bad_commands = 5 in this config: the fifth error is answered, then 421 and close.
    assert bad.cmd(b"FOO").startswith(b"500")
    assert bad.cmd(b"BAR").startswith(b"500")
    last = bad.reply()
    assert last.startswith(b"421 4.7.0 mx.goniec.test"), last
    assert bad.sock.recv(10) == b""
    bad.close()


def test_broken_tls_handshake_does_not_hurt_others(live_server: ServerProcess) -> None:
    c = LineClient(live_server.ports["smtp"])
    c.reply()
    c.cmd(b"EHLO c.goniec.test")
    assert c.cmd(b"STARTTLS").startswith(b"220")
    c.send(b"this is not a TLS client hello\r\n" * 10)
    c.sock.settimeout(5)
    # The server gives up on the handshake and closes: EOF, maybe after a TLS alert.
    try:
        while c.sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    c.close()
    with smtplib.SMTP("127.0.0.1", live_server.ports["plain"], timeout=10) as s:
        assert s.noop()[0] == 250


def test_starttls_plaintext_injection_is_discarded(live_server: ServerProcess,
                                                   ca: trustme.CA) -> None:
    c = LineClient(live_server.ports["smtp"])
    c.reply()
    c.cmd(b"EHLO c.goniec.test")
    # CVE-2011-0411 class: commands sent with STARTTLS must not run inside TLS.
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@goniec.test>\r\n")
    assert c.reply().startswith(b"220")
    tls = client_ctx(ca).wrap_socket(c.sock, server_hostname="127.0.0.1")
    tls.sendall(b"EHLO c.goniec.test\r\n")
    buf = b""
    while not buf.endswith(b"\r\n") or b"250 " not in buf:
        buf += tls.recv(4096)
    # Only our EHLO is answered: no reply to injected RSET or MAIL appears.
    assert buf.startswith(b"250-mx.goniec.test"), buf
    tls.sendall(b"RCPT TO:<b@goniec.test>\r\n")
    assert tls.recv(4096).startswith(b"503")  # no MAIL transaction exists
    tls.close()


def test_silent_client_times_out(live_server: ServerProcess) -> None:
    c = LineClient(live_server.ports["plain"], timeout=15)
    c.reply()
    start = time.monotonic()
    reply = c.reply()  # command timeout is 3 s in this config
    assert reply.startswith(b"421 4.4.2"), reply
    assert 2 <= time.monotonic() - start < 10
    c.close()


def test_swaks_starttls_auth(live_server: ServerProcess, tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed (scripts/test installs it)")
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(live_server.ports["submission"]),
         "--tls", "--auth", "LOGIN", "--auth-user", "alice",
         "--auth-password", "correct horse", "--from", "alice@goniec.test",
         "--to", "friend@remote.example", "--h-Subject", "swaks"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as" in out.stdout
