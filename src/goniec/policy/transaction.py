"""Decisions inside a mail transaction: MAIL, RCPT and the end of data (pure).

Owns `check_mail` (login required on submission listeners, the sender login
map `553 5.7.1`, messages per connection, session size, free space, message
rates per client and per user), `check_rcpt` (recipients per message
`452 4.5.3`, then `relay.check_destination`) and `check_data_end` (hop count
`554 5.4.6`, session size). The shell gathers the facts, counters included,
and sends the returned `Reply`; positive means accept. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from goniec.errors import Reply
from goniec.policy.addresses import IPAddress
from goniec.policy.recipients import canonical
from goniec.policy.relay import check_destination
from goniec.policy.rules import UNCHECKED, ReverseDns, Rules
from goniec.replies import (
    R250_SENDER_OK,
    R421_TOO_MANY_MESSAGES,
    R450_MESSAGE_RATE,
    R450_USER_MESSAGE_RATE,
    R452_INSUFFICIENT_STORAGE,
    R452_SESSION_SIZE,
    R452_TOO_MANY_RECIPIENTS,
    R530_AUTH_REQUIRED,
    R553_SENDER_NOT_OWNED,
    R554_TOO_MANY_HOPS,
    with_hostname,
)


@dataclass(frozen=True, slots=True)
class MailFacts:
    sender: str = ""  # "" is the null reverse-path
    auth_required: bool = False  # the listener demands a login before MAIL
    auth_user: str | None = None
    storage_ok: bool = True
    declared_size: int | None = None  # RFC 1870 SIZE=
    messages: int = 0  # messages accepted earlier in this session
    session_bytes: int = 0  # their body sizes
    ip_message_rate: float = 0.0  # MAIL commands from the client in the last minute, this one too
    user_message_rate: float = 0.0  # the same for the logged-in user


@dataclass(frozen=True, slots=True)
class RcptFacts:
    recipient: str
    ip: IPAddress
    reverse: ReverseDns = UNCHECKED
    auth_user: str | None = None
    accepted: int = 0  # recipients accepted so far in this transaction
    server_ip: IPAddress | None = None  # the address the client connected to


def sender_owned(rules: Rules, user: str, sender: str) -> bool:
    """Does `user` own envelope sender `sender` according to the sender login map?"""
    owned = rules.senders.owners.get(user, frozenset())
    if "*" in owned:
        return True
    canon = canonical(rules.directory, sender)
    if canon in owned or "@" + canon.rpartition("@")[2] in owned:
        return True
    return "@" in user and canonical(rules.directory, user) == canon


def check_mail(rules: Rules, facts: MailFacts) -> Reply:
    # RFC 4954 6: a submission listener may demand AUTH before MAIL (530 5.7.0).
    if facts.auth_required and facts.auth_user is None:
        return R530_AUTH_REQUIRED
    if (rules.senders.enabled and facts.auth_user is not None and facts.sender
            and not sender_owned(rules, facts.auth_user, facts.sender)):
        return R553_SENDER_NOT_OWNED
    limits = rules.limits
    if limits.messages_per_connection and facts.messages >= limits.messages_per_connection:
        return with_hostname(R421_TOO_MANY_MESSAGES, rules.hostname)
    if limits.session_size and facts.session_bytes and (
            facts.session_bytes + (facts.declared_size or 0) > limits.session_size
            or facts.session_bytes >= limits.session_size):
        return R452_SESSION_SIZE  # a new session can always take one full-size message
    # RFC 1870 6.1: refuse with 452 when the spool cannot take the message now.
    if not facts.storage_ok:
        return R452_INSUFFICIENT_STORAGE
    rates = rules.rates
    if rates.messages_per_ip and facts.ip_message_rate > rates.messages_per_ip:
        return R450_MESSAGE_RATE
    if (rates.messages_per_user and facts.auth_user is not None
            and facts.user_message_rate > rates.messages_per_user):
        return R450_USER_MESSAGE_RATE
    return R250_SENDER_OK


def check_rcpt(rules: Rules, facts: RcptFacts) -> Reply:
    # RFC 5321 4.5.3.1.10: 452 for too many recipients; the client sends the
    # rest in another transaction.
    limit = rules.limits.recipients
    if limit and facts.accepted >= limit:
        return R452_TOO_MANY_RECIPIENTS
    return check_destination(rules, facts.recipient, ip=facts.ip, reverse=facts.reverse,
                             auth_user=facts.auth_user, server_ip=facts.server_ip)


def check_data_end(rules: Rules, *, received_headers: int, message_bytes: int,
                   session_bytes: int) -> Reply | None:
    """After the final dot: None to go on and store, else the refusal.

    received_headers: Received: fields the client's header section carries; ours
    makes one more (RFC 5321 6.3: a loop shows as many Received: lines).
    session_bytes: bodies accepted earlier in this session.
    """
    hops = rules.limits.hop_count
    if hops and received_headers + 1 > hops:
        return R554_TOO_MANY_HOPS
    limit = rules.limits.session_size
    if limit and session_bytes and session_bytes + message_bytes > limit:
        return R452_SESSION_SIZE
    return None
