"""AUTH (RFC 4954) with SASL PLAIN (RFC 4616) and LOGIN."""

from __future__ import annotations

import base64

import pytest

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol import (
    AUTH,
    READY,
    AuthCredentials,
    BadCommand,
    Closing,
    MailFrom,
)

from .harness import Shell, kinds, wire


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


PLAIN = b64(b"\0alice\0s3cret")


def session(**kwargs: object) -> Shell:
    kwargs.setdefault("auth_requires_tls", False)
    s = Shell(**kwargs)  # type: ignore[arg-type]
    s.ehlo()
    return s


# --- when AUTH is possible ------------------------------------------------------------
def test_auth_not_offered() -> None:
    s = session(auth_mechanisms=())
    assert s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n") == [
        BadCommand(b"AUTH PLAIN ***", r.R502_NOT_IMPLEMENTED)
    ]


def test_auth_needs_ehlo() -> None:
    s = Shell(auth_requires_tls=False)
    s.feed(b"AUTH PLAIN\r\nHELO c\r\nAUTH PLAIN\r\n")
    assert s.take() == wire(r.R503_HELO_FIRST) + b"250 mx.test\r\n" + wire(r.R503_EHLO_FIRST)


def test_auth_in_plaintext_needs_tls() -> None:
    s = Shell()
    s.ehlo()
    s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert s.take() == wire(r.R538_ENCRYPTION_REQUIRED)
    assert s.decisions[-1:] != [AuthCredentials]


def test_auth_inside_tls() -> None:
    s = Shell(tls_active=True)
    s.ehlo()
    events = s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert events == [AuthCredentials("PLAIN", "alice", "s3cret", "")]
    assert s.conn.authenticated_user == "alice"


def test_auth_not_in_a_transaction() -> None:
    s = session()
    s.feed(b"MAIL FROM:<a@b.example>\r\n")
    s.take()
    s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert s.take() == wire(r.R503_AUTH_IN_TRANSACTION)


def test_auth_only_once() -> None:
    s = session()
    s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert s.take() == wire(r.R235_AUTH_OK)
    s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert s.take() == wire(r.R503_ALREADY_AUTHENTICATED)
    assert s.conn.authenticated_user == "alice"


# --- PLAIN ------------------------------------------------------------------------------
def test_plain_with_initial_response_and_authzid() -> None:
    s = session()
    events = s.feed(b"auth plain " + b64(b"admin\0bob\0p\xc3\xa4ss") + b"\r\n")
    assert events == [AuthCredentials("PLAIN", "bob", "päss", "admin")]


def test_plain_with_empty_challenge() -> None:
    s = session()
    assert s.feed(b"AUTH PLAIN\r\n") == []
    assert s.take() == b"334 \r\n"  # RFC 4954 4: "334" SP, even with no text
    assert s.conn.state is AUTH
    assert s.feed(PLAIN + b"\r\n") == [AuthCredentials("PLAIN", "alice", "s3cret", "")]
    assert s.take() == wire(r.R235_AUTH_OK)
    assert s.conn.state is READY


@pytest.mark.parametrize(
    ("response", "reply"),
    [
        (b"=", r.R501_AUTH_MALFORMED),
        (b64(b"alice\0s3cret"), r.R501_AUTH_MALFORMED),
        (b64(b"a\0b\0c\0d"), r.R501_AUTH_MALFORMED),
        (b64(b"\0alice\0\xff"), r.R501_AUTH_BAD_UTF8),
        (b"not_base64!", r.R501_AUTH_BAD_BASE64),
        (b"YWJj====", r.R501_AUTH_BAD_BASE64),
        (b"=YWJ", r.R501_AUTH_BAD_BASE64),
        (b"YWJj=", r.R501_AUTH_BAD_BASE64),
        (b"YWJ", r.R501_AUTH_BAD_BASE64),
        (b"*", r.R501_AUTH_CANCELLED),
    ],
)
def test_plain_failures_leave_the_session_usable(response: bytes, reply: Reply) -> None:
    # As an initial response ...
    s = session()
    events = s.feed(b"AUTH PLAIN " + response + b"\r\n")
    assert events == [BadCommand(b"AUTH PLAIN ***", reply)]
    assert s.take() == wire(reply)
    # ... and as a response to the challenge.
    s.feed(b"AUTH PLAIN\r\n")
    s.take()
    events = s.feed(response + b"\r\n")
    assert events == [BadCommand(b"*" if response == b"*" else b"***", reply)]
    assert s.take() == wire(reply)
    assert s.conn.state is READY and s.conn.authenticated_user is None
    assert kinds(s.feed(b"MAIL FROM:<a@b.example>\r\n")) == [MailFrom]


def test_plain_empty_line_response_is_empty() -> None:
    s = session()
    s.feed(b"AUTH PLAIN\r\n")
    s.feed(b"\r\n")
    assert s.take() == b"334 \r\n" + wire(r.R501_AUTH_MALFORMED)


