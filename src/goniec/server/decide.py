"""The session's answers to the core's decision events before the body: connect,
HELO/EHLO, AUTH, MAIL and RCPT.

Owns gathering the facts each policy check needs (reverse DNS through the
resolver, rate counters in shared memory, the clock, free space, the
password check in a worker thread), calling the plain function in
goniec.policy, logging the outcome and answering the core. It holds no rule
of its own: every refusal comes from goniec.policy. Each handler returns
False (the session goes on) as `session.Session` handlers do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from goniec.errors import Reply
from goniec.obs import metrics
from goniec.policy.client import check_connect, check_helo
from goniec.policy.login import check_login, failed_login
from goniec.policy.transaction import MailFacts, RcptFacts, check_mail, check_rcpt
from goniec.protocol import events
from goniec.replies import (
    R235_AUTH_OK,
    R421_TOO_MANY_CONNECTIONS,
    R454_TEMP_AUTH_FAILURE,
    with_hostname,
)

if TYPE_CHECKING:
    from goniec.server.session import Session


async def ensure_reverse(s: Session) -> None:
    """Look up the client's name once per session, when the rules need it."""
    resolver = s.settings.resolver
    if s.reverse.status != "unchecked" or resolver is None:
        return
    s.reverse = await resolver.lookup(s.peer_addr)
    s.info.reverse_name = s.reverse.name if s.reverse.status == "ok" else None
    s.event("reverse_dns", level=logging.DEBUG, client=s.info.peer_ip, result=s.reverse.status,
            host=s.reverse.name)


async def refresh(s: Session) -> None:
    """Between transactions: take the newest rules (a reload may have replaced them)."""
    if s.refresh_settings() and s.settings.rules.needs_reverse_dns:
        await ensure_reverse(s)


async def on_connected(s: Session, ev: events.Connected) -> bool:
    ctx = s.ctx
    if not ctx.counter.try_open(s.info.peer_ip):
        s.event("reject", stage="connect", reason="too many connections", client=s.info.peer_ip)
        metrics.current().rejected(R421_TOO_MANY_CONNECTIONS)
        s.conn.respond(with_hostname(R421_TOO_MANY_CONNECTIONS, ctx.hostname))
        return False
    s.counted = True
    rules = s.settings.rules
    if rules.needs_reverse_dns:
        await ensure_reverse(s)
    rate = 0.0
    if rules.rates.connections_per_ip:
        rate = ctx.rates.hit("c:" + s.rate_key, ctx.clock())
    reply = check_connect(rules, ip=s.peer_addr, reverse=s.reverse, connection_rate=rate)
    if reply is not None:
        s.event("reject", stage="connect", client=s.info.peer_ip, reply=str(reply),
                rdns=s.reverse.status)
        metrics.current().rejected(reply)
        s.conn.respond(reply)
        return False
    text = f"{ctx.hostname} ESMTP"
    if s.settings.greeting:
        text += f" {s.settings.greeting}"
    s.conn.respond(Reply(220, None, text))
    return False


async def on_helo(s: Session, ev: events.Helo) -> bool:
    await refresh(s)
    reply = check_helo(s.settings.rules, ev.name, ip=s.peer_addr, reverse=s.reverse)
    if reply is not None:
        s.event("reject", stage="helo", helo=ev.name[:80], client=s.info.peer_ip,
                reply=str(reply))
        metrics.current().rejected(reply)
        s.conn.respond(reply)
        return False
    s.info.helo = ev.name
    s.info.esmtp = ev.extended
    s.conn.respond(Reply(250, "2.0.0", f"{s.ctx.hostname}" + ("" if ev.extended else " Hello")))
    return False


