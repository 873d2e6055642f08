"""MAIL FROM and RCPT TO: sequence, path syntax and ESMTP parameters."""

from __future__ import annotations

import pytest

from goniec import replies as r
from goniec.errors import Reply
from goniec.model import MailParams, Recipient
from goniec.protocol import MAIL, RCPT, READY, BadCommand, MailFrom, RcptTo

from .harness import Shell, kinds, wire


def mail(line: bytes, **kwargs: object) -> tuple[Shell, list[object]]:
    s = Shell(**kwargs)  # type: ignore[arg-type]
    s.ehlo()
    return s, list(s.feed(line + b"\r\n"))


def mail_ok(line: bytes, **kwargs: object) -> MailFrom:
    s, events = mail(line, **kwargs)
    assert len(events) == 1 and isinstance(events[0], MailFrom), (events, s.take())
    return events[0]


def mail_error(line: bytes, **kwargs: object) -> Reply:
    s, events = mail(line, **kwargs)
    assert len(events) == 1 and isinstance(events[0], BadCommand), events
    assert s.take() == wire(events[0].reply)
    assert s.conn.state is READY
    return events[0].reply


def rcpt(line: bytes, mail_line: bytes = b"MAIL FROM:<a@b.example>", **kwargs: object) -> object:
    s = Shell(**kwargs)  # type: ignore[arg-type]
    s.ehlo()
    s.feed(mail_line + b"\r\n")
    assert s.conn.state is MAIL
    s.take()
    events = s.feed(line + b"\r\n")
    assert len(events) == 1
    event = events[0]
    if isinstance(event, RcptTo):
        return event.recipient
    assert isinstance(event, BadCommand)
    assert s.take() == wire(event.reply)
    return event.reply


# --- sequence -----------------------------------------------------------------------
def test_mail_before_helo() -> None:
    s = Shell()
    assert s.feed(b"MAIL FROM:<a@b.example>\r\n") == [
        BadCommand(b"MAIL FROM:<a@b.example>", r.R503_HELO_FIRST)
    ]


@pytest.mark.parametrize("helo", [False, True])
def test_rcpt_before_mail(helo: bool) -> None:
    s = Shell()
    if helo:
        s.ehlo()
    s.feed(b"RCPT TO:<a@b.example>\r\n")
    assert s.take() == wire(r.R503_MAIL_FIRST)


def test_nested_mail() -> None:
    s = Shell()
    s.ehlo()
    s.feed(b"MAIL FROM:<a@b.example>\r\n")
    s.take()
    s.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert s.take() == wire(r.R503_NESTED_MAIL)
    s.feed(b"RCPT TO:<c@d.example>\r\nMAIL FROM:<x@y.example>\r\n")
    assert s.take() == wire(r.R250_RECIPIENT_OK, r.R503_NESTED_MAIL)


def test_refused_mail_leaves_no_transaction() -> None:
    s = Shell(answers={MailFrom: r.R553_SENDER_NOT_OWNED})
    s.ehlo()
    s.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert s.take() == wire(r.R553_SENDER_NOT_OWNED, r.R503_MAIL_FIRST)
    assert s.conn.state is READY


def test_refused_rcpt_is_not_counted() -> None:
    s = Shell(answers={RcptTo: lambda e: r.R550_UNKNOWN_USER})
    s.ehlo()
    s.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    assert s.take() == wire(r.R250_SENDER_OK, r.R550_UNKNOWN_USER, r.R554_NO_VALID_RECIPIENTS)
    assert s.conn.state is MAIL
    s.answers[RcptTo] = r.R250_OK
    s.feed(b"RCPT TO:<e@d.example>\r\n")
    assert s.conn.state is RCPT


def test_pipelined_replies_come_out_in_order() -> None:
    s = Shell()
    s.ehlo()
    events = s.feed(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<bad>\r\n"
        b"RCPT TO:<e@d.example>\r\nNOOP\r\n"
    )
    assert kinds(events) == [MailFrom, RcptTo, BadCommand, RcptTo]
    assert s.take() == wire(
        r.R250_SENDER_OK,
        r.R250_RECIPIENT_OK,
        r.R501_BAD_RECIPIENT_SYNTAX,
        r.R250_RECIPIENT_OK,
        r.R250_OK,
    )