# --- LOGIN ------------------------------------------------------------------------------
def test_login_exchange() -> None:
    s = session()
    assert s.feed(b"AUTH LOGIN\r\n") == []
    assert s.take() == b"334 VXNlcm5hbWU6\r\n"
    assert s.feed(b64(b"alice") + b"\r\n") == []
    assert s.take() == b"334 UGFzc3dvcmQ6\r\n"
    assert s.feed(b64(b"s3cret") + b"\r\n") == [AuthCredentials("LOGIN", "alice", "s3cret")]
    assert s.take() == wire(r.R235_AUTH_OK)


def test_login_with_initial_response() -> None:
    s = session()
    s.feed(b"AUTH LOGIN " + b64(b"alice") + b"\r\n")
    assert s.take() == b"334 UGFzc3dvcmQ6\r\n"
    assert s.feed(b"=\r\n") == [AuthCredentials("LOGIN", "alice", "")]


def test_login_cancel_at_password() -> None:
    s = session()
    s.feed(b"AUTH LOGIN\r\n", b64(b"alice") + b"\r\n", b"*\r\n")
    assert s.take().endswith(wire(r.R501_AUTH_CANCELLED))
    assert s.conn.state is READY


def test_login_bad_utf8_username() -> None:
    s = session()
    s.feed(b"AUTH LOGIN " + b64(b"\xff") + b"\r\n")
    assert s.take() == wire(r.R501_AUTH_BAD_UTF8)


# --- mechanism and arguments --------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"AUTH CRAM-MD5", r.R504_AUTH_MECHANISM),
        (b"AUTH GSSAPI abc", r.R504_AUTH_MECHANISM),
        (b"AUTH \xff", r.R504_AUTH_MECHANISM),
        (b"AUTH", r.R501_SYNTAX),
        (b"AUTH ", r.R501_SYNTAX),
        (b"AUTH PLAIN a b", r.R501_SYNTAX),
    ],
)
def test_bad_auth_commands(line: bytes, reply: Reply) -> None:
    s = session()
    s.feed(line + b"\r\n")
    assert s.take() == wire(reply)


def test_only_offered_mechanisms() -> None:
    s = session(auth_mechanisms=("LOGIN",))
    s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert s.take() == wire(r.R504_AUTH_MECHANISM)


# --- the shell's answer -------------------------------------------------------------------
@pytest.mark.parametrize("answer", [r.R535_AUTH_FAILED, r.R454_TEMP_AUTH_FAILURE])
def test_refused_credentials(answer: Reply) -> None:
    s = session(answers={AuthCredentials: answer})
    s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert s.take() == wire(answer)
    assert s.conn.authenticated_user is None and s.conn.state is READY
    s.answers[AuthCredentials] = r.R235_AUTH_OK
    s.feed(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert s.conn.authenticated_user == "alice"


def test_421_to_credentials_closes() -> None:
    bye = Reply(421, "4.7.0", "mx.test go away")
    s = session(answers={AuthCredentials: bye})
    events = s.feed(b"AUTH PLAIN\r\n" + PLAIN + b"\r\n")
    assert kinds(events) == [AuthCredentials, Closing]


def test_pipelined_after_initial_response() -> None:
    s = session()
    events = s.feed(b"AUTH PLAIN " + PLAIN + b"\r\nMAIL FROM:<alice@b.example>\r\n")
    assert kinds(events) == [AuthCredentials, MailFrom]
    assert s.take() == wire(r.R235_AUTH_OK, r.R250_SENDER_OK)


# --- framing of SASL responses ------------------------------------------------------------
def test_sasl_response_limit_is_12288() -> None:
    s = session()
    s.feed(b"AUTH PLAIN\r\n")
    s.take()
    ok = b64(b"\0alice\0" + b"p" * 9000)
    assert len(ok) + 2 <= 12288
    assert kinds(s.feed(ok + b"\r\n")) == [AuthCredentials]
    s = session()
    s.feed(b"AUTH PLAIN\r\n")
    s.take()
    events = s.feed(b"A" * 12287 + b"\r\n")
    assert events == [BadCommand(b"***", r.R500_LINE_TOO_LONG)]
    assert s.conn.state is READY
    s.take()
    s.feed(b"AUTH PLAIN\r\n", b"A" * 20000, b"\r\nNOOP\r\n")
    assert s.take() == b"334 \r\n" + wire(r.R500_LINE_TOO_LONG, r.R250_OK)


def test_sasl_response_with_bare_lf() -> None:
    s = session()
    s.feed(b"AUTH PLAIN\r\n")
    s.take()
    assert s.feed(PLAIN + b"\n") == [BadCommand(b"***", r.R500_BARE_LF)]
    assert s.conn.state is READY


def test_eof_during_the_exchange() -> None:
    s = session()
    assert s.feed(b"AUTH LOGIN\r\n", b"") == [Closing("peer closed")]
