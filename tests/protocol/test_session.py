"""Greeting, HELO/EHLO, the simple commands, line framing, errors and closing."""

from __future__ import annotations

from typing import Any

import pytest

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol import (
    CLOSED,
    CONNECTING,
    GREETED,
    MAIL,
    NEED_DATA,
    PAUSED,
    RCPT,
    READY,
    BadCommand,
    Closing,
    Connected,
    Helo,
    LocalProtocolError,
    MailFrom,
    PeerProtocolError,
    RcptTo,
    ServerConnection,
    TransactionReset,
)

from .harness import GREETING, HELLO, Shell, host, kinds, options, wire

EHLO_DEFAULT = (
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 DSN\r\n"
)


# --- greeting ---------------------------------------------------------------------
def test_first_event_is_connected_and_commands_wait_for_the_greeting() -> None:
    conn = ServerConnection(options())
    assert conn.state is CONNECTING
    conn.receive_data(b"NOOP\r\n")
    assert conn.buffered == 6  # a pregreet talker, visible to the shell
    assert conn.next_event() == Connected()
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED
    assert conn.data_to_send() == b""
    conn.respond(GREETING)
    assert conn.state is GREETED
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 0
    # The greeting carries no enhanced code (RFC 2034 3), the NOOP reply does.
    assert conn.data_to_send() == b"220 mx.test ESMTP Goniec\r\n250 2.0.0 Ok\r\n"
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("code", [421, 554])
def test_refused_greeting_closes(code: int) -> None:
    conn = ServerConnection(options())
    conn.receive_data(b"EHLO x\r\n")
    assert conn.next_event() == Connected()
    conn.respond(Reply(code, "4.3.2" if code == 421 else "5.7.1", "mx.test go away"))
    assert conn.next_event() == Closing("greeting refused")
    assert conn.next_event() is NEED_DATA
    assert conn.closed and conn.state is CLOSED
    enhanced = "4.3.2" if code == 421 else "5.7.1"
    # A refusal carries its enhanced code so the client can log why.
    assert conn.data_to_send() == f"{code} {enhanced} mx.test go away\r\n".encode()


def test_respond_misuse_is_a_local_error() -> None:
    conn = ServerConnection(options())
    with pytest.raises(LocalProtocolError):
        conn.respond(GREETING)  # Connected was not handed out yet
    assert conn.next_event() == Connected()
    with pytest.raises(LocalProtocolError):
        conn.respond(Reply(100, None, "no"))
    with pytest.raises(LocalProtocolError):
        conn.respond(Reply(600, None, "no"))
    conn.respond(GREETING)
    with pytest.raises(LocalProtocolError):
        conn.respond(GREETING)
    with pytest.raises(LocalProtocolError):
        conn.tls_started()


# --- HELO / EHLO ------------------------------------------------------------------
def test_ehlo_lists_extensions_after_the_shell_text() -> None:
    s = Shell()
    events = s.feed(b"EHLO client.example\r\n")
    assert events == [Helo("client.example", True)]
    assert s.take() == EHLO_DEFAULT
    assert s.conn.helo_name == "client.example"
    assert s.conn.esmtp and s.conn.state is READY


def test_ehlo_multiline_shell_text_keeps_all_lines() -> None:
    s = Shell(answers={Helo: Reply(250, "2.0.0", "mx.test hello\nwelcome")})
    s.feed(b"EHLO c\r\n")
    assert s.take().startswith(b"250-mx.test hello\r\n250-welcome\r\n250-PIPELINING\r\n")


