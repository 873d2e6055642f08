"""Outbound connection limits and reuse (layer 3).

Owns `ConnectionPool`: how many connections may be open in total and per
destination (IIS "Limit number of connections to" 1000 and "Limit
connections per domain to" 100), and the idle sessions kept for the next
message to the same destination (Postfix's connection cache): each idle
session is closed with QUIT after `idle_timeout` seconds or once it has
carried `max_messages_per_connection` messages. An idle session counts
against the limits; when the total is reached, the oldest idle session of
another destination is closed to make room. No exceptions of its own.

Use: `lease = await pool.acquire(name, route)`; `lease.session` is a reused
idle session or None (then open one: the lease holds the slot); finally
`await pool.release(lease, session_or_None)`. Sessions are reused only for
the same name and the same `key` (the route: TLS mode, login), so a session
logged in with one set of credentials never carries mail for another.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from goniec.delivery.session import SmtpSession


@dataclass(slots=True)
class Lease:
    """One connection slot for destination `name`; `session` when one was reused."""

    name: str
    key: Hashable
    session: SmtpSession | None


_IdleKey = tuple[str, Hashable]


class ConnectionPool:
    def __init__(self, *, max_connections: int = 1000, max_per_destination: int = 100,
                 max_messages_per_connection: int = 100, idle_timeout: float = 5.0) -> None:
        if min(max_connections, max_per_destination, max_messages_per_connection) < 1:
            raise ValueError("connection limits must be >= 1")
        self.max_connections = max_connections
        self.max_per_destination = max_per_destination
        self.max_messages = max_messages_per_connection
        self.idle_timeout = idle_timeout
        self._total = 0
        self._per: dict[str, int] = {}
        # (name, key) -> idle sessions, oldest first, each with its expiry timer
        self._idle: dict[_IdleKey, deque[tuple[SmtpSession, asyncio.TimerHandle]]] = {}
        # destination -> its waiting acquirers (route key, future), first come first
        self._waiters: dict[str, deque[tuple[Hashable, asyncio.Future[Lease]]]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._total

    def idle_count(self, name: str | None = None) -> int:
        return sum(len(q) for (n, _), q in self._idle.items() if name is None or n == name)

    async def acquire(self, name: str, key: Hashable = None) -> Lease:
        """A slot for `name`, waiting while the limits are reached.

        Waiters are served first come, first served, per destination: a freed
        slot is handed to the next waiter of its destination (then, when the
        total limit allows, to the heads of the others), so a release wakes one
        task, not every waiting one.
        """
        if not self._waiters.get(name):  # nobody queued before us for this name
            lease = self._try(name, key)
            if lease is not None:
                return lease
        waiter: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, deque()).append((key, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot as we were cancelled
                lease = waiter.result()
                self._give_back(lease, lease.session)
            raise

    async def release(self, lease: Lease, session: SmtpSession | None) -> None:
        """End the lease; a usable session under its message limit stays for reuse."""
        self._give_back(lease, session)

    def _give_back(self, lease: Lease, session: SmtpSession | None) -> None:
        if (session is not None and not self._closed and session.usable
                and session.messages < self.max_messages):
            idle_key = (lease.name, lease.key)
            handle = asyncio.get_running_loop().call_later(
                self.idle_timeout, self._expire, idle_key, session)
            self._idle.setdefault(idle_key, deque()).append((session, handle))
        else:
            if session is not None:
                self._close(session)
            self._free(lease.name)
        self._wake(lease.name)

    async def close(self) -> None:
        """QUIT every idle session and wait (bounded by the quit timeouts)."""
        self._closed = True
        for idle_key in list(self._idle):
            while self._idle.get(idle_key):
                self._drop_idle(idle_key, 0)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    # --- internals -----------------------------------------------------------------
    def _try(self, name: str, key: Hashable) -> Lease | None:
        mine = (name, key)
        idle = self._idle.get(mine)
        if idle:
            session, handle = idle.pop()  # the newest is the likeliest to be alive
            handle.cancel()
            if not idle:
                del self._idle[mine]
            return Lease(name, key, session)
        # At the per-destination limit, room only by closing an idle session of
        # this name with another route.
        if self._per.get(name, 0) >= self.max_per_destination and not self._evict(
                lambda k: k[0] == name and k != mine):
            return None
        if self._total >= self.max_connections and not self._evict(lambda k: k != mine):
            return None
        self._total += 1
        self._per[name] = self._per.get(name, 0) + 1
        return Lease(name, key, None)

    def _evict(self, which: Callable[[_IdleKey], bool]) -> bool:
        """Close the oldest idle session whose key `which` accepts; True if one was."""
        for idle_key, queue in self._idle.items():
            if queue and which(idle_key):
                self._drop_idle(idle_key, 0)
                return True
        return False

    def _drop_idle(self, idle_key: _IdleKey, index: int) -> None:
        queue = self._idle[idle_key]
        session, handle = queue[index]
        del queue[index]
        if not queue:
            del self._idle[idle_key]
        handle.cancel()
        self._close(session)
        self._free(idle_key[0])

    def _expire(self, idle_key: _IdleKey, session: SmtpSession) -> None:
        queue = self._idle.get(idle_key, deque())
        for i, (s, _) in enumerate(queue):
            if s is session:
                self._drop_idle(idle_key, i)
                self._wake(idle_key[0])
                return

    def _free(self, name: str) -> None:
        self._total -= 1
        left = self._per[name] - 1
        if left:
            self._per[name] = left
        else:
            del self._per[name]

    def _close(self, session: SmtpSession) -> None:
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _wake(self, name: str) -> None:
        """Hand freed room to waiters: `name`'s first, then, while the total
        limit (or an idle session to close) leaves room, the other destinations'."""
        self._serve(name)
        for other in list(self._waiters):
            if self._total >= self.max_connections and not self._idle:
                break
            if other != name:
                self._serve(other)

    def _serve(self, name: str) -> None:
        queue = self._waiters.get(name)
        while queue:
            key, waiter = queue[0]
            if waiter.done():  # its task was cancelled while waiting
                queue.popleft()
                continue
            lease = self._try(name, key)
            if lease is None:
                break
            queue.popleft()
            waiter.set_result(lease)
        if not queue:
            self._waiters.pop(name, None)
