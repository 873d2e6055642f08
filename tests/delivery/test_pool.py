"""Connection reuse and limits: counted at the destination servers."""

from __future__ import annotations

import asyncio
from typing import Any

from goniec import replies as r
from goniec.delivery.pool import ConnectionPool
from goniec.delivery.smtp_client import deliver
from goniec.protocol import RcptTo

from .coreserver import CoreServer
from .helpers import DELIVERED, POLICY, destination, message, statuses


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_several_messages_over_one_connection() -> None:
    async def main() -> None:
        pool = ConnectionPool()
        async with CoreServer() as server:
            dest = destination(server.port)
            for i in range(5):
                [res] = await deliver(message(f"r{i}@dest.test"), dest, pool=pool,
                                      policy=POLICY)
                assert res.status is DELIVERED
            assert server.connections == 1 and len(server.messages) == 5
            assert pool.idle_count("dest.test") == 1 and pool.open_connections == 1
            await pool.close()
            assert pool.open_connections == 0
            await asyncio.sleep(0.05)
            assert server.current == 0  # QUIT was sent and the connection closed

    run(main())


def test_messages_per_connection_limit() -> None:
    async def main() -> None:
        pool = ConnectionPool(max_messages_per_connection=2)
        async with CoreServer() as server:
            for _ in range(5):
                await deliver(message(), destination(server.port), pool=pool, policy=POLICY)
            assert server.connections == 3 and len(server.messages) == 5
        await pool.close()

    run(main())


def test_refused_transaction_then_reuse_with_rset() -> None:
    async def main() -> None:
        pool = ConnectionPool()
        answers = {RcptTo: r.R550_UNKNOWN_USER}
        async with CoreServer(answers=answers) as server:
            dest = destination(server.port)
            [res] = await deliver(message(), dest, pool=pool, policy=POLICY)
            assert res.status.value == "failed"
            server.answers.clear()
            [res] = await deliver(message(), dest, pool=pool, policy=POLICY)
            assert res.status is DELIVERED and server.connections == 1
        await pool.close()

    run(main())


def test_limit_per_destination() -> None:
    async def main() -> None:
        pool = ConnectionPool(max_per_destination=2)
        async with CoreServer() as server:
            original = server._session

            async def slow_session(reader: Any, writer: Any) -> None:
                await asyncio.sleep(0.05)  # so that deliveries overlap
                await original(reader, writer)

            server._session = slow_session  # type: ignore[method-assign]
            dest = destination(server.port)
            results = await asyncio.gather(*(
                deliver(message(f"r{i}@dest.test"), dest, pool=pool, policy=POLICY)
                for i in range(8)))
            assert all(statuses(res) == [DELIVERED] for res in results)
            assert server.peak <= 2 and server.connections == 2 and len(server.messages) == 8
        await pool.close()

    run(main())


def test_total_limit_closes_idle_connections_of_other_destinations() -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections=1)
        async with CoreServer() as a, CoreServer() as b:
            await deliver(message(), destination(a.port, name="a.test"), pool=pool,
                          policy=POLICY)
            assert pool.idle_count("a.test") == 1
            await deliver(message(), destination(b.port, name="b.test"), pool=pool,
                          policy=POLICY)
            assert pool.idle_count("a.test") == 0 and pool.idle_count("b.test") == 1
            assert pool.open_connections == 1
            await asyncio.sleep(0.05)
            assert a.current == 0 and b.current == 1
        await pool.close()

    run(main())


def test_idle_connections_expire() -> None:
    async def main() -> None:
        pool = ConnectionPool(idle_timeout=0.1)
        async with CoreServer() as server:
            await deliver(message(), destination(server.port), pool=pool, policy=POLICY)
            assert pool.idle_count() == 1
            await asyncio.sleep(0.3)
            assert pool.idle_count() == 0 and pool.open_connections == 0
            assert server.current == 0
        await pool.close()

    run(main())


def test_a_connection_that_died_while_idle_is_replaced() -> None:
    async def main() -> None:
        pool = ConnectionPool(idle_timeout=30)
        # The server drops idle clients after 0.1 s with a 421 (RFC 5321 4.5.3.2.7).
        async with CoreServer(close_idle_after=0.1) as server:
            dest = destination(server.port)
            await deliver(message(), dest, pool=pool, policy=POLICY)
            await asyncio.sleep(0.3)
            [res] = await deliver(message(), dest, pool=pool, policy=POLICY)
            assert res.status is DELIVERED
            assert server.connections == 2 and len(server.messages) == 2
        await pool.close()

    run(main())


def test_waiters_are_served_in_order_one_wake_per_release_and_cancel_is_safe() -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections=3, max_per_destination=1)
        tries = 0
        real_try = pool._try

        def counting_try(name: str, key: object) -> object:
            nonlocal tries
            tries += 1
            return real_try(name, key)

        pool._try = counting_try  # type: ignore[method-assign,assignment]
        first = await pool.acquire("a.test")
        order: list[int] = []

        async def wait(i: int) -> None:
            lease = await pool.acquire("a.test")
            order.append(i)
            await asyncio.sleep(0)
            await pool.release(lease, None)

        tasks = [asyncio.create_task(wait(i)) for i in range(50)]
        await asyncio.sleep(0.01)
        cancelled = tasks.pop(10)
        cancelled.cancel()  # a waiter that goes away leaks no slot
        other = await pool.acquire("b.test")  # another destination is not held up
        tries = 0
        await pool.release(first, None)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert order == [i for i in range(50) if i != 10]
        assert tries < 3 * 50, tries  # not every waiter on every release
        await pool.release(other, None)
        assert pool.open_connections == 0 and not pool._waiters

    run(main())


def test_total_limit_hands_room_to_another_destination() -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections=1, max_per_destination=1)
        held = await pool.acquire("a.test")
        waiting = asyncio.create_task(pool.acquire("b.test"))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await pool.release(held, None)
        lease = await asyncio.wait_for(waiting, 2)
        assert lease.name == "b.test" and pool.open_connections == 1
        await pool.release(lease, None)

    run(main())