@pytest.mark.parametrize(
    ("kwargs", "tls", "expected"),
    [
        (
            {
                "pipelining": False,
                "eightbitmime": False,
                "smtputf8": False,
                "enhanced_status_codes": False,
                "chunking": False,
                "dsn": False,
                "max_message_size": 0,
                "auth_mechanisms": (),
            },
            False,
            ["SIZE"],
        ),
        ({"tls_available": True}, False, ["STARTTLS"]),
        ({"tls_available": True}, True, ["AUTH PLAIN LOGIN"]),
        ({"auth_requires_tls": False}, False, ["AUTH PLAIN LOGIN"]),
        ({"auth_requires_tls": False, "auth_mechanisms": ("LOGIN",)}, False, ["AUTH LOGIN"]),
        ({"auth_mechanisms": ()}, True, []),
    ],
)
def test_ehlo_keywords_follow_the_options(
    kwargs: dict[str, Any], tls: bool, expected: list[str]
) -> None:
    s = Shell(tls_active=tls, **kwargs)
    s.feed(b"EHLO c\r\n")
    lines = s.take().decode().split("\r\n")[1:-1]
    words = [line[4:] for line in lines]
    if kwargs.get("pipelining", True):
        assert words[0] == "PIPELINING"
        words = words[1:]
    if "SIZE" not in expected:
        assert words[0] == "SIZE 10485760"
        words = [w for w in words if w not in ("8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES")]
        words = [w for w in words if w not in ("CHUNKING", "DSN", "SIZE 10485760")]
    assert words == expected


def test_helo_gets_the_shell_reply_without_extensions() -> None:
    s = Shell()
    assert s.feed(b"HELO client\r\n") == [Helo("client", False)]
    assert s.take() == b"250 mx.test\r\n"
    assert s.conn.helo_name == "client" and not s.conn.esmtp


@pytest.mark.parametrize("line", [b"EHLO\r\n", b"HELO\r\n", b"EHLO \r\n", b"HELO   \r\n"])
def test_helo_needs_a_name(line: bytes) -> None:
    s = Shell()
    events = s.feed(line)
    assert events == [BadCommand(line[:-2], r.R501_HELO_NAME_REQUIRED)]
    assert s.take() == wire(r.R501_HELO_NAME_REQUIRED)
    assert s.conn.state is GREETED


def test_helo_name_must_be_utf8() -> None:
    s = Shell()
    s.feed(b"EHLO \xff\r\n")
    assert s.take() == wire(r.R501_INVALID_UTF8)


def test_helo_name_may_be_anything_non_empty() -> None:
    s = Shell()
    assert s.feed(b"ehlo [1.2.3.4] extra words\r\n") == [Helo("[1.2.3.4] extra words", True)]


def test_rejected_ehlo_keeps_the_session_ungreeted() -> None:
    no = Reply(550, "5.7.1", "bad HELO")
    s = Shell(answers={Helo: no})
    s.feed(b"EHLO bad\r\n", b"MAIL FROM:<a@b.example>\r\n")
    # A refused EHLO carries the enhanced code; an accepted one does not (RFC 2034 3).
    assert s.take() == b"550 5.7.1 bad HELO\r\n" + wire(r.R503_HELO_FIRST)
    assert s.conn.helo_name is None and s.conn.state is GREETED


def test_ehlo_in_a_transaction_resets_it() -> None:
    s = Shell()
    s.ehlo()
    s.open_transaction()
    assert s.conn.state is RCPT
    assert s.feed(b"EHLO again\r\n") == [TransactionReset(), Helo("again", True)]
    assert s.conn.state is READY
    # MAIL is possible again.
    assert kinds(s.feed(b"MAIL FROM:<>\r\n")) == [MailFrom]


def test_helo_after_refused_ehlo_in_transaction_stays_ready() -> None:
    s = Shell()
    s.ehlo()
    s.open_transaction()
    s.answers[Helo] = Reply(550, None, "no")
    assert s.feed(b"HELO again\r\n") == [TransactionReset(), Helo("again", False)]
    assert s.conn.state is READY and s.conn.helo_name == "client.example" and s.conn.esmtp


