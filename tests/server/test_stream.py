"""ClientStream's read timeout: one lazy timer per connection, moved by each read."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from goniec.server.stream import ClientStream, Interrupted

Scenario = Callable[[ClientStream, socket.socket], Awaitable[None]]


async def _with_stream(scenario: Scenario) -> None:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[ClientStream] = loop.create_future()
    server = await loop.create_server(lambda: ClientStream(made.set_result), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    try:
        stream = await asyncio.wait_for(made, 5)
        await scenario(stream, client)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


def run(scenario: Scenario) -> None:
    asyncio.run(_with_stream(scenario))


def test_read_times_out_when_nothing_arrives() -> None:
    async def scenario(stream: ClientStream, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await stream.read(0.2)
        assert 0.18 <= loop.time() - start < 1.0

    run(scenario)


def test_data_in_time_is_returned_and_the_next_read_gets_its_own_deadline() -> None:
    async def scenario(stream: ClientStream, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, client.send, b"one")
        assert await stream.read(0.3) == b"one"
        # The timer armed for the first read fires at 0.3 s and finds the
        # second read's deadline (0.1 + 0.3 s) ahead: it waits again.
        loop.call_later(0.25, client.send, b"two")
        assert await stream.read(0.3) == b"two"
        start = loop.time()
        with pytest.raises(TimeoutError):
            await stream.read(0.3)
        assert 0.28 <= loop.time() - start < 1.0

    run(scenario)


def test_a_shorter_timeout_than_the_armed_one_is_kept() -> None:
    async def scenario(stream: ClientStream, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, client.send, b"x")
        assert await stream.read(30) == b"x"  # leaves a timer 30 s out
        start = loop.time()
        with pytest.raises(TimeoutError):
            await stream.read(0.2)
        assert loop.time() - start < 1.0

    run(scenario)


def test_a_read_without_timeout_ignores_an_old_timer() -> None:
    async def scenario(stream: ClientStream, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, client.send, b"x")
        assert await stream.read(0.1) == b"x"  # its timer fires at 0.1 s
        loop.call_later(0.3, client.send, b"y")
        assert await stream.read() == b"y"  # waits past that timer

    run(scenario)


def test_buffered_data_needs_no_timer_and_end_of_stream_reads_empty() -> None:
    async def scenario(stream: ClientStream, client: socket.socket) -> None:
        client.send(b"ready")
        await asyncio.sleep(0.1)
        assert await stream.read(0.001) == b"ready"
        client.shutdown(socket.SHUT_WR)
        assert await stream.read(5) == b""

    run(scenario)


def test_interrupt_wakes_a_waiting_read() -> None:
    async def scenario(stream: ClientStream, client: socket.socket) -> None:
        asyncio.get_running_loop().call_later(0.05, stream.interrupt)
        with pytest.raises(Interrupted):
            await stream.read(5)

    run(scenario)
