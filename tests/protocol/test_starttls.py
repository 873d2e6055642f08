"""STARTTLS (RFC 3207): the 220, the plaintext that must be dropped, the reset."""

from __future__ import annotations

import pytest

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol import (
    GREETED,
    NEED_DATA,
    STARTTLS,
    BadCommand,
    Closing,
    Helo,
    StartTls,
    TransactionReset,
)

from .harness import Shell, kinds, wire


def tls_shell(**kwargs: object) -> Shell:
    kwargs.setdefault("tls_available", True)
    s = Shell(**kwargs)  # type: ignore[arg-type]
    s.ehlo()
    return s


def test_starttls_drops_pipelined_plaintext() -> None:
    s = tls_shell()
    # CVE-2011-0411: the injected command after STARTTLS must never run.
    events = s.feed(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n")
    assert events == [StartTls()]
    assert s.take() == wire(r.R220_READY_TLS)
    assert s.conn.state is STARTTLS
    # Bytes that arrive before the handshake completes are dropped too.
    assert s.feed(b"RCPT TO:<evil@x.example>\r\n") == []
    assert s.conn.next_event() is NEED_DATA
    s.conn.tls_started()
    assert s.conn.tls_active and s.conn.state is GREETED
    assert s.conn.helo_name is None and not s.conn.esmtp
    s.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert s.take() == wire(r.R503_HELO_FIRST)


def test_after_tls_ehlo_offers_auth_not_starttls() -> None:
    s = tls_shell()
    s.feed(b"STARTTLS\r\n")
    s.conn.tls_started()
    s.take()
    assert s.feed(b"EHLO again\r\n") == [Helo("again", True)]
    out = s.take()
    assert b"STARTTLS" not in out and b"250 AUTH PLAIN LOGIN\r\n" in out
    s.feed(b"STARTTLS\r\n")
    assert s.take() == wire(r.R503_TLS_ACTIVE)


def test_starttls_forgets_authentication_and_transaction() -> None:
    s = tls_shell(auth_requires_tls=False)
    s.feed(b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n")
    assert s.conn.authenticated_user == "alice"
    s.open_transaction()
    assert s.feed(b"STARTTLS\r\n") == [TransactionReset(), StartTls()]
    s.conn.tls_started()
    assert s.conn.authenticated_user is None


def test_starttls_before_ehlo_is_allowed() -> None:
    s = Shell(tls_available=True)
    assert s.feed(b"STARTTLS\r\n") == [StartTls()]


@pytest.mark.parametrize(
    ("kwargs", "tls", "line", "reply"),
    [
        ({}, False, b"STARTTLS", r.R502_NOT_IMPLEMENTED),
        ({"tls_available": True}, True, b"STARTTLS", r.R503_TLS_ACTIVE),
        ({}, True, b"STARTTLS", r.R503_TLS_ACTIVE),
        ({"tls_available": True}, False, b"STARTTLS now", r.R501_NO_ARGUMENTS),
    ],
)
def test_starttls_refusals(kwargs: dict[str, object], tls: bool, line: bytes, reply: Reply) -> None:
    s = Shell(tls_active=tls, **kwargs)  # type: ignore[arg-type]
    assert s.feed(line + b"\r\nNOOP\r\n") == [BadCommand(line, reply)]
    assert s.take() == wire(reply, r.R250_OK)


def test_implicit_tls_does_not_advertise_starttls() -> None:
    s = Shell(tls_active=True, tls_available=True)
    s.feed(b"EHLO c\r\n")
    assert b"STARTTLS" not in s.take()
    assert s.conn.tls_active


def test_eof_while_waiting_for_the_handshake() -> None:
    s = tls_shell()
    s.feed(b"STARTTLS\r\n")
    assert kinds(s.feed(b"")) == [Closing]