# --- simple commands ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"NOOP\r\n", r.R250_OK),
        (b"noop anything at all\r\n", r.R250_OK),
        (b"HELP\r\n", r.R214_HELP),
        (b"help mail\r\n", r.R214_HELP),
        (b"VRFY postmaster\r\n", r.R252_CANNOT_VRFY),
    ],
)
def test_commands_answered_by_the_core(line: bytes, reply: Reply) -> None:
    for state_setup in (False, True):
        s = Shell()
        if state_setup:
            s.ehlo()
        assert s.feed(line) == []
        assert s.take() == wire(reply)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"VRFY\r\n", r.R501_VRFY_ARGUMENT_REQUIRED),
        (b"VRFY  \r\n", r.R501_VRFY_ARGUMENT_REQUIRED),
        (b"EXPN staff\r\n", r.R502_NOT_IMPLEMENTED),
        (b"RSET now\r\n", r.R501_NO_ARGUMENTS),
        (b"QUIT now\r\n", r.R501_NO_ARGUMENTS),
        (b"FOO\r\n", r.R500_UNKNOWN_COMMAND),
        (b"\r\n", r.R500_UNKNOWN_COMMAND),
        (b"MAILFROM:<a@b>\r\n", r.R500_UNKNOWN_COMMAND),
        (b" NOOP\r\n", r.R500_UNKNOWN_COMMAND),
        (b"TURN\r\n", r.R500_UNKNOWN_COMMAND),
    ],
)
def test_core_errors_emit_bad_command(line: bytes, reply: Reply) -> None:
    s = Shell()
    assert s.feed(line) == [BadCommand(line[:-2], reply)]
    assert s.take() == wire(reply)
    assert not s.conn.closed


def test_verbs_are_case_insensitive() -> None:
    s = Shell()
    s.feed(b"eHlO c\r\n")
    s.take()
    assert kinds(s.feed(b"mail from:<a@b.example>\r\n", b"rCpT To:<c@d.example>\r\n")) == [
        MailFrom,
        type(s.decisions[-1]),
    ]
    assert s.take() == wire(r.R250_SENDER_OK, r.R250_RECIPIENT_OK)


def test_rset_ends_a_transaction_and_keeps_the_helo() -> None:
    s = Shell()
    s.ehlo()
    assert s.feed(b"RSET\r\n") == []  # no transaction: no TransactionReset
    s.open_transaction()
    assert s.feed(b"RSET\r\n") == [TransactionReset()]
    assert s.take() == wire(r.R250_OK)
    assert s.conn.state is READY and s.conn.helo_name == "client.example"
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    assert s.conn.state is MAIL
    assert s.feed(b"RSET\r\n") == [TransactionReset()]


def test_rset_before_helo() -> None:
    s = Shell()
    s.feed(b"RSET\r\n")
    assert s.take() == wire(r.R250_OK)
    assert s.conn.state is GREETED


def test_no_enhanced_codes_when_switched_off() -> None:
    s = Shell(enhanced_status_codes=False)
    s.feed(b"NOOP\r\nFOO\r\n")
    assert s.take() == b"250 Ok\r\n500 Command not recognized\r\n"


# --- QUIT, EOF, closing -------------------------------------------------------------
def test_quit_closes_and_ignores_what_follows() -> None:
    s = Shell()
    events = s.feed(b"QUIT\r\nNOOP\r\n")
    assert events == [Closing("quit")]
    assert s.take() == wire(host(r.R221_BYE))
    assert s.conn.closed
    s.conn.receive_data(b"")  # EOF after closing is fine
    with pytest.raises(PeerProtocolError):
        s.conn.receive_data(b"NOOP\r\n")
    assert s.conn.next_event() is NEED_DATA


def test_quit_in_a_transaction_resets_it() -> None:
    s = Shell()
    s.ehlo()
    s.open_transaction()
    assert s.feed(b"QUIT\r\n") == [TransactionReset(), Closing("quit")]


