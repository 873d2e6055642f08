"""DATA: end of data, dot-unstuffing, the body checks and their replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol import (
    DATA,
    READY,
    BadCommand,
    Closing,
    DataChunk,
    DataEnd,
    MailFrom,
    MessageRejected,
    TransactionReset,
)
from goniec.protocol.data import DotReader

from .harness import Shell, body_of, kinds, wire


def ready(**kwargs: object) -> Shell:
    s = Shell(**kwargs)  # type: ignore[arg-type]
    s.ehlo()
    s.open_transaction()
    return s


def send(s: Shell, wire_body: bytes, *, pieces: int | None = None) -> list[object]:
    """DATA, then the body in one piece, in `pieces` equal parts, or byte by byte (0)."""
    events = list(s.feed(b"DATA\r\n"))
    assert s.take() == wire(r.R354_START_DATA)
    if pieces is None:
        events += s.feed(wire_body)
    elif pieces == 0:
        events += s.feed(*(wire_body[i : i + 1] for i in range(len(wire_body))))
    else:
        step = max(1, len(wire_body) // pieces)
        events += s.feed(*(wire_body[i : i + step] for i in range(0, len(wire_body), step)))
    return events


# --- sequence -----------------------------------------------------------------------
def test_data_needs_mail_and_an_accepted_rcpt() -> None:
    s = Shell()
    s.feed(b"DATA\r\n")
    assert s.take() == wire(r.R503_MAIL_FIRST)
    s.ehlo()
    s.feed(b"DATA\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n")
    assert s.take() == wire(r.R503_MAIL_FIRST, r.R250_SENDER_OK, r.R554_NO_VALID_RECIPIENTS)
    assert [e.reply for e in s.events if isinstance(e, BadCommand)] == [
        r.R503_MAIL_FIRST,
        r.R503_MAIL_FIRST,
        r.R554_NO_VALID_RECIPIENTS,
    ]


def test_data_takes_no_argument() -> None:
    s = ready()
    s.feed(b"DATA now\r\n")
    assert s.take() == wire(r.R501_NO_ARGUMENTS)


# --- the normal path ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wire_body", "body"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"Subject: hi\r\n\r\nhello\r\n.\r\n", b"Subject: hi\r\n\r\nhello\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"..leading\r\n.\r\n", b".leading\r\n"),
        (b"a\r\n..\r\n...\r\n.x\r\n.\r\n", b"a\r\n.\r\n..\r\nx\r\n"),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"x.\r\n.\r\n", b"x.\r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
        (b"MAIL FROM:<x@y.example>\r\n.\r\n", b"MAIL FROM:<x@y.example>\r\n"),
        (b"8bit \xff\x00\xfe\r\n.\r\n", b"8bit \xff\x00\xfe\r\n"),
    ],
)
@pytest.mark.parametrize("pieces", [None, 0, 2, 3])
def test_body_round_trip(wire_body: bytes, body: bytes, pieces: int | None) -> None:
    s = ready()
    events = send(s, wire_body, pieces=pieces)
    assert body_of(events) == body
    assert kinds(events) == [DataEnd]
    assert all(e.data for e in events if isinstance(e, DataChunk))  # never empty
    assert s.take() == wire(r.R250_QUEUED)
    assert s.conn.state is READY and not s.conn.in_data


def test_every_split_of_the_end_marker() -> None:
    wire_body = b"line one\r\n..two\r\nthree\r\n.\r\nNOOP\r\n"
    for cut in range(len(wire_body) + 1):
        s = ready()
        pieces = [p for p in (wire_body[:cut], wire_body[cut:]) if p]
        events = s.feed(b"DATA\r\n", *pieces)
        assert body_of(events) == b"line one\r\n.two\r\nthree\r\n"
        assert kinds(events) == [DataEnd]
        assert s.take() == wire(r.R354_START_DATA, r.R250_QUEUED, r.R250_OK)


def test_body_start_is_a_line_start_across_splits() -> None:
    for wire_body, body in ((b".", None), (b".\r", None)):
        s = ready()
        events = send(s, wire_body)
        assert events == [] and body is None
        assert s.conn.in_data and s.conn.state is DATA
        events = s.feed(b"\n") if wire_body == b".\r" else s.feed(b".x\r\n.\r\n")
        assert kinds(events) == [DataEnd]
        assert body_of(events) == (b"" if wire_body == b".\r" else b".x\r\n")


def test_pipelined_commands_after_the_final_dot_wait_for_the_answer() -> None:
    s = ready()
    events = s.feed(b"DATA\r\nhello\r\n.\r\nMAIL FROM:<c@d.example>\r\nQUIT\r\n")
    assert kinds(events) == [DataEnd, MailFrom, TransactionReset, Closing]
    assert body_of(events) == b"hello\r\n"


@pytest.mark.parametrize("answer", [r.R554_ACCESS_DENIED, r.R451_LOCAL_ERROR])
def test_any_answer_to_data_end_ends_the_transaction(answer: Reply) -> None:
    s = ready(answers={DataEnd: answer})
    send(s, b"x\r\n.\r\n")
    assert s.take() == wire(answer)
    assert s.conn.state is READY
    s.feed(b"RCPT TO:<a@b.example>\r\n")
    assert s.take() == wire(r.R503_MAIL_FIRST)


def test_421_to_data_end_closes_without_reset() -> None:
    bye = Reply(421, "4.3.0", "mx.test trouble")
    s = ready(answers={DataEnd: bye})
    events = send(s, b"x\r\n.\r\n")
    assert kinds(events) == [DataEnd, Closing]


def test_eof_in_the_body_resets_the_transaction() -> None:
    s = ready()
    events = send(s, b"partial\r\n")
    assert body_of(events) == b"partial"  # the CRLF may start the end marker
    assert s.feed(b"") == [TransactionReset(), Closing("peer closed")]


def test_body_never_accumulates() -> None:
    s = ready(max_message_size=0)
    s.feed(b"DATA\r\n")
    block = (b"x" * 70 + b"\r\n") * 900  # ~64 KB
    total = 0
    for _ in range(160):  # ~10 MB
        total += len(body_of(s.feed(block)))
        assert s.conn.buffered <= 4
    events = s.feed(b".\r\n")
    assert kinds(events) == [DataEnd]
    assert total + len(body_of(events)) == 160 * len(block)


# --- rejections -------------------------------------------------------------------------
SMUGGLING = [
    b"a\nb\r\n",
    b"a\rb\r\n",
    b"a\r\r\n",
    b"a\n",
    b"\n",
    b"\r",
    b"x\n.\n",
    b"x\r.\r",
    b"x\n.\r\n",
    b"x\r\n.\n",
    b"x\r.\r\n",
    b"x\n.\rMAIL FROM:<evil@x.example>\r\n",
    b"x\r\n.\rMAIL",
    b".\n",
    b".\r",
    b"\n.\r\n",
]


@pytest.mark.parametrize("smuggled", SMUGGLING)
@pytest.mark.parametrize("pieces", [None, 0])
def test_bare_cr_or_lf_never_ends_the_body_and_rejects_it(
    smuggled: bytes, pieces: int | None
) -> None:
    s = ready()
    tail = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\nDATA\r\nevil\r\n"
    events = send(s, b"ok\r\n" + smuggled + tail + b".\r\n", pieces=pieces)
    assert kinds(events) == [MessageRejected]
    assert events[-1] == MessageRejected(r.R554_BARE_LINE_ENDING)
    assert s.take() == wire(r.R554_BARE_LINE_ENDING)
    assert s.conn.state is READY
    # The session stays usable.
    s.open_transaction()
    assert kinds(send(s, b"clean\r\n.\r\n")) == [DataEnd]


def test_bare_lf_at_the_very_start() -> None:
    s = ready()
    events = send(s, b"\n.\r\n.\r\n")
    assert kinds(events) == [MessageRejected]


def test_nothing_is_emitted_after_a_rejection() -> None:
    s = ready()
    events = send(s, b"bad\n")
    events += s.feed(b"more text\r\n" * 1000, b".\r\n")
    assert body_of(events) == b""
    assert kinds(events) == [MessageRejected]


def test_line_length_limit() -> None:
    ok = b"x" * 998 + b"\r\n"
    too_long = b"x" * 999 + b"\r\n"
    for pieces in (None, 0, 7):
        s = ready()
        events = send(s, ok + b".\r\n", pieces=pieces)
        assert kinds(events) == [DataEnd] and body_of(events) == ok
        s.open_transaction()
        events = send(s, ok + too_long + ok + b".\r\n", pieces=pieces)
        assert kinds(events) == [MessageRejected]
        assert events[-1] == MessageRejected(r.R554_MESSAGE_LINE_TOO_LONG)


@pytest.mark.parametrize(
    ("lines", "ok"),
    [
        ([9] * 30, True),
        ([9] * 12 + [10] + [9] * 12, False),
        ([10] + [1] * 30, False),
        ([1] * 30 + [10], False),
        ([3, 9, 0, 9, 2, 9, 9, 9, 9, 9, 0, 0, 9], True),
        ([0] * 40 + [9] * 3 + [15], False),
    ],
)
def test_line_length_in_large_blocks(lines: list[int], ok: bool) -> None:
    # limit 11 octets with CRLF: at most 9 octets of text per line
    body = b"".join(b"y" * n + b"\r\n" for n in lines)
    for pieces in (None, 0, 3):
        s = ready(max_line_length=11)
        events = send(s, body + b".\r\n", pieces=pieces)
        if ok:
            assert kinds(events) == [DataEnd] and body_of(events) == body
        else:
            assert events[-1] == MessageRejected(r.R554_MESSAGE_LINE_TOO_LONG)


def test_unterminated_long_line_is_bounded_and_rejected() -> None:
    s = ready()
    s.feed(b"DATA\r\n")
    for _ in range(50):
        assert s.feed(b"z" * 10_000) in ([], [DataChunk(b"z" * 10_000)])
        assert s.conn.buffered <= 4
    assert s.feed(b"\r\n.\r\n") == [MessageRejected(r.R554_MESSAGE_LINE_TOO_LONG)]


def test_no_line_limit() -> None:
    s = ready(max_line_length=0)
    body = b"w" * 50_000 + b"\r\n"
    assert body_of(send(s, body + b".\r\n", pieces=5)) == body


@pytest.mark.parametrize("pieces", [None, 0, 4])
def test_message_size_limit_counts_unstuffed_octets(pieces: int | None) -> None:
    body = b"." * 8 + b"\r\n"  # 10 octets, 11 on the wire
    s = ready(max_message_size=10)
    events = send(s, b"." + body + b".\r\n", pieces=pieces)
    assert kinds(events) == [DataEnd] and body_of(events) == body
    s.open_transaction()
    events = send(s, b"." + body + b"x\r\n.\r\n", pieces=pieces)
    assert events[-1] == MessageRejected(r.R552_MESSAGE_TOO_BIG)
    assert kinds(events) == [MessageRejected]
    assert s.take() == wire(r.R552_MESSAGE_TOO_BIG)


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (b"a" * 30 + b"\r\n" + b"b\n", r.R554_BARE_LINE_ENDING),
        (b"b\n" + b"a" * 30 + b"\r\n", r.R554_BARE_LINE_ENDING),
        (b"a" * 30 + b"\r\n" + b"b" * 20 + b"\r\n", r.R554_MESSAGE_LINE_TOO_LONG),
        (b"b" * 20 + b"\r\n" + b"a" * 30 + b"\r\n", r.R554_MESSAGE_LINE_TOO_LONG),
        (b"a" * 30 + b"\r\n" + b"\r", r.R554_BARE_LINE_ENDING),
    ],
)
@pytest.mark.parametrize("pieces", [None, 0, 3])
def test_verdict_does_not_depend_on_the_split(
    body: bytes, reply: Reply, pieces: int | None
) -> None:
    # 20 octets allowed, lines of at most 11 octets with CRLF: several problems at once.
    s = ready(max_message_size=20, max_line_length=11)
    events = send(s, body + b"\r\n.\r\n", pieces=pieces)
    assert kinds(events) == [MessageRejected] and events[-1] == MessageRejected(reply)


# --- the scanner against a plain model -----------------------------------------------
def _model(wire_bytes: bytes) -> tuple[bool, int, bool, bytes]:
    """(finished, octets consumed, bare CR/LF, unstuffed body), the slow obvious way."""
    data = b"\r\n" + wire_bytes  # the body starts at a line start
    end = data.find(b"\r\n.\r\n")
    if end < 0:
        return False, 0, False, b""
    body = data[2 : end + 2]
    unpaired = body.replace(b"\r\n", b"")
    bare = b"\r" in unpaired or b"\n" in unpaired
    return True, end + 3, bare, (b"\r\n" + body).replace(b"\r\n.", b"\r\n")[2:]


@given(st.lists(st.sampled_from([b"x", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n.\r\n"]),
                max_size=40))
def test_scanner_agrees_with_a_plain_model(parts: list[bytes]) -> None:
    wire_bytes = b"".join(parts)
    reader, pos, chunks, done = DotReader(0, 0), 0, [], False
    while not done:
        new_pos, chunk, done = reader.feed(wire_bytes, pos)
        if chunk:
            chunks.append(chunk)
        if new_pos == pos and not done:
            break  # needs more input
        pos = new_pos
    finished, consumed, bare, body = _model(wire_bytes)
    assert done == finished
    if finished:
        assert pos == consumed
        assert reader.bare == bare
        if not bare:
            assert b"".join(chunks) == body
