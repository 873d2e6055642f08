"""Hypothesis properties of the server core (DESIGN.md 3, the h11 fuzz invariants).

1. Any bytes, split anyhow, give events or PeerProtocolError, nothing else.
2. One piece, byte by byte, or random splits: the same events and output bytes.
3. Dot-stuffed CRLF bodies come back unchanged, however they are split.
4. Bare CR/LF tricks never end the body early and never smuggle a command.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol import (
    BadCommand,
    Closing,
    Connected,
    DataEnd,
    Decision,
    Event,
    MailFrom,
    MessageRejected,
    ServerOptions,
)

from .harness import ACCEPT_ALL_REPLY, HOST, Shell, body_of, kinds, normalize, run_split

MAILS = [
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME\r\n",
    "MAIL FROM:<ü@b.example> SMTPUTF8\r\n".encode(),
]
RCPTS = [
    b"RCPT TO:<c@d.example>\r\n",
    b"RCPT TO:<c@d.example> NOTIFY=NEVER ORCPT=rfc822;c+40d\r\n",
    b"RCPT TO:<Postmaster>\r\n",
]
AUTHS = [b"AUTH PLAIN\r\n", b"AUTH PLAIN AGEAYg==\r\n", b"AUTH LOGIN\r\n"]
SASL = [b"YQ==\r\n", b"*\r\n", b"\r\n"]
TOKENS = [
    b"EHLO c\r\n",
    b"HELO c\r\n",
    *MAILS,
    *RCPTS,
    *AUTHS,
    *SASL,
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT x\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"EXPN x\r\n",
    b"HELP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n.\r\n",
    b"\n",
    b"\r",
    b".",
    b"text",
    b"\n.\n",
    b"\r.\r",
    b"\xff\x00",
    b"x" * 600,
]

OPTIONS = [
    ServerOptions(HOST, tls_available=True, auth_requires_tls=False),
    ServerOptions(HOST, max_message_size=40, max_line_length=12, max_bad_commands=5),
    ServerOptions(
        HOST,
        max_message_size=0,
        max_line_length=0,
        max_bad_commands=0,
        pipelining=False,
        eightbitmime=False,
        smtputf8=False,
        chunking=False,
        dsn=False,
        enhanced_status_codes=False,
        auth_mechanisms=(),
    ),
]

# Mostly acceptance, sometimes a refusal or a 421.
ANSWERS = st.lists(
    st.sampled_from(
        [None] * 6
        + [Reply(550, "5.7.1", "no"), Reply(451, "4.3.0", "later"), Reply(421, "4.3.2", "bye")]
    ),
    min_size=1,
    max_size=8,
)

token_soup = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12)), max_size=25).map(
    b"".join
)

BODY_TOKENS = [b"text", b"\r\n", b".", b"..", b"\r\n.", b"\n", b"\r", b"x" * 30, b"\xff"]


@st.composite
def sessions(draw: st.DrawFn) -> bytes:
    """Mostly plausible sessions (EHLO, transactions with DATA or BDAT, AUTH, noise)."""
    parts = [draw(st.sampled_from([b"EHLO c\r\n"] * 4 + [b"HELO c\r\n", b""]))]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["data", "data", "bdat", "auth", "noise"]))
        if kind in ("data", "bdat"):
            parts.append(draw(st.sampled_from(MAILS)))
            parts += draw(st.lists(st.sampled_from(RCPTS), min_size=1, max_size=2))
        if kind == "data":
            parts.append(b"DATA\r\n")
            body = draw(st.lists(st.one_of(st.sampled_from(BODY_TOKENS), st.binary(max_size=8))))
            parts += [*body, draw(st.sampled_from([b"\r\n.\r\n", b".\r\n", b""]))]
        elif kind == "bdat":
            for last in (False, True):
                chunk = draw(st.binary(max_size=20))
                size = len(chunk) + draw(st.sampled_from([0, 0, 0, 1, -1]))
                parts.append(b"BDAT %d%s\r\n" % (size, b" LAST" if last else b"") + chunk)
        elif kind == "auth":
            parts.append(draw(st.sampled_from(AUTHS)))
            parts += draw(st.lists(st.sampled_from(SASL), max_size=2))
        else:
            parts.append(draw(token_soup))
    parts.append(draw(st.sampled_from([b"QUIT\r\n", b"", b"NOOP\r\n"])))
    return b"".join(parts)


streams = st.one_of(sessions(), sessions(), token_soup)

REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")


def answerer(answers: list[Reply | None]):  # type: ignore[no-untyped-def]
    def answer(i: int, event: Decision) -> Reply:
        choice = answers[i % len(answers)]
        if choice is None or isinstance(event, Connected):
            return ACCEPT_ALL_REPLY[type(event)]
        return choice

    return answer


def check_output(out: bytes) -> None:
    """Every reply line is well formed: 3 digits, separator, text, CRLF."""
    pos = 0
    for m in REPLY_LINE.finditer(out):
        assert m.start() == pos, out[pos : pos + 80]
        pos = m.end()
    assert pos == len(out)


def check_events(events: list[Event]) -> None:
    closing = [i for i, e in enumerate(events) if isinstance(e, Closing)]
    assert len(closing) == 1 and closing[0] == len(events) - 1


FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    data=st.one_of(streams, streams, st.binary(max_size=300)),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
    opts=st.sampled_from(OPTIONS),
    answers=ANSWERS,
)
def test_any_input_gives_events_or_peer_error(
    data: bytes, cuts: list[int], opts: ServerOptions, answers: list[Reply | None]
) -> None:
    events, out = run_split(opts, data, cuts, answerer(answers))
    check_events(events)
    check_output(out)


@FAST
@given(
    data=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
    opts=st.sampled_from(OPTIONS),
    answers=ANSWERS,
)
def test_split_does_not_change_events_or_output(
    data: bytes, cuts: list[int], opts: ServerOptions, answers: list[Reply | None]
) -> None:
    answer = answerer(answers)
    whole_events, whole_out = run_split(opts, data, [], answer)
    expected = normalize(whole_events)
    for split in (cuts, range(len(data))):
        events, out = run_split(opts, data, split, answer)
        assert normalize(events) == expected
        assert out == whole_out


# --- DATA round trip -----------------------------------------------------------------------
body_lines = st.lists(
    st.one_of(
        st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.sampled_from([b"", b".", b"..", b".x", b"From x", b" .", b"\xff"]),
    ),
    max_size=30,
)


def stuff(lines: list[bytes]) -> bytes:
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


@settings(max_examples=200, deadline=None)
@given(lines=body_lines, cuts=st.lists(st.integers(min_value=0, max_value=1500), max_size=15))
def test_data_round_trip(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    s = Shell()
    s.ehlo()
    s.open_transaction()
    s.feed(b"DATA\r\n")
    events = s.feed_split(stuff(lines) + b".\r\nNOOP\r\n", cuts)
    assert kinds(events) == [DataEnd]
    assert body_of(events) == body
    assert s.take().endswith(r.R250_QUEUED.to_bytes() + r.R250_OK.to_bytes())


# --- smuggling --------------------------------------------------------------------------------
SMUGGLE = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\n.\r",
    b"\n",
    b"\r",
    b"\r\r\n",
    b"\n\r\n.\n",
]
INJECTED = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\nDATA\r\nevil\r\n"


@settings(max_examples=200, deadline=None)
@given(
    before=body_lines,
    tricks=st.lists(
        st.tuples(st.sampled_from(SMUGGLE), st.sampled_from([INJECTED, b".", b"..", b"x"])),
        min_size=1,
        max_size=4,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=1500), max_size=15),
)
def test_smuggling_is_rejected_after_the_real_end(
    before: list[bytes], tricks: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    body = stuff(before) + b"".join(trick + text for trick, text in tricks)
    stream = b"\r\n" + body + b"\r\n.\r\n"
    # The real end must be the marker we append, not one made by the tricks.
    if stream.find(b"\r\n.\r\n") != len(stream) - 5:
        return
    s = Shell()
    s.ehlo()
    s.open_transaction()
    s.feed(b"DATA\r\n")
    events = s.feed_split(body + b"\r\n.\r\nNOOP\r\n", cuts)
    assert kinds(events) == [MessageRejected]
    assert events[-1] == MessageRejected(r.R554_BARE_LINE_ENDING)
    assert not any(isinstance(e, (MailFrom, DataEnd, BadCommand)) for e in events)
    assert s.take().endswith(r.R554_BARE_LINE_ENDING.to_bytes() + r.R250_OK.to_bytes())
    assert len([e for e in s.events if isinstance(e, MailFrom)]) == 1