# --- MAIL syntax ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "sender"),
    [
        (b"MAIL FROM:<a@b.example>", "a@b.example"),
        (b"MAIL FROM: <a@b.example>", "a@b.example"),
        (b"mail from:<>", ""),
        (b"MAIL FROM: <>", ""),
        (b"MAIL FROM:<A.B@Example.COM>", "A.B@example.com"),
        (b'MAIL FROM:<"john doe"@x.example>', '"john doe"@x.example'),
        (b'MAIL FROM:<"a\\"b>c"@x.example>', '"a\\"b>c"@x.example'),
        (b'MAIL FROM:<""@x.example>', '""@x.example'),
        (b"MAIL FROM:<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        (b"MAIL FROM:<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        (b"MAIL FROM:<user@[ipv6:::ffff:192.0.2.1]>", "user@[ipv6:::ffff:192.0.2.1]"),
        (b"MAIL FROM:<@a.example:u@c.example>", "u@c.example"),
        (b"MAIL FROM:<x@a-b.c-d.example>", "x@a-b.c-d.example"),
        (b"MAIL FROM:<x@1.2>", "x@1.2"),
        (b"MAIL FROM:<!#$%&'*+/=?^_`{|}~-@x.example>", "!#$%&'*+/=?^_`{|}~-@x.example"),
        (b"MAIL FROM:<" + b"l" * 64 + b"@x.example>", "l" * 64 + "@x.example"),
        (b"MAIL FROM:<x@" + b"d" * 63 + b".example>", "x@" + "d" * 63 + ".example"),
    ],
)
def test_valid_reverse_paths(line: bytes, sender: str) -> None:
    assert mail_ok(line).sender == sender


def test_longest_path() -> None:
    domain = ".".join(["d" * 62] * 3) + "." + "e" * 55  # 245 octets
    path = b"<" + b"l" * 9 + b"@" + domain.encode() + b">"
    assert len(path) == 256
    assert mail_ok(b"MAIL FROM:" + path).sender == "l" * 9 + "@" + domain
    assert mail_error(b"MAIL FROM:<l" + path[1:]) == r.R501_BAD_SENDER_SYNTAX


@pytest.mark.parametrize(
    "path",
    [
        b"a@b.example",
        b"<a@b.example",
        b"<a@>",
        b"<@b.example>",
        b"<a>",
        b"<a.@b.example>",
        b"<.a@b.example>",
        b"<a..b@c.example>",
        b"<a@-b.example>",
        b"<a@b-.example>",
        b"<a@b..example>",
        b"<a@b.example.>",
        b"<a b@c.example>",
        b"<a@b@c.example>",
        b'<"unterminated@b.example>',
        b'<"a"b@c.example>',
        b"<a@[192.0.2.256]>",
        b"<a@[192.0.2]>",
        b"<a@[IPv6:zz::1]>",
        b"<a@[IPv6:fe80::1%eth0]>",
        b"<a@[tag:content]>",
        b"<a@[]>",
        b"<@-a.example:u@c.example>",
        b"<@a.example,u@c.example>",
        b"<@a.example,@[192.0.2.1]:u@c.example>",
        b"<a@b.example>x",
        b"<a@b.example>SIZE=10",
        b"<" + b"l" * 65 + b"@x.example>",
        b"<x@" + b"d" * 64 + b".example>",
        b"<a@b.example\r>",
    ],
)
def test_invalid_reverse_paths(path: bytes) -> None:
    assert mail_error(b"MAIL FROM:" + path) == r.R501_BAD_SENDER_SYNTAX


@pytest.mark.parametrize(
    "line",
    [b"MAIL", b"MAIL TO:<a@b.example>", b"MAIL FROM<a@b.example>", b"MAIL FROM"],
)
def test_mail_without_from(line: bytes) -> None:
    assert mail_error(line) == r.R501_SYNTAX


def test_mail_two_spaces_after_the_colon() -> None:
    assert mail_error(b"MAIL FROM:  <a@b.example>") == r.R501_BAD_SENDER_SYNTAX


def test_mail_invalid_utf8() -> None:
    assert mail_error(b"MAIL FROM:<\xff@b.example> SMTPUTF8") == r.R501_INVALID_UTF8


# --- SMTPUTF8 (RFC 6531) ---------------------------------------------------------------
def test_utf8_addresses_need_smtputf8() -> None:
    line = "MAIL FROM:<jürgen@bücher.example>".encode()
    assert mail_error(line) == r.R553_SMTPUTF8_REQUIRED
    event = mail_ok(line + b" SMTPUTF8")
    assert event.sender == "jürgen@bücher.example"
    assert event.params == MailParams(smtputf8=True)
    assert mail_error(line + b" SMTPUTF8", smtputf8=False) == r.R555_UNKNOWN_PARAMETER
    assert mail_error(b"MAIL FROM:<a@b.example> SMTPUTF8=yes") == r.R501_BAD_PARAMETER


