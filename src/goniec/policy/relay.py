"""Where a recipient may go: local delivery, relay, or a refusal (pure, layer 1).

Owns `may_relay` (IIS Relay restrictions: the relay list in its mode, plus
"authenticated clients may relay") and `check_destination`, the RCPT
decision once limits are checked: a local (or alias) domain looks the local
part up in its recipient table (`550 5.1.1` when unknown); a remote domain
marked `relay` takes mail from anyone (backup MX); anything else needs relay
permission, else `550 5.7.1 Unable to relay for <address>`.

Routing tricks never relay (RFC 5321 3.6.1, Appendix C): the core already
dropped source routes, so `<@a:user@remote>` arrives as "user@remote"; a local
part with "%", "!" or a quoted "@" aimed at a local domain (the percent hack,
bang paths) is refused as a relay attempt, for every client, since we never
route on local parts. Our own host name, when it is not a local domain, and
an address literal of the address the client connected to are refused too:
relaying there would only loop back to us. Other address literals are
remote destinations. No I/O; never raises on peer input.
"""

from __future__ import annotations

from goniec.errors import Reply
from goniec.policy.addresses import (
    IPAddress,
    has_routing_syntax,
    literal_address,
    normalize_domain,
    recipient_domain,
    split_address,
)
from goniec.policy.client import client_allowed
from goniec.policy.recipients import accepts
from goniec.policy.rules import UNCHECKED, ReverseDns, Rules
from goniec.replies import (
    R250_RECIPIENT_OK,
    R451_DNS_TEMP,
    R550_RELAY_DENIED,
    R550_UNKNOWN_USER,
)

__all__ = ["check_destination", "may_relay", "normalize_domain", "recipient_domain",
           "relay_denied"]


def relay_denied(recipient: str) -> Reply:
    return R550_RELAY_DENIED.with_text(f"Unable to relay for <{recipient}>")


def may_relay(rules: Rules, *, ip: IPAddress, reverse: ReverseDns = UNCHECKED,
              auth_user: str | None = None) -> bool | None:
    """True/False; None when only a failed reverse-DNS lookup could tell."""
    if auth_user is not None and rules.relay.authenticated:
        return True
    return client_allowed(rules.relay.clients, ip, reverse)


def check_destination(rules: Rules, recipient: str, *, ip: IPAddress,
                      reverse: ReverseDns = UNCHECKED, auth_user: str | None = None,
                      server_ip: IPAddress | None = None) -> Reply:
    local, raw_domain = split_address(recipient)
    if not raw_domain:
        return R250_RECIPIENT_OK  # RFC 5321 4.1.1.3: the bare Postmaster is always local
    domain = normalize_domain(raw_domain)
    local_domain = rules.domains.local_domain(domain)
    if local_domain is not None:
        if has_routing_syntax(local):
            return relay_denied(recipient)
        if accepts(rules.directory, local, local_domain):
            return R250_RECIPIENT_OK
        return R550_UNKNOWN_USER
    if domain == rules.hostname:
        return relay_denied(recipient)
    literal = literal_address(domain)
    if literal is not None and server_ip is not None and literal == server_ip:
        return relay_denied(recipient)
    remote = rules.domains.remote_domain(domain) if literal is None else None
    if remote is not None and remote.relay:
        return R250_RECIPIENT_OK
    allowed = may_relay(rules, ip=ip, reverse=reverse, auth_user=auth_user)
    if allowed:
        return R250_RECIPIENT_OK
    if allowed is None:
        return R451_DNS_TEMP
    return relay_denied(recipient)
