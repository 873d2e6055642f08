"""A minimal asyncio Protocol that turns a transport into awaitable reads.

Owns buffering of received bytes with flow control, write back-pressure, the
read timeout, and the STARTTLS upgrade. Unlike asyncio streams it lets the
session throw away every plaintext byte that arrived before the TLS handshake
(RFC 3207 5, the STARTTLS command-injection class), because the buffer is ours.

The read timeout is a deadline checked by one lazy timer per connection: a
read that must wait only moves the deadline, and the timer, when it fires
early, sleeps again until the deadline. (A timer per read, as
`asyncio.timeout` makes, cost several microseconds for each of the half dozen
reads of every message.)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

# Stop reading from the socket while this much is waiting for the session:
# bounds memory per connection whatever the peer sends.
HIGH_WATER = 256 * 1024


class Interrupted(Exception):
    """read() was woken by `interrupt()`: the server is stopping."""


class ClientStream(asyncio.Protocol):
    def __init__(self, on_connect: Callable[[ClientStream], None]) -> None:
        self._on_connect = on_connect
        self.transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._interrupted = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None  # loop time by which the waiting read must get data
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when `_timer` fires

    # -- asyncio.Protocol callbacks --------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = transport  # type: ignore[assignment]
        self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._writable.set()
        self.closed.set()
        self._stop_timer()
        self._wake()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- session side -----------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self, timeout: float | None = None) -> bytes:
        """Everything received so far, waiting for some; b"" at end of stream.

        Raises `Interrupted` once `interrupt()` was called and nothing is buffered,
        `TimeoutError` when nothing arrived within `timeout` seconds.
        """
        if not self._chunks:
            if timeout is None:
                self._deadline = None
            else:
                self._set_deadline(self._loop.time() + timeout)
        while not self._chunks:
            if self._interrupted:
                raise Interrupted
            if self._eof:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return  # fires first and sleeps again until the deadline
            timer.cancel()  # a shorter timeout than the one armed
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # not waiting now (or without a timeout): a read that waits arms it again
        # Timers fire to the millisecond: within one of the deadline is at it.
        if self._loop.time() >= deadline - 0.001:
            waiter.set_exception(TimeoutError())
        else:
            self._set_deadline(deadline)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def interrupt(self) -> None:
        """Wake a pending read() with `Interrupted` (used at shutdown)."""
        self._interrupted = True
        self._wake()

    def discard_buffer(self) -> None:
        self._chunks = []
        self._buffered = 0

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if not self._writable.is_set():
            await self._writable.wait()

    def extra(self, name: str) -> Any:
        return self.transport.get_extra_info(name) if self.transport else None

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Upgrade in place; plaintext that arrived before the handshake is dropped."""
        assert self.transport is not None
        self.discard_buffer()
        loop = asyncio.get_running_loop()
        new_transport = await loop.start_tls(
            self.transport,
            self,
            context,
            server_side=True,
            ssl_handshake_timeout=timeout,
        )
        if new_transport is None:
            raise ConnectionError("TLS handshake did not complete")
        self.transport = new_transport  # type: ignore[assignment]
        self.discard_buffer()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