def test_utf8_recipient_depends_on_the_mail_transaction() -> None:
    line = "RCPT TO:<用户@例子.example>".encode()
    with_utf8 = rcpt(line, b"MAIL FROM:<a@b.example> SMTPUTF8")
    assert with_utf8 == Recipient("用户@例子.example")
    assert rcpt(line) == r.R553_SMTPUTF8_REQUIRED


def test_utf8_flag_is_per_transaction() -> None:
    s = Shell()
    s.ehlo()
    s.feed(b"MAIL FROM:<a@b.example> SMTPUTF8\r\nRSET\r\nMAIL FROM:<a@b.example>\r\n")
    s.take()
    s.feed("RCPT TO:<ü@x.example>\r\n".encode())
    assert s.take() == wire(r.R553_SMTPUTF8_REQUIRED)


# --- MAIL parameters ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (b"SIZE=12345", MailParams(size=12345)),
        (b"size=0", MailParams(size=0)),
        (b"BODY=7BIT", MailParams(body="7BIT")),
        (b"BODY=8bitmime", MailParams(body="8BITMIME")),
        (b"RET=full", MailParams(ret="FULL")),
        (b"RET=HDRS ENVID=QQ314159", MailParams(ret="HDRS", envid="QQ314159")),
        (b"ENVID=a+2Bb+3Dc", MailParams(envid="a+b=c")),
        (b"ENVID=" + b"e" * 100, MailParams(envid="e" * 100)),
        (
            b"SIZE=1  BODY=8BITMIME   SMTPUTF8",
            MailParams(size=1, body="8BITMIME", smtputf8=True),
        ),
    ],
)
def test_mail_parameters(params: bytes, expected: MailParams) -> None:
    assert mail_ok(b"MAIL FROM:<a@b.example> " + params).params == expected


def test_auth_parameter_when_auth_is_offered() -> None:
    kwargs = {"auth_requires_tls": False}
    assert mail_ok(b"MAIL FROM:<a@b.example> AUTH=<>", **kwargs).params.auth == "<>"
    event = mail_ok(b"MAIL FROM:<a@b.example> AUTH=u+2Bx@b.example", **kwargs)
    assert event.params.auth == "u+x@b.example"
    assert mail_error(b"MAIL FROM:<a@b.example> AUTH=+FF", **kwargs) == r.R501_BAD_PARAMETER
    # In plaintext with auth_requires_tls, AUTH is not advertised: AUTH= is unknown.
    assert mail_error(b"MAIL FROM:<a@b.example> AUTH=<>") == r.R555_UNKNOWN_PARAMETER
    event = mail_ok(b"MAIL FROM:<a@b.example> AUTH=<>", tls_active=True)
    assert event.params.auth == "<>"


@pytest.mark.parametrize(
    ("params", "reply"),
    [
        (b"SIZE=abc", r.R501_BAD_PARAMETER),
        (b"SIZE=-1", r.R501_BAD_PARAMETER),
        (b"SIZE", r.R501_BAD_PARAMETER),
        (b"SIZE=", r.R501_SYNTAX),
        ("SIZE=١٢".encode(), r.R501_BAD_PARAMETER),
        (b"SIZE=" + b"1" * 21, r.R501_BAD_PARAMETER),
        (b"SIZE=10485761", r.R552_MESSAGE_TOO_BIG),
        (b"SIZE=1 SIZE=1", r.R555_DUPLICATE_PARAMETER),
        (b"SIZE=1 size=2", r.R555_DUPLICATE_PARAMETER),
        (b"BODY=BINARYMIME", r.R555_UNSUPPORTED_BODY),
        (b"BODY=9BIT", r.R501_BAD_PARAMETER),
        (b"RET=ALL", r.R501_BAD_PARAMETER),
        (b"ENVID=" + b"e" * 101, r.R501_BAD_PARAMETER),
        (b"ENVID=a+0Ab", r.R501_BAD_PARAMETER),
        (b"ENVID=a+zz", r.R501_BAD_PARAMETER),
        (b"ENVID=a+", r.R501_BAD_PARAMETER),
        (b"ENVID=a=b", r.R501_SYNTAX),
        (b"FOO=bar", r.R555_UNKNOWN_PARAMETER),
        (b"XFORWARD", r.R555_UNKNOWN_PARAMETER),
        (b"NOTIFY=NEVER", r.R555_UNKNOWN_PARAMETER),
        (b"-X=1", r.R501_SYNTAX),
        (b"X_Y=1", r.R501_SYNTAX),
        (b"SIZE=1\x01", r.R501_SYNTAX),
    ],
)
def test_bad_mail_parameters(params: bytes, reply: Reply) -> None:
    assert mail_error(b"MAIL FROM:<a@b.example> " + params) == reply