def test_eof_closes_without_reply() -> None:
    s = Shell()
    assert s.feed(b"NOO", b"") == [Closing("peer closed")]
    assert s.take() == b""
    s.conn.receive_data(b"")
    with pytest.raises(PeerProtocolError):
        s.conn.receive_data(b"x")


def test_eof_in_a_transaction_resets_it() -> None:
    s = Shell()
    s.ehlo()
    s.open_transaction()
    assert s.feed(b"") == [TransactionReset(), Closing("peer closed")]


def test_eof_waits_for_the_pending_decision_and_the_buffered_commands() -> None:
    conn = ServerConnection(options())
    conn.receive_data(b"EHLO a\r\nQUIT\r\n")
    conn.receive_data(b"")
    conn.receive_data(b"")  # a second EOF changes nothing
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"late")  # a socket never yields data after EOF
    assert conn.next_event() == Connected()
    conn.respond(GREETING)
    assert conn.next_event() == Helo("a", True)
    conn.respond(HELLO)
    assert conn.next_event() == Closing("quit")


def test_shell_close_sends_the_reply() -> None:
    s = Shell()
    s.ehlo()
    s.open_transaction()
    s.conn.close(host(r.R421_TIMEOUT))
    assert s.pump() == [TransactionReset(), Closing("closed by server")]
    assert s.take() == wire(host(r.R421_TIMEOUT))
    s.conn.close(host(r.R421_TIMEOUT))  # a second close does nothing
    assert s.pump() == [] and s.take() == b""


def test_shell_close_while_a_decision_is_pending() -> None:
    s = Shell()
    s.ehlo()
    s.open_transaction()
    conn = s.conn
    conn.receive_data(b"EHLO again\r\n")
    assert conn.next_event() == TransactionReset()
    # Helo is queued behind it but not handed out yet; close() withdraws it.
    conn.close(host(r.R421_SHUTTING_DOWN))
    assert conn.next_event() == Closing("closed by server")
    assert conn.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        conn.respond(HELLO)


def test_shell_close_after_handing_out_a_decision() -> None:
    conn = ServerConnection(options())
    assert conn.next_event() == Connected()
    conn.close(host(r.R421_SHUTTING_DOWN))
    assert conn.next_event() == Closing("closed by server")
    with pytest.raises(LocalProtocolError):
        conn.respond(GREETING)


def test_421_answer_to_any_decision_closes() -> None:
    bye = Reply(421, "4.3.2", "mx.test shutting down")
    s = Shell(answers={MailFrom: bye})
    s.ehlo()
    assert kinds(s.feed(b"MAIL FROM:<a@b.example>\r\nNOOP\r\n")) == [MailFrom, Closing]
    assert s.take() == wire(bye)


def test_421_to_rcpt_resets_the_open_transaction() -> None:
    bye = Reply(421, "4.3.2", "mx.test shutting down")
    s = Shell(answers={RcptTo: bye})
    s.ehlo()
    s.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert kinds(s.feed(b"RCPT TO:<c@d.example>\r\n")) == [RcptTo, TransactionReset, Closing]


# --- line framing -------------------------------------------------------------------
@pytest.mark.parametrize("line", [b"NOOP\n", b"\n", b"MAIL FROM:<a@b.c>\n"])
def test_bare_lf_command_line_is_refused(line: bytes) -> None:
    s = Shell()
    assert s.feed(line) == [BadCommand(line[:-1], r.R500_BARE_LF)]
    assert s.take() == wire(r.R500_BARE_LF)


def test_cr_inside_a_line_is_just_a_byte() -> None:
    s = Shell()
    s.feed(b"NOOP \rNOOP\r\n")  # one NOOP with an odd argument
    assert s.take() == wire(r.R250_OK)


