"""A scripted shell that drives `ServerConnection` for the protocol tests.

`Shell` feeds bytes, pulls events, answers every decision with a scripted
reply (accept by default, or one reply per decision type, or a function), and
collects the output bytes. Tests then compare bytes and event lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Connected,
    DataChunk,
    DataEnd,
    Decision,
    Event,
    Helo,
    MailFrom,
    PeerProtocolError,
    RcptTo,
    ServerConnection,
    ServerOptions,
)

HOST = "mx.test"
GREETING = Reply(220, None, f"{HOST} ESMTP Goniec")
HELLO = Reply(250, None, HOST)

Answer: TypeAlias = Reply | Callable[[Decision], Reply]
ACCEPT_ALL: dict[type[Decision], Answer] = {
    Connected: GREETING,
    Helo: HELLO,
    AuthCredentials: r.R235_AUTH_OK,
    MailFrom: r.R250_SENDER_OK,
    RcptTo: r.R250_RECIPIENT_OK,
    DataEnd: r.R250_QUEUED,
}


def wire(*replies: Reply, enhanced: bool = True) -> bytes:
    """The bytes the core writes for these replies."""
    return b"".join(reply.to_bytes(enhanced=enhanced) for reply in replies)


def host(reply: Reply) -> Reply:
    return r.with_hostname(reply, HOST)


def options(**kwargs: Any) -> ServerOptions:
    return ServerOptions(HOST, **kwargs)


class Shell:
    """Drives one connection; `answers` overrides ACCEPT_ALL per decision type."""

    def __init__(
        self,
        opts: ServerOptions | None = None,
        *,
        tls_active: bool = False,
        answers: dict[type[Decision], Answer] | None = None,
        greet: bool = True,
        **kwargs: Any,
    ) -> None:
        self.conn = ServerConnection(opts or options(**kwargs), tls_active=tls_active)
        self.answers = dict(ACCEPT_ALL)
        if answers:
            self.answers.update(answers)
        self.events: list[Event] = []
        self.decisions: list[Decision] = []
        self._out = bytearray()
        if greet:
            self.pump()
            self.take()

    def answer(self, event: Decision) -> Reply:
        answer = self.answers[type(event)]
        return answer if isinstance(answer, Reply) else answer(event)

    def pump(self) -> list[Event]:
        """Pull events until NEED_DATA, answering decisions; return the new events."""
        new: list[Event] = []
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            assert event is not PAUSED, "a decision was left unanswered"
            assert isinstance(event, Event)
            new.append(event)
            if isinstance(event, Decision):
                assert self.conn.next_event() is PAUSED
                self.decisions.append(event)
                self.conn.respond(self.answer(event))
        self._out += self.conn.data_to_send()
        self.events.extend(new)
        return new

    def feed(self, *pieces: bytes) -> list[Event]:
        """Feed each piece in turn (pumping in between); return all new events."""
        new: list[Event] = []
        for piece in pieces:
            self.conn.receive_data(piece)
            new += self.pump()
        return new

    def feed_split(self, data: bytes, cuts: Iterable[int]) -> list[Event]:
        """Feed `data` cut at the given offsets."""
        points = sorted({c for c in cuts if 0 < c < len(data)})
        bounds = [0, *points, len(data)]
        return self.feed(*(data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)))

    def take(self) -> bytes:
        """Output written since the last take()."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def ehlo(self, name: bytes = b"client.example") -> None:
        self.feed(b"EHLO " + name + b"\r\n")
        self.take()

    def open_transaction(self, *rcpts: bytes, mail: bytes = b"MAIL FROM:<a@example.org>") -> None:
        self.feed(mail + b"\r\n")
        for rcpt in rcpts or (b"<b@example.net>",):
            self.feed(b"RCPT TO:" + rcpt + b"\r\n")
        self.take()


def body_of(events: Iterable[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataChunk))


def kinds(events: Iterable[Event]) -> list[type[Event]]:
    return [type(e) for e in events if not isinstance(e, DataChunk)]


def run_split(
    opts: ServerOptions,
    data: bytes,
    cuts: Iterable[int],
    answer: Callable[[int, Decision], Reply] | None = None,
) -> tuple[list[Event], bytes]:
    """Feed `data` cut at `cuts`, then EOF; answer decision number i with answer(i, event).

    Stops feeding at PeerProtocolError (data after Closing), the only exception
    allowed from peer bytes. Returns (events, output bytes).
    """
    conn = ServerConnection(opts)
    events: list[Event] = []
    out = bytearray()
    count = 0

    def pump() -> None:
        nonlocal count
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            assert event is not PAUSED
            assert isinstance(event, Event)
            events.append(event)
            if isinstance(event, Decision):
                reply = answer(count, event) if answer else ACCEPT_ALL_REPLY[type(event)]
                count += 1
                conn.respond(reply)
        out.extend(conn.data_to_send())

    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    pump()
    for a, b in zip(bounds, bounds[1:], strict=False):
        try:
            conn.receive_data(data[a:b])
        except PeerProtocolError:
            assert conn.closed
            break
        pump()
    conn.receive_data(b"")
    pump()
    assert conn.closed
    return events, bytes(out)


ACCEPT_ALL_REPLY: dict[type[Decision], Reply] = {
    k: v for k, v in ACCEPT_ALL.items() if isinstance(v, Reply)
}


def normalize(events: list[Event]) -> list[Event]:
    """Events with consecutive DataChunks merged; chunks of a message that did not
    end in DataEnd (rejected, reset, cut off) are dropped, since how much of such a
    message is emitted before the core notices the problem depends on the split."""
    result: list[Event] = []
    chunks: list[bytes] = []
    for event in events:
        if isinstance(event, DataChunk):
            chunks.append(event.data)
            continue
        if chunks and isinstance(event, DataEnd):
            result.append(DataChunk(b"".join(chunks)))
        chunks = []
        result.append(event)
    return result
