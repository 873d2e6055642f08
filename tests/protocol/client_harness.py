"""Drive `ClientConnection` in memory, against the server core or scripted bytes.

`Pair` joins a client core to a server core (through `harness.Shell`): bytes
go back and forth until both are quiet, so the two sides of the protocol test
each other. `Scripted` feeds a client core canned server bytes and records
what it writes, for exact byte tests.
"""

from __future__ import annotations

from typing import Any

from goniec.protocol import StartTls
from goniec.protocol.client import NEED_DATA, ClientConnection, ClientEvent, ClientOptions

from .harness import Shell, options

CLIENT = "client.example"


def client(**kwargs: Any) -> ClientConnection:
    return ClientConnection(ClientOptions(CLIENT, **kwargs))


def events(conn: ClientConnection) -> list[ClientEvent]:
    out: list[ClientEvent] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return out
        assert isinstance(ev, ClientEvent)
        out.append(ev)


class Pair:
    """A client core talking to a server core; `wire` records client->server bytes."""

    def __init__(self, client_opts: dict[str, Any] | None = None, *,
                 answers: Any = None, **server_kwargs: Any) -> None:
        self.server = Shell(options(**server_kwargs), answers=answers, greet=False)
        self.client = client(**(client_opts or {}))
        self.wire = bytearray()
        self.events: list[ClientEvent] = []

    def pump(self) -> list[ClientEvent]:
        """Move bytes both ways until neither side has anything to say."""
        new: list[ClientEvent] = []
        while True:
            for ev in self.server.pump():
                if isinstance(ev, StartTls):
                    self.server.conn.tls_started()
            s2c = self.server.take()
            if s2c:
                self.client.receive_data(s2c)
            new += events(self.client)
            c2s = self.client.data_to_send()
            if not c2s and not s2c:
                break
            if c2s:
                self.wire += c2s
                if not self.server.conn.closed:
                    self.server.conn.receive_data(c2s)
        self.events += new
        return new

    def ready(self) -> None:
        """Greeting and EHLO done."""
        self.pump()
        self.client.hello()
        self.pump()


class Scripted:
    """A client core fed canned server bytes; `sent()` returns what it wrote."""

    def __init__(self, **kwargs: Any) -> None:
        self.client = client(**kwargs)

    def reply(self, data: bytes) -> list[ClientEvent]:
        self.client.receive_data(data)
        return events(self.client)

    def sent(self) -> bytes:
        return self.client.data_to_send()

    def ehlo(self, *keywords: str) -> None:
        self.reply(b"220 mx.test ESMTP\r\n")
        self.client.hello()
        assert self.sent() == f"EHLO {CLIENT}\r\n".encode()
        lines = ["mx.test", *keywords]
        text = "".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n" for i, line in enumerate(lines)
        )
        self.reply(text.encode())
