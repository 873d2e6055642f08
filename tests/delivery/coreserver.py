"""A scriptable SMTP server in the test's own event loop, built on goniec's server core.

Each decision (Connected, Helo, AuthCredentials, MailFrom, RcptTo, DataEnd)
is answered by `answers[type]`: a Reply, or a function of the event returning
a Reply, DROP (close the socket at once) or STALL (never answer). It counts
connections (total and peak concurrent) and keeps every accepted message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from goniec import replies as r
from goniec.errors import Reply
from goniec.model import Recipient
from goniec.protocol import (
    NEED_DATA,
    AuthCredentials,
    Closing,
    Connected,
    DataChunk,
    DataEnd,
    Decision,
    Helo,
    MailFrom,
    RcptTo,
    ServerConnection,
    ServerOptions,
    StartTls,
    TransactionReset,
)

DROP = "drop"
STALL = "stall"
Action: TypeAlias = Reply | str
Answer: TypeAlias = Action | Callable[[Any], Action]


@dataclass
class Received:
    sender: str
    recipients: list[Recipient]
    body: bytes
    tls: bool
    user: str | None
    mail_params: Any = None


@dataclass
class CoreServer:
    name: str = "mx.core.test"
    answers: dict[type[Decision], Answer] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    tls_context: ssl.SSLContext | None = None  # offers STARTTLS when set
    implicit_tls: bool = False
    host: str = "127.0.0.1"
    close_idle_after: float | None = None  # server-side idle timeout (sends 421)
    connections: int = 0
    current: int = 0
    peak: int = 0
    messages: list[Received] = field(default_factory=list)
    auth_attempts: list[tuple[str, str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    DEFAULTS = {
        Connected: Reply(220, None, "mx.core.test ESMTP"),
        Helo: Reply(250, None, "mx.core.test"),
        AuthCredentials: r.R235_AUTH_OK,
        MailFrom: r.R250_SENDER_OK,
        RcptTo: r.R250_RECIPIENT_OK,
        DataEnd: r.R250_QUEUED,
    }

    async def start(self) -> CoreServer:
        ssl_ctx = self.tls_context if self.implicit_tls else None
        self._server = await asyncio.start_server(self._client, self.host, 0, ssl=ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def __aenter__(self) -> CoreServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _answer(self, event: Decision) -> Action:
        answer = self.answers.get(type(event), self.DEFAULTS[type(event)])
        return answer(event) if callable(answer) else answer

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            await self._session(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self.current -= 1
            writer.transport.abort()
            self._tasks.discard(task)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opts = {"auth_requires_tls": True, **self.options,
                "tls_available": self.tls_context is not None and not self.implicit_tls}
        conn = ServerConnection(ServerOptions(self.name, **opts), tls_active=self.implicit_tls)
        mail: MailFrom | None = None
        rcpts: list[Recipient] = []
        body: list[bytes] = []
        user: str | None = None
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                out = conn.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                if conn.closed:
                    return
                idle = self.close_idle_after if not conn.in_data else None
                try:
                    data = await asyncio.wait_for(reader.read(65536), idle)
                except TimeoutError:
                    conn.close(r.with_hostname(r.R421_TIMEOUT, self.name))
                    continue
                conn.receive_data(data)
                continue
            if isinstance(event, Closing):
                writer.write(conn.data_to_send())
                await writer.drain()
                return
            if isinstance(event, StartTls):
                writer.write(conn.data_to_send())
                await writer.drain()
                assert self.tls_context is not None
                await writer.start_tls(self.tls_context)
                conn.tls_started()
                continue
            if isinstance(event, DataChunk):
                body.append(event.data)
                continue
            if isinstance(event, TransactionReset):
                mail, rcpts, body = None, [], []
                continue
            if not isinstance(event, Decision):
                continue
            if isinstance(event, AuthCredentials):
                self.auth_attempts.append((event.mechanism, event.username, event.password))
            action = self._answer(event)
            if action == DROP:
                return
            if action == STALL:
                await asyncio.sleep(3600)
            assert isinstance(action, Reply)
            conn.respond(action)
            if not action.is_positive:
                if isinstance(event, DataEnd):
                    mail, rcpts, body = None, [], []
                continue
            if isinstance(event, AuthCredentials):
                user = event.username
            elif isinstance(event, MailFrom):
                mail, rcpts, body = event, [], []
            elif isinstance(event, RcptTo):
                rcpts.append(event.recipient)
            elif isinstance(event, DataEnd):
                assert mail is not None
                self.messages.append(Received(mail.sender, rcpts, b"".join(body),
                                              conn.tls_active, user, mail.params))
                mail, rcpts, body = None, [], []
