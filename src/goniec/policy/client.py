"""Decisions about the client itself: may it connect, is its HELO acceptable (pure).

Owns `check_connect` (IIS Connection control, the reverse-DNS requirement and
the connection rate, answered at the greeting: `554 5.7.1`, `554 5.7.25`,
`421 4.7.x`), `check_helo` (HELO/EHLO name strictness) and `client_allowed`,
the list test shared with relay rules. Facts come in as arguments (address,
reverse-DNS result, counters); each function returns None to accept, or the
refusal `Reply`. A DNS failure never turns into an accept of a client a
domain entry might refuse: it is a temporary refusal (DESIGN 1.5). No I/O.
"""

from __future__ import annotations

import re

from goniec.errors import Reply
from goniec.policy.addresses import IPAddress, in_domains, literal_address, plain_ip
from goniec.policy.rules import UNCHECKED, ClientList, ReverseDns, Rules
from goniec.replies import (
    R421_CONNECTION_RATE,
    R421_REVERSE_DNS_TEMP,
    R501_BAD_HELO,
    R504_HELO_NOT_FQDN,
    R550_HELO_MISMATCH,
    R554_ACCESS_DENIED,
    R554_NO_REVERSE_DNS,
    with_hostname,
)

# RFC 5321 4.1.2 Domain: sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str];
# RFC 1035 2.3.4: labels up to 63 octets, names up to 253.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def client_listed(clients: ClientList, ip: IPAddress, reverse: ReverseDns) -> bool | None:
    """Is the client on the list? None when only its (failed) DNS name could tell."""
    if ip in clients.networks:
        return True
    if not clients.domains:
        return False
    if reverse.status == "ok" and reverse.name:
        return in_domains(reverse.name, clients.domains)
    if reverse.status == "none":
        return False
    return None


def client_allowed(clients: ClientList, ip: IPAddress, reverse: ReverseDns) -> bool | None:
    """The list with its mode applied; None = unknown because of a DNS failure."""
    listed = client_listed(clients, ip, reverse)
    if listed is None:
        return None
    return listed if clients.mode == "only" else not listed


def check_connect(rules: Rules, *, ip: IPAddress, reverse: ReverseDns,
                  connection_rate: float = 0.0) -> Reply | None:
    """At connect, before the greeting. `connection_rate`: connections from this
    client (network, for IPv6) in the last minute, this one included."""
    allowed = client_allowed(rules.access.clients, ip, reverse)
    if allowed is False:
        return R554_ACCESS_DENIED
    if allowed is None:
        return with_hostname(R421_REVERSE_DNS_TEMP, rules.hostname)
    if rules.peers.reverse_dns == "require":
        if reverse.status == "none":
            return R554_NO_REVERSE_DNS
        if reverse.status != "ok":
            return with_hostname(R421_REVERSE_DNS_TEMP, rules.hostname)
    limit = rules.rates.connections_per_ip
    if limit and connection_rate > limit:
        return with_hostname(R421_CONNECTION_RATE, rules.hostname)
    return None


def helo_name_valid(name: str) -> bool:
    """RFC 5321 4.1.1.1: a Domain or an address-literal (U-labels allowed, RFC 6531 3.7.1)."""
    if name.startswith("["):
        return literal_address(name) is not None
    lowered = name.lower()
    if not lowered.isascii():
        try:
            lowered = lowered.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return len(lowered) <= 253 and _DOMAIN_RE.fullmatch(lowered) is not None


def check_helo(rules: Rules, name: str, *, ip: IPAddress,
               reverse: ReverseDns = UNCHECKED) -> Reply | None:
    """HELO/EHLO name per `peers.helo`: "off" takes anything; "syntax" wants a domain
    or address literal; "fqdn" also a dot in the name; "strict" also wants an
    address literal to be the client's own address and refuses our own names
    from clients outside the relay list."""
    mode = rules.peers.helo
    if mode == "off":
        return None
    if not helo_name_valid(name):
        return R501_BAD_HELO
    literal = literal_address(name)
    if mode == "syntax":
        return None
    if literal is None and "." not in name.strip("."):
        return R504_HELO_NOT_FQDN
    if mode == "fqdn":
        return None
    if literal is not None:
        return None if literal == plain_ip(ip) else R550_HELO_MISMATCH
    lowered = name.lower().rstrip(".")
    ours = lowered == rules.hostname or rules.domains.is_local(lowered)
    if ours and client_allowed(rules.relay.clients, ip, reverse) is not True:
        return R550_HELO_MISMATCH  # a stranger claiming to be us
    return None
