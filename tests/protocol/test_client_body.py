"""The body on the wire: CRLF normalisation, dot-stuffing, BDAT chunks.

The main property: whatever the body and however it is cut into pieces, the
server core receives exactly the CRLF-normalised body, over DATA and BDAT.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from goniec import replies as r
from goniec.model import Envelope, Recipient
from goniec.protocol import DataEnd, MessageRejected
from goniec.protocol.client import SendBody, TransactionDone
from goniec.protocol.client_body import BdatFramer, DotStuffer, LineNormaliser

from .client_harness import Pair, Scripted
from .harness import body_of

ENV = Envelope("a@example.org", (Recipient("b@example.net"),))


def normalised(body: bytes) -> bytes:
    """What the next hop must store: CRLF everywhere, ending with CRLF (if not empty)."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(body)})
    bounds = [0, *points, len(body)]
    return [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def deliver(pair: Pair, parts: list[bytes]) -> TransactionDone:
    pair.client.start_transaction(ENV)
    new = pair.pump()
    assert any(isinstance(e, SendBody) for e in new), new
    for part in parts:
        pair.client.send_body(part)
        pair.pump()
    pair.client.end_body()
    [done] = [e for e in pair.pump() if isinstance(e, TransactionDone)]
    return done


bodies = st.lists(
    st.one_of(
        st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"\r\n.\r\n", b"\n.\n", b"\r.\r",
                         b".\r\n", b"x", b"\xff", b"\x00"]),
        st.binary(max_size=40),
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(body=bodies, cuts=st.lists(st.integers(0, 600), max_size=8), chunking=st.booleans())
def test_any_body_arrives_crlf_normalised(body: bytes, cuts: list[int], chunking: bool) -> None:
    pair = Pair(chunking=chunking, max_line_length=0)
    pair.ready()
    done = deliver(pair, pieces(body, cuts))
    assert done.replies == (r.R250_QUEUED,), pair.server.events
    assert body_of(pair.server.events) == normalised(body)
    assert not any(isinstance(e, MessageRejected) for e in pair.server.events)
    assert sum(isinstance(e, DataEnd) for e in pair.server.events) == 1
    after_rcpt = pair.wire.index(b"RCPT TO:<b@example.net>\r\n") + 25
    assert bytes(pair.wire[after_rcpt:after_rcpt + 4]) == (b"BDAT" if chunking else b"DATA")


def test_dot_stuffing_bytes() -> None:
    s = DotStuffer()
    out = s.feed(b".a\n..b\r\n.") + s.feed(b"\r\nc.\r") + s.feed(b"\n.") + s.finish()
    assert out == b"..a\r\n...b\r\n..\r\nc.\r\n..\r\n.\r\n"
    assert s.size == len(b".a\r\n..b\r\n.\r\nc.\r\n.\r\n")
    empty = DotStuffer()
    assert empty.feed(b"") == b"" and empty.finish() == b".\r\n"


def test_bare_line_endings_never_make_a_false_end_of_data() -> None:
    # The SMTP smuggling shapes: "\n.\n", "\r.\r", "\n.\r\n" become stuffed lines.
    s = DotStuffer()
    out = s.feed(b"a\n.\nMAIL FROM:<x>\r\n") + s.feed(b"b\r.\rc\n.\r\n") + s.finish()
    assert out == b"a\r\n..\r\nMAIL FROM:<x>\r\nb\r\n..\r\nc\r\n..\r\n.\r\n"
    assert out.count(b"\r\n.\r\n") == 1 and out.endswith(b"\r\n.\r\n")


def test_cr_split_across_pieces_is_one_line_end() -> None:
    n = LineNormaliser()
    assert n.feed(b"a\r") == b"a"
    assert n.feed(b"\nb\r") == b"\r\nb"
    assert n.feed(b"c") == b"\r\nc"
    assert n.finish() == b"\r\n"
    assert n.size == len(b"a\r\nb\r\nc\r\n")


def test_bdat_framing_holds_the_last_piece_for_last() -> None:
    f = BdatFramer()
    assert f.feed(b"one\n") == b""
    assert f.feed(b"") == b""
    assert f.feed(b"two") == b"BDAT 5\r\none\r\n"
    assert f.finish() == b"BDAT 5 LAST\r\ntwo\r\n"
    assert f.chunks == 2
    single = BdatFramer()
    assert single.feed(b"x\r\n") == b"" and single.finish() == b"BDAT 3 LAST\r\nx\r\n"
    assert BdatFramer().finish() == b"BDAT 0 LAST\r\n"


def test_bdat_pipelined_window_and_refused_chunk() -> None:
    s = Scripted(bdat_window=2)
    s.ehlo("PIPELINING", "CHUNKING")
    s.client.start_transaction(ENV)
    assert s.sent() == b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
    [ev] = s.reply(b"250 ok\r\n250 ok\r\n")
    assert isinstance(ev, SendBody)
    s.client.send_body(b"1")
    s.client.send_body(b"2")
    assert not s.client.window_full  # "1" is in flight, "2" held for LAST
    s.client.send_body(b"3")
    assert s.client.window_full and s.client.awaiting == "BDAT"
    assert s.sent() == b"BDAT 1\r\n1BDAT 1\r\n2"
    assert s.reply(b"250 ok\r\n") == [] and not s.client.window_full
    assert s.reply(b"552 5.3.4 too big\r\n") == []
    assert not s.client.body_wanted  # RFC 3030 2: send no more chunks
    s.client.send_body(b"4")
    s.client.end_body()
    assert s.sent() == b""
    done = s.client.next_event()
    assert isinstance(done, TransactionDone) and done.replies[0] is not None
    assert done.replies[0].code == 552
    s.client.start_transaction(ENV)
    assert s.sent().startswith(b"RSET\r\nMAIL FROM:")


def test_bdat_without_pipelining_waits_for_each_chunk() -> None:
    s = Scripted()
    s.ehlo("CHUNKING")
    s.client.start_transaction(ENV)
    s.sent()
    s.reply(b"250 ok\r\n")
    s.sent()
    [ev] = s.reply(b"250 ok\r\n")
    assert isinstance(ev, SendBody)
    s.client.send_body(b"a")
    s.client.send_body(b"b")
    assert s.client.window_full
    s.reply(b"250 ok\r\n")
    s.client.end_body()
    assert s.sent() == b"BDAT 1\r\naBDAT 3 LAST\r\nb\r\n"
    assert s.client.awaiting == "DOT"
    [done] = s.reply(b"250 2.0.0 queued\r\n")
    assert isinstance(done, TransactionDone) and done.final is not None
    assert done.final.text == "queued"


def test_bdat_refused_last_chunk_before_end_body_finishes_at_end_body() -> None:
    s = Scripted()
    s.ehlo("CHUNKING", "PIPELINING")
    s.client.start_transaction(ENV)
    s.sent()
    s.reply(b"250 ok\r\n250 ok\r\n")
    s.client.send_body(b"a")
    s.client.send_body(b"b")
    s.reply(b"554 5.6.0 bad\r\n")
    s.client.end_body()
    done = s.client.next_event()
    assert isinstance(done, TransactionDone) and done.replies[0] is not None
    assert done.replies[0].code == 554


def test_large_body_in_many_pieces_stays_bounded() -> None:
    pair = Pair()
    pair.ready()
    piece = (b"line of text\n" * 5000)[:65536]
    pair.client.start_transaction(ENV)
    pair.pump()
    for _ in range(40):
        before = len(pair.wire)
        pair.client.send_body(piece)
        pair.pump()
        assert len(pair.wire) - before < 2 * len(piece)  # one piece out, one held
    pair.client.end_body()
    [done] = [e for e in pair.pump() if isinstance(e, TransactionDone)]
    assert done.replies == (r.R250_QUEUED,)
    assert body_of(pair.server.events) == normalised(piece) * 40


# --- lines over 998 octets (RFC 5321 4.5.3.1.6) are folded with CRLF SPACE ------------------
_long_bodies = st.lists(st.sampled_from([b"x" * 700, b"y" * 998, b"z" * 999, b"ab", b"\r\n",
                                         b"\n", b"\r"]), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(body=_long_bodies, cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_long_lines_are_folded_at_998_and_unfold_to_the_body(body: bytes, cuts: list[int]) -> None:
    lines = LineNormaliser()
    out = b"".join(lines.feed(p) for p in pieces(body, cuts)) + lines.finish()
    assert all(len(line) <= 998 for line in out.split(b"\r\n")), [len(x) for x in out.split(b"\r\n")]
    # The body has no line starting with a space: every CRLF SPACE is one we inserted.
    assert out.replace(b"\r\n ", b"") == normalised(body)
    assert lines.size == len(out)


def test_folding_can_be_switched_off_and_short_lines_are_untouched() -> None:
    long = b"h" * 2500 + b"\r\n"
    assert LineNormaliser(max_line=0).feed(long) == long
    folded = LineNormaliser().feed(long)
    assert folded == b"h" * 998 + b"\r\n " + b"h" * 997 + b"\r\n " + b"h" * 505 + b"\r\n"
    assert LineNormaliser().feed(b"short\r\nlines\r\n") == b"short\r\nlines\r\n"