async def on_auth(s: Session, ev: events.AuthCredentials) -> bool:
    await refresh(s)
    ctx, rules = s.ctx, s.settings.rules
    now = ctx.clock()
    ip_key, user_key = "f:" + s.rate_key, "u:" + ev.username
    per_user = rules.rates.failed_logins_per_user
    gate = check_login(rules, now=now, locked_until=ctx.rates.locked_until(ip_key, now),
                       user_failures=ctx.rates.peek(user_key, now) if per_user else 0.0)
    if gate is not None:
        s.event("auth", level=logging.WARNING, user=ev.username, mechanism=ev.mechanism,
                result="refused", client=s.info.peer_ip, reply=str(gate))
        metrics.current().rejected(gate)
        s.conn.respond(gate)
        return False
    users = ctx.users
    ok = False
    if users is not None and ev.authzid in ("", ev.username):
        try:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, users.verify, ev.username, ev.password)
        except Exception as exc:  # a broken users file is a temporary failure
            s.event("auth", level=logging.WARNING, user=ev.username, result="error",
                    error=str(exc))
            s.conn.respond(R454_TEMP_AUTH_FAILURE)
            return False
    if ok:
        s.info.auth_user = ev.username
        s.event("auth", user=ev.username, mechanism=ev.mechanism, result="ok")
        s.conn.respond(R235_AUTH_OK)
        return False
    now = ctx.clock()
    failures = ctx.rates.hit(ip_key, now)
    if per_user:
        ctx.rates.hit(user_key, now)
    verdict = failed_login(rules, now=now, ip_failures=failures)
    s.event("auth", level=logging.WARNING, user=ev.username, mechanism=ev.mechanism,
            result="failed", client=s.info.peer_ip, failures=round(failures, 1),
            delay=verdict.delay)
    metrics.current().auth_failed(ev.mechanism)
    if verdict.lock_until:
        ctx.rates.lock(ip_key, now, verdict.lock_until)
        s.event("lockout", level=logging.WARNING, client=s.info.peer_ip, key=s.rate_key,
                seconds=rules.rates.lockout)
    if verdict.delay:
        await asyncio.sleep(verdict.delay)  # the slow-down: never blocks other sessions
    s.conn.respond(verdict.reply)
    return False


async def on_mail(s: Session, ev: events.MailFrom) -> bool:
    await refresh(s)
    ctx, rules = s.ctx, s.settings.rules
    user = s.info.auth_user
    now = ctx.clock()
    ip_rate = user_rate = 0.0
    if rules.rates.messages_per_ip:
        ip_rate = ctx.rates.hit("m:" + s.rate_key, now)
    if rules.rates.messages_per_user and user is not None:
        user_rate = ctx.rates.hit("mu:" + user, now)
    reply = check_mail(rules, MailFacts(
        sender=ev.sender,
        auth_required=s.spec.auth == "required",
        auth_user=user,
        storage_ok=ctx.queue.free_space_ok(ev.params.size or 0),
        declared_size=ev.params.size,
        messages=s.messages,
        session_bytes=s.session_bytes,
        ip_message_rate=ip_rate,
        user_message_rate=user_rate,
    ))
    if reply.is_positive:
        s.sender, s.params = ev.sender, ev.params
        s.event("mail", level=logging.DEBUG, sender=ev.sender, size=ev.params.size)
    else:
        s.event("reject", stage="mail", sender=ev.sender, client=s.info.peer_ip, user=user,
                reply=str(reply))
        metrics.current().rejected(reply)
    s.conn.respond(reply)
    return False


async def on_rcpt(s: Session, ev: events.RcptTo) -> bool:
    rcpt = ev.recipient
    reply = check_rcpt(s.settings.rules, RcptFacts(
        recipient=rcpt.address, ip=s.peer_addr, reverse=s.reverse,
        auth_user=s.info.auth_user, accepted=len(s.recipients), server_ip=s.server_addr))
    if reply.is_positive:
        s.recipients.append(rcpt)
        s.event("rcpt", level=logging.DEBUG, rcpt=rcpt.address)
    else:
        s.event("reject", stage="rcpt", sender=s.sender, rcpt=rcpt.address,
                client=s.info.peer_ip, user=s.info.auth_user, reply=str(reply))
        metrics.current().rejected(reply)
    s.conn.respond(reply)
    return False