@pytest.mark.parametrize(
    ("verb", "limit"), [(b"NOOP ", 512), (b"MAIL ", 2048), (b"RCPT ", 2048), (b"AUTH ", 12288)]
)
def test_line_length_limits(verb: bytes, limit: int) -> None:
    ok = verb + b"x" * (limit - len(verb) - 2) + b"\r\n"
    too_long = verb + b"x" * (limit - len(verb) - 1) + b"\r\n"
    assert len(ok) == limit and len(too_long) == limit + 1
    for split in (False, True):
        s = Shell()
        events = s.feed(*([too_long[:300], too_long[300:]] if split else [too_long]))
        assert [e.reply for e in events if isinstance(e, BadCommand)] == [r.R500_LINE_TOO_LONG]
        assert s.take() == wire(r.R500_LINE_TOO_LONG)
        s.feed(ok)
        assert r.R500_LINE_TOO_LONG.to_bytes() not in s.take()


def test_overlong_line_is_skipped_with_bounded_memory() -> None:
    s = Shell()
    s.feed(b"NOOP ")
    for _ in range(100):
        assert s.feed(b"y" * 10_000) == []
        assert s.conn.buffered < 13_000
    events = s.feed(b"yyy\r\nNOOP\r\n")
    assert events == [BadCommand(b"NOOP " + b"y" * 195, r.R500_LINE_TOO_LONG)]
    assert s.take() == wire(r.R500_LINE_TOO_LONG, r.R250_OK)


def test_overlong_line_then_eof() -> None:
    s = Shell()
    assert s.feed(b"X" * 600, b"") == [Closing("peer closed")]


def test_overlong_auth_line_is_redacted() -> None:
    s = Shell()
    events = s.feed(b"AUTH PLAIN " + b"A" * 13_000 + b"\r\n")
    assert events == [BadCommand(b"AUTH PLAIN ***", r.R500_LINE_TOO_LONG)]


# --- too many errors --------------------------------------------------------------
def test_too_many_errors_closes_with_421() -> None:
    s = Shell(max_bad_commands=3)
    events = s.feed(b"FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nNOOP\r\n")
    assert kinds(events) == [BadCommand, BadCommand, BadCommand, Closing]
    assert events[-1] == Closing("too many errors")
    assert s.take() == wire(
        r.R500_UNKNOWN_COMMAND,
        r.R500_UNKNOWN_COMMAND,
        r.R250_OK,
        r.R500_UNKNOWN_COMMAND,
        host(r.R421_TOO_MANY_ERRORS),
    )


def test_too_many_errors_in_a_transaction_resets_it() -> None:
    s = Shell(max_bad_commands=1)
    s.ehlo()
    s.open_transaction()
    assert kinds(s.feed(b"FOO\r\n")) == [BadCommand, TransactionReset, Closing]


def test_error_limit_zero_means_unlimited() -> None:
    s = Shell(max_bad_commands=0)
    s.feed(b"FOO\r\n" * 100)
    assert not s.conn.closed


def test_shell_rejections_are_not_counted() -> None:
    s = Shell(max_bad_commands=2, answers={MailFrom: r.R550_RELAY_DENIED})
    s.ehlo()
    s.feed(b"MAIL FROM:<a@b.example>\r\n" * 5)
    assert not s.conn.closed


# --- options ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"hostname": ""},
        {"hostname": "two words"},
        {"max_message_size": -1},
        {"max_bad_commands": -1},
        {"max_line_length": -5},
        {"auth_mechanisms": ("CRAM-MD5",)},
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any]) -> None:
    from goniec.protocol import ServerOptions

    args = {"hostname": "mx.test", **kwargs}
    with pytest.raises(ValueError):
        ServerOptions(**args)


def test_read_only_properties() -> None:
    s = Shell()
    c = s.conn
    assert (c.tls_active, c.authenticated_user, c.helo_name, c.esmtp, c.in_data, c.closed) == (
        False,
        None,
        None,
        False,
        False,
        False,
    )


def test_sentinels_have_readable_names() -> None:
    assert (repr(NEED_DATA), repr(PAUSED), repr(READY), repr(CLOSED)) == (
        "NEED_DATA",
        "PAUSED",
        "READY",
        "CLOSED",
    )
