"""BDAT (RFC 3030 CHUNKING): octet counting, sequence, size limit."""

from __future__ import annotations

import pytest

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol import (
    BDAT,
    READY,
    BadCommand,
    Closing,
    DataChunk,
    DataEnd,
    MessageRejected,
    TransactionReset,
)

from .harness import Shell, body_of, kinds, wire


def received(n: int) -> Reply:
    return r.R250_BDAT_RECEIVED.with_text(f"{n} octets received")


def ready(**kwargs: object) -> Shell:
    s = Shell(**kwargs)  # type: ignore[arg-type]
    s.ehlo()
    s.open_transaction()
    return s


def test_chunks_are_taken_byte_for_byte() -> None:
    s = ready()
    raw1 = b"Subject: x\r\n\r\n.\r\nbare\nlf\r"
    raw2 = b"\r\n.\r\n.."
    events = s.feed(b"BDAT %d\r\n" % len(raw1) + raw1 + b"BDAT %d LAST\r\n" % len(raw2) + raw2)
    assert body_of(events) == raw1 + raw2
    assert kinds(events) == [DataEnd]
    assert s.take() == wire(received(len(raw1)), r.R250_QUEUED)
    assert s.conn.state is READY


def test_chunk_split_over_many_reads() -> None:
    s = ready()
    s.feed(b"BDAT 10 last\r\n")
    assert s.conn.in_data and s.conn.state is BDAT
    events = s.feed(*[bytes([c]) for c in b"0123456789"], b"NOOP\r\n")
    assert events[:10] == [DataChunk(bytes([c])) for c in b"0123456789"]
    assert kinds(events) == [DataEnd]
    assert s.take() == wire(r.R250_QUEUED, r.R250_OK)
    assert not s.conn.in_data


def test_empty_chunks() -> None:
    s = ready()
    events = s.feed(b"BDAT 0\r\nBDAT 0 LAST\r\n")
    assert events == [DataEnd()]
    assert s.take() == wire(received(0), r.R250_QUEUED)


def test_commands_after_last_wait_for_the_answer() -> None:
    s = ready()
    events = s.feed(b"BDAT 3 LAST\r\nabcMAIL FROM:<x@y.example>\r\n")
    assert kinds(events)[0] is DataEnd and body_of(events) == b"abc"
    assert s.take() == wire(r.R250_QUEUED, r.R250_SENDER_OK)


@pytest.mark.parametrize(
    "args", [b"", b" ", b"x", b"-1", b"1 MORE", b"1 LAST x", b"1  LAST", b"1" * 21, b"\xff"]
)
def test_bad_arguments_desynchronise_and_read_on_as_commands(args: bytes) -> None:
    s = ready()
    events = s.feed(b"BDAT " + args + b"\r\nNOOP\r\n")
    assert events == [BadCommand(b"BDAT " + args, r.R501_SYNTAX)]
    assert s.take() == wire(r.R501_SYNTAX, r.R250_OK)


def test_bdat_without_argument_at_all() -> None:
    s = ready()
    s.feed(b"BDAT\r\n")
    assert s.take() == wire(r.R501_SYNTAX)


@pytest.mark.parametrize(
    ("setup", "reply"),
    [
        (b"", r.R503_MAIL_FIRST),
        (b"EHLO c\r\n", r.R503_MAIL_FIRST),
        (b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n", r.R554_NO_VALID_RECIPIENTS),
        (b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n", r.R503_EHLO_FIRST),
    ],
)
def test_refused_bdat_still_consumes_its_octets(setup: bytes, reply: Reply) -> None:
    s = Shell()
    if setup:
        s.feed(setup)
    s.take()
    events = s.feed(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert events == [BadCommand(b"BDAT 6 LAST", reply)]
    assert s.take() == wire(reply, r.R250_OK)


def test_bdat_switched_off_is_not_implemented() -> None:
    s = ready(chunking=False)
    events = s.feed(b"BDAT 6 LAST\r\nNOOP\r\n")
    assert events == [BadCommand(b"BDAT 6 LAST", r.R502_NOT_IMPLEMENTED)]
    assert s.take() == wire(r.R502_NOT_IMPLEMENTED, r.R250_OK)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"DATA", r.R503_DATA_AFTER_BDAT),
        (b"RCPT TO:<x@y.example>", r.R503_BAD_SEQUENCE),
        (b"MAIL FROM:<x@y.example>", r.R503_NESTED_MAIL),
        (b"AUTH PLAIN", r.R503_AUTH_IN_TRANSACTION),
    ],
)
def test_only_bdat_continues_a_chunked_body(line: bytes, reply: Reply) -> None:
    s = ready(auth_requires_tls=False)
    s.feed(b"BDAT 1\r\nx")
    s.take()
    s.feed(line + b"\r\n")
    assert s.take() == wire(reply)
    events = s.feed(b"BDAT 1 LAST\r\ny")
    assert kinds(events) == [DataEnd]


def test_rset_and_eof_during_bdat() -> None:
    s = ready()
    assert s.feed(b"BDAT 1\r\nxRSET\r\n") == [DataChunk(b"x"), TransactionReset()]
    s.open_transaction()
    events = s.feed(b"BDAT 10\r\nabc", b"")
    assert events == [DataChunk(b"abc"), TransactionReset(), Closing("peer closed")]


@pytest.mark.parametrize("split", [False, True])
def test_size_limit(split: bool) -> None:
    s = ready(max_message_size=10)
    data = b"BDAT 6\r\n123456BDAT 5 LAST\r\n12345BDAT 2 LAST\r\nabNOOP\r\n"
    pieces = [data[i : i + 1] for i in range(len(data))] if split else [data]
    events = s.feed(*pieces)
    assert kinds(events) == [MessageRejected, BadCommand]
    assert body_of(events) == b"123456"
    assert s.take() == wire(received(6), r.R552_MESSAGE_TOO_BIG, r.R503_MAIL_FIRST, r.R250_OK)
    assert s.conn.state is READY


def test_size_limit_within_bounds_and_unlimited() -> None:
    s = ready(max_message_size=10)
    assert kinds(s.feed(b"BDAT 10 LAST\r\n0123456789")) == [DataEnd]
    s = ready(max_message_size=0)
    assert kinds(s.feed(b"BDAT 12 LAST\r\n0123456789ab")) == [DataEnd]


def test_large_chunk_keeps_memory_bounded() -> None:
    s = ready(max_message_size=0)
    size = 200 * 65536
    s.feed(b"BDAT %d LAST\r\n" % size)
    total = 0
    for _ in range(200):
        total += len(body_of(s.feed(b"q" * 65536)))
        assert s.conn.buffered == 0
    assert total == size
    assert s.take() == wire(r.R250_QUEUED)
