"""Deliver one message to one next hop over SMTP: the public entry point (layer 3).

Owns `deliver()`, the values it takes (`OutboundMessage`, `ClientPolicy`)
and the per-attempt rules around sessions: targets are tried in order
(RFC 5321 5.1: the next one after a connect failure, a refused greeting or
EHLO, a TLS failure, or 4xx replies for some recipients, as Postfix does for
backup MX hosts); a reused idle connection that turns out dead is replaced
by a fresh one at no cost; a message is never sent twice to the same target
in one attempt. The masquerade domain (IIS) is applied to MAIL FROM here.

`deliver()` never raises for delivery problems: every recipient gets a
`RecipientResult` (delivered / deferred / failed), local problems included
(only a bug or a cancellation escapes; the connection is then dropped).
Helpers `mx_destination()` and `smart_host_destination()` build a
`Destination` through the `Resolver` port and raise `LookupFailed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO

from goniec.delivery import outcome
from goniec.delivery.destination import Destination, Route, SmartHost, Target
from goniec.delivery.outcome import DeliveryStatus, RecipientResult, status_of
from goniec.delivery.pool import ConnectionPool
from goniec.delivery.resolver import Resolver
from goniec.delivery.session import ClientTimeouts, SessionError, SessionSettings, SmtpSession
from goniec.errors import Reply, SMTPError
from goniec.model import Envelope
from goniec.obs.log import log_event
from goniec.protocol.client import ClientOptions, TransactionDone

log = logging.getLogger("goniec.delivery")
DEFAULT_ROUTE = Route()


@dataclass(frozen=True)
class OutboundMessage:
    """What to send: the envelope, and the stored message as a file opened on demand.

    open_body: returns a new binary file positioned at the start of the message
        (e.g. `lambda: store.open_message(qid)`); it is opened once per attempt
        on a server, read in 64 KiB pieces and closed. Reads are synchronous
        (a local spool file is in the page cache; a thread hop per piece would
        cost more than it saves). Any line endings are fine: they are sent as
        CRLF. A read error aborts the connection without the end of data, so a
        truncated message is never delivered (the recipients are deferred).
    size: the message's size in octets, for SIZE= (RFC 1870); None if unknown.
    queue_id: for logs (msg=).
    """

    envelope: Envelope
    open_body: Callable[[], BinaryIO]
    size: int | None = None
    queue_id: str = ""


@dataclass(frozen=True)
class ClientPolicy:
    """Settings shared by every outbound delivery (IIS Delivery tab, Postfix smtp_*).

    helo_name: the name in EHLO/HELO (IIS "Fully-qualified domain name").
    port: the TCP port of MX targets (IIS "TCP port", default 25); smart
        hosts use their own port when given.
    masquerade_domain: replaces the domain of MAIL FROM (IIS "Masquerade
        domain"); masquerade_only: limit that to senders in these domains
        (empty: every non-null sender). Message headers are never changed.
    max_targets: addresses tried per attempt (Postfix smtp_mx_address_limit).
    """

    helo_name: str
    port: int = 25
    timeouts: ClientTimeouts = ClientTimeouts()
    masquerade_domain: str | None = None
    masquerade_only: frozenset[str] = frozenset()
    pipelining: bool = True
    chunking: bool = True
    strict_8bitmime: bool = False
    tls_min_version: str = "1.2"
    max_targets: int = 10

    def session_settings(self, route: Route) -> SessionSettings:
        opts = ClientOptions(self.helo_name, esmtp=route.esmtp, pipelining=self.pipelining,
                             chunking=self.chunking, strict_8bitmime=self.strict_8bitmime)
        return SessionSettings(opts, self.timeouts, self.tls_min_version)


def masquerade(sender: str, domain: str | None, only: frozenset[str] = frozenset()) -> str:
    """IIS "Masquerade domain": local@example.org -> local@<domain> in MAIL FROM.

    The null sender and addresses without a domain stay as they are; with
    `only`, just senders whose domain is listed (case-insensitive) change.
    """
    if not domain or not sender or "@" not in sender:
        return sender
    local, _, own = sender.rpartition("@")
    if only and own.lower() not in {d.lower() for d in only}:
        return sender
    return f"{local}@{domain}"


async def mx_destination(domain: str, resolver: Resolver, policy: ClientPolicy,
                         route: Route = DEFAULT_ROUTE) -> Destination:
    """Direct delivery: the MX targets of `domain` on the policy's port."""
    targets = await resolver.mx_targets(domain, policy.port)
    return Destination(domain.lower(), tuple(targets), route)


async def smart_host_destination(spec: SmartHost, resolver: Resolver, policy: ClientPolicy,
                                 route: Route) -> Destination:
    """The smart host (its own port, else the policy's)."""
    targets = await resolver.smart_host_targets(spec, policy.port)
    return Destination(str(spec), tuple(targets), route)


async def deliver(message: OutboundMessage, destination: Destination, *,
                  pool: ConnectionPool, policy: ClientPolicy) -> list[RecipientResult]:
    """Try to hand `message` to `destination`; one result per recipient, in order."""
    if not message.envelope.recipients:
        return []
    attempt = _Attempt(message, destination, policy)
    lease = await pool.acquire(destination.name, destination.route)
    attempt.session = lease.session
    try:
        await attempt.run(reused=lease.session is not None)
    except BaseException:
        if attempt.session is not None:  # a bug or a cancellation: drop the connection
            attempt.session.abort()
        raise
    finally:
        session = attempt.session
        await pool.release(lease, session if session is not None and session.usable else None)
    return attempt.results()


class _Attempt:
    """The state of one deliver() call: what is decided, what is left."""

    def __init__(self, message: OutboundMessage, destination: Destination,
                 policy: ClientPolicy) -> None:
        env = message.envelope
        sender = masquerade(env.sender, policy.masquerade_domain, policy.masquerade_only)
        self.envelope = replace(env, sender=sender) if sender != env.sender else env
        self.message = message
        self.destination = destination
        self.settings = policy.session_settings(destination.route)
        self.targets = list(destination.targets[: policy.max_targets])
        self.pending = list(range(len(env.recipients)))
        self.session: SmtpSession | None = None  # the connection in use
        self.final: dict[int, RecipientResult] = {}
        self.last: dict[int, RecipientResult] = {}  # best answer so far for pending ones

    def results(self) -> list[RecipientResult]:
        out = []
        for i, rcpt in enumerate(self.envelope.recipients):
            res = self.final.get(i) or self.last.get(i) or RecipientResult(
                rcpt, DeliveryStatus.DEFERRED, outcome.no_targets(self.destination.name))
            out.append(res)
            log_event(log, "delivery", msg=self.message.queue_id, rcpt=rcpt.address,
                      relay=res.remote_host, status=str(res.status), dsn=res.status_code,
                      reply=res.describe())
        return out

    async def run(self, *, reused: bool) -> None:
        """Work through the targets; `self.session` ends as the one to keep (or None)."""
        next_target = 0
        while self.pending:
            session = self.session
            if session is None:
                if next_target >= len(self.targets):
                    break
                target = self.targets[next_target]
                next_target += 1
                try:
                    session = await SmtpSession.open(target, self.destination.route,
                                                     self.settings)
                except SessionError as exc:
                    self._set_all(exc.reply, target.label)
                    log_event(log, "connect_failed", msg=self.message.queue_id,
                              relay=target.label, reply=str(exc.reply))
                    if not exc.next_target:
                        break
                    continue
                self.session, reused = session, False
            retry, stale = await self._transaction(session, reused)
            reused = False
            if stale:  # a cached connection had died while idle: open a fresh one
                session.abort()
                self.session = None
                continue
            self.pending = retry
            more = next_target < len(self.targets)
            if not session.usable or (retry and more):
                self.session = None
                await session.quit()
            if not retry or not more:
                break

    async def _transaction(self, session: SmtpSession, reused: bool) -> tuple[list[int], bool]:
        """Send to the pending recipients; returns (those to try elsewhere, stale)."""
        label = session.target.label
        rcpts = self.envelope.recipients
        env = Envelope(self.envelope.sender, tuple(rcpts[i] for i in self.pending),
                       self.envelope.params)
        try:
            done = await session.send(env, self.message.open_body, self.message.size)
        except SMTPError as exc:
            # The core refused the message for this server (SMTPUTF8, SIZE, ...):
            # permanent unless another target can take it.
            self._set_all(exc.reply, label)
            return list(self.pending), False
        if reused and done.interrupted and (done.mail is None or done.mail.code == 421):
            return [], True  # nothing was decided: the idle connection had timed out
        return self._record(done, label), False

    def _record(self, done: TransactionDone, label: str) -> list[int]:
        retry = []
        rcpts = self.envelope.recipients
        for k, i in enumerate(self.pending):
            reply = done.replies[k]
            if reply is None:  # the connection ended before the server decided
                what = done.interrupted or "connection lost"
                if done.data_sent:
                    what += " (the message may be delivered twice)"
                lost = RecipientResult(rcpts[i], DeliveryStatus.DEFERRED,
                                       outcome.conversation_failed(label, what), label)
                if done.data_sent:
                    self.final[i] = lost  # no other target now: limit duplicates
                else:
                    self.last[i] = lost
                    retry.append(i)
                continue
            status = status_of(reply)
            remote = k not in done.local
            result = RecipientResult(
                rcpts[i], status, reply, label, remote,
                dsn_relayed=status is DeliveryStatus.DELIVERED and not done.dsn)
            if status is DeliveryStatus.DEFERRED:
                self.last[i] = result  # RFC 5321 5.1: a backup MX may take it now
                retry.append(i)
            else:
                self.final[i] = result
        return retry

    def _set_all(self, reply: Reply, label: str) -> None:
        rcpts = self.envelope.recipients
        for i in self.pending:
            self.last[i] = RecipientResult(rcpts[i], status_of(reply), reply, label)


__all__ = [
    "ClientPolicy", "ClientTimeouts", "ConnectionPool", "Destination", "OutboundMessage",
    "RecipientResult", "Target", "deliver", "masquerade", "mx_destination",
    "smart_host_destination",
]