def test_size_unlimited() -> None:
    event = mail_ok(b"MAIL FROM:<a@b.example> SIZE=99999999999", max_message_size=0)
    assert event.params.size == 99999999999


@pytest.mark.parametrize(
    ("switch", "params"),
    [("eightbitmime", b"BODY=8BITMIME"), ("dsn", b"RET=FULL"), ("dsn", b"ENVID=x")],
)
def test_parameters_of_switched_off_extensions_are_unknown(switch: str, params: bytes) -> None:
    reply = mail_error(b"MAIL FROM:<a@b.example> " + params, **{switch: False})
    assert reply == r.R555_UNKNOWN_PARAMETER


def test_no_parameters_after_helo() -> None:
    s = Shell()
    s.feed(b"HELO c\r\nMAIL FROM:<a@b.example> SIZE=10\r\nMAIL FROM:<a@b.example>\r\n")
    s.feed(b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n")
    out = s.take()
    assert out == b"250 mx.test\r\n" + wire(
        r.R555_UNKNOWN_PARAMETER, r.R250_SENDER_OK, r.R555_UNKNOWN_PARAMETER
    )


# --- RCPT -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "recipient"),
    [
        (b"RCPT TO:<c@d.example>", Recipient("c@d.example")),
        (b"RCPT TO: <c@D.Example>", Recipient("c@d.example")),
        (b"RCPT TO:<Postmaster>", Recipient("Postmaster")),
        (b"rcpt to:<postmaster>", Recipient("postmaster")),
        (b"RCPT TO:<@hop1.example,@hop2.example:u@d.example>", Recipient("u@d.example")),
        (
            b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE",
            Recipient("c@d.example", frozenset({"SUCCESS", "FAILURE"})),
        ),
        (b"RCPT TO:<c@d.example> notify=never", Recipient("c@d.example", frozenset({"NEVER"}))),
        (
            b"RCPT TO:<c@d.example> NOTIFY=DELAY ORCPT=rfc822;c+40d.example",
            Recipient("c@d.example", frozenset({"DELAY"}), "rfc822;c@d.example"),
        ),
        (b"RCPT TO:<c@d.example> ORCPT=utf-8;x", Recipient("c@d.example", None, "utf-8;x")),
    ],
)
def test_valid_rcpt(line: bytes, recipient: Recipient) -> None:
    assert rcpt(line) == recipient


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RCPT TO:<>", r.R501_BAD_RECIPIENT_SYNTAX),
        (b"RCPT TO:c@d.example", r.R501_BAD_RECIPIENT_SYNTAX),
        (b"RCPT TO:<c@d.example", r.R501_BAD_RECIPIENT_SYNTAX),
        (b"RCPT TO:<Postmaster@>", r.R501_BAD_RECIPIENT_SYNTAX),
        (b"RCPT TO:<c@d.example>x", r.R501_BAD_RECIPIENT_SYNTAX),
        (b"RCPT FROM:<c@d.example>", r.R501_SYNTAX),
        (b"RCPT", r.R501_SYNTAX),
        (b"RCPT TO:<\xc3@d.example>", r.R501_INVALID_UTF8),
        (b"RCPT TO:<c@d.example> NOTIFY=NEVER,SUCCESS", r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> NOTIFY=SOMETIMES", r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,", r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> NOTIFY", r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> ORCPT=c@d.example", r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> ORCPT=;c@d.example", r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> ORCPT=rfc822;c+zz", r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> ORCPT=rfc822;" + b"x" * 494, r.R501_BAD_PARAMETER),
        (b"RCPT TO:<c@d.example> NOTIFY=NEVER NOTIFY=NEVER", r.R555_DUPLICATE_PARAMETER),
        (b"RCPT TO:<c@d.example> SIZE=10", r.R555_UNKNOWN_PARAMETER),
    ],
)
def test_invalid_rcpt(line: bytes, reply: Reply) -> None:
    assert rcpt(line) == reply


def test_orcpt_length_limit() -> None:
    value = b"rfc822;" + b"x" * 493
    assert len(value) == 500
    assert rcpt(b"RCPT TO:<c@d.example> ORCPT=" + value) == Recipient(
        "c@d.example", None, "rfc822;" + "x" * 493
    )


def test_rcpt_dsn_parameters_need_dsn() -> None:
    assert rcpt(b"RCPT TO:<c@d.example> NOTIFY=NEVER", dsn=False) == r.R555_UNKNOWN_PARAMETER
