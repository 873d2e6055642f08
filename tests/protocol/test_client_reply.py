"""Reply parsing (RFC 5321 4.2, RFC 2034 enhanced codes) and the EHLO keyword list."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol.client_reply import (
    MAX_REPLY_LINE,
    Extensions,
    ReplyParser,
    ReplySyntaxError,
)


def parse(data: bytes) -> list[Reply]:
    p = ReplyParser()
    p.feed(data)
    out = []
    while (reply := p.next_reply()) is not None:
        out.append(reply)
    return out


def test_single_and_multi_line() -> None:
    assert parse(b"250 ok\r\n") == [Reply(250, None, "ok")]
    assert parse(b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n") == [
        Reply(250, None, "mx.test\nPIPELINING\nSIZE 10")]
    assert parse(b"354\r\n") == [Reply(354, None, "")]


def test_enhanced_codes_are_split_off_every_line() -> None:
    [reply] = parse(b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n")
    assert reply == Reply(550, "5.1.1", "first\nsecond\nthird")
    # The class must match the code; "2.0.0" after a 5xx is just text.
    assert parse(b"550 2.0.0 odd\r\n") == [Reply(550, None, "2.0.0 odd")]
    assert parse(b"421 4.4.2 mx timeout\r\n") == [Reply(421, "4.4.2", "mx timeout")]
    assert parse(b"250 2.0.0\r\n") == [Reply(250, "2.0.0", "")]


def test_our_own_replies_parse_back() -> None:
    for reply in (r.R250_OK, r.R550_RELAY_DENIED, r.R354_START_DATA, r.R221_BYE,
                  Reply(250, None, "a\nb\nc")):
        assert parse(reply.to_bytes()) == [reply]


def test_bare_lf_and_pieces() -> None:
    p = ReplyParser()
    for byte in b"250-a\n250 b\r\n220 x\r\n":
        p.feed(bytes([byte]))
    assert p.next_reply() == Reply(250, None, "a\nb")
    assert p.next_reply() == Reply(220, None, "x")
    assert p.next_reply() is None


@pytest.mark.parametrize("data", [
    b"hello\r\n", b"25\r\n", b"650 six hundred\r\n", b"150 one\r\n", b"250x\r\n",
    b"250-a\r\n550 b\r\n", b"2x0 ok\r\n",
])
def test_garbage(data: bytes) -> None:
    with pytest.raises(ReplySyntaxError):
        parse(data)


def test_bounds() -> None:
    with pytest.raises(ReplySyntaxError):
        parse(b"250 " + b"x" * MAX_REPLY_LINE)  # no end in sight
    with pytest.raises(ReplySyntaxError):
        parse(b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n")
    with pytest.raises(ReplySyntaxError):
        parse(b"250-x\r\n" * 1000)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_reply_syntax_error(data: bytes) -> None:
    with contextlib.suppress(ReplySyntaxError):
        parse(data)


def test_extensions() -> None:
    ext = Extensions.from_ehlo(Reply(250, None, "\n".join([
        "mx.test greets you", "pipelining", "SIZE 35882577", "8BITMIME", "AUTH=LOGIN",
        "AUTH PLAIN xoauth2", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "DSN",
        "STARTTLS", "X-CUSTOM a b"])))
    assert ext.pipelining and ext.eightbitmime and ext.chunking and ext.smtputf8
    assert ext.dsn and ext.starttls and ext.enhanced_status_codes
    assert ext.size == 35882577
    assert ext.auth == {"LOGIN", "PLAIN", "XOAUTH2"}
    assert "x-custom" in ext and ext.keywords["X-CUSTOM"] == "a b"
    bare = Extensions.from_ehlo(Reply(250, None, "mx\nSIZE"))
    assert bare.size == 0 and not bare.pipelining and bare.auth == frozenset()
    assert Extensions().size is None
