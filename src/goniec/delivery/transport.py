"""The SMTP side of the queue runner: a routing decision in, per-recipient results out.

Owns `Transport` (the port the worker calls, so tests and other carriers can
stand in) and `SmtpTransport`, which turns a `RemoteRoute` into a
`Destination` through the `Resolver` port (MX lookup, or the smart host's
addresses) and hands the message to `smtp_client.deliver` with the shared
`ConnectionPool` (connection reuse and limits) and `ClientPolicy`. A failed
lookup becomes the same result for every recipient: permanent only when the
resolver says so (NXDOMAIN, null MX), else deferred. Never raises for a
delivery problem (DESIGN 1.5: anything unexpected is a deferral).
"""

from __future__ import annotations

import logging
from typing import Protocol

from goniec.delivery import outcome, smtp_client
from goniec.delivery.destination import Destination
from goniec.delivery.outcome import RecipientResult
from goniec.delivery.pool import ConnectionPool
from goniec.delivery.resolver import LookupFailed, Resolver
from goniec.delivery.router import RemoteRoute
from goniec.delivery.smtp_client import ClientPolicy, OutboundMessage
from goniec.errors import Reply

log = logging.getLogger("goniec.delivery")


class Transport(Protocol):
    async def send(self, route: RemoteRoute, message: OutboundMessage) -> list[RecipientResult]:
        """One result per recipient of `message.envelope`, in order. Never raises."""
        ...

    async def close(self) -> None: ...


class SmtpTransport:
    def __init__(self, resolver: Resolver, pool: ConnectionPool, policy: ClientPolicy) -> None:
        self.resolver = resolver
        self.pool = pool
        self.policy = policy

    async def destination(self, route: RemoteRoute) -> Destination:
        """The targets of `route`; raises `LookupFailed`."""
        if route.next_hop is None:
            targets = await self.resolver.mx_targets(route.domain, route.port)
            return Destination(route.domain, tuple(targets), route.route)
        targets = await self.resolver.smart_host_targets(route.next_hop, route.port)
        return Destination(str(route.next_hop), tuple(targets), route.route)

    async def send(self, route: RemoteRoute, message: OutboundMessage) -> list[RecipientResult]:
        rcpts = message.envelope.recipients
        try:
            dest = await self.destination(route)
            return await smtp_client.deliver(message, dest, pool=self.pool, policy=self.policy)
        except LookupFailed as exc:
            log.info("delivery.lookup_failed msg=%s domain=%s reply=%r", message.queue_id,
                     route.domain, str(exc.reply))
            return outcome.results_for_all(rcpts, exc.reply)
        except Exception as exc:  # DESIGN 1.5: a bug or surprise is a retry, not a bounce
            log.exception("delivery.error msg=%s domain=%s", message.queue_id, route.domain)
            reply = Reply(451, "4.3.0", f"local error while delivering: {type(exc).__name__}")
            return outcome.results_for_all(rcpts, reply)

    async def close(self) -> None:
        await self.pool.close()
