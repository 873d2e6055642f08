"""Who may send mail to which recipient: the first cut of relay control.

Owns plain decision functions; every fact (peer address, login, recipient) is
passed in, nothing is looked up here. Returns the `Reply` to send: positive to
accept, negative to refuse. Never raises on peer input.

RFC 5321 3.6 leaves relaying to local policy; the safe default here is the
classic one: local domains from anyone, everything else only from trusted
networks or authenticated clients.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from goniec.errors import Reply
from goniec.replies import R250_RECIPIENT_OK, R550_RELAY_DENIED

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class RelayRules:
    local_domains: frozenset[str]
    networks: tuple[IPNetwork, ...]
    authenticated_may_relay: bool = True


def normalize_domain(domain: str) -> str:
    """Lower-case and IDNA-encode a domain so U-labels and A-labels compare equal."""
    domain = domain.lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def recipient_domain(address: str) -> str:
    """The domain of "local@domain"; "" for the bare Postmaster of RFC 5321 4.1.1.3."""
    at = address.rfind("@")
    return "" if at < 0 else normalize_domain(address[at + 1 :])


def is_trusted_peer(rules: RelayRules, peer_ip: IPAddress) -> bool:
    # An IPv4-mapped IPv6 peer (::ffff:a.b.c.d on a dual-stack socket) is the IPv4 client.
    if isinstance(peer_ip, ipaddress.IPv6Address) and peer_ip.ipv4_mapped is not None:
        peer_ip = peer_ip.ipv4_mapped
    return any(peer_ip in net for net in rules.networks if net.version == peer_ip.version)


def is_local_domain(rules: RelayRules, domain: str) -> bool:
    return domain == "" or domain in rules.local_domains


def check_recipient(
    rules: RelayRules,
    *,
    peer_ip: IPAddress,
    auth_user: str | None,
    recipient: str,
) -> Reply:
    """Accept mail for local domains from anyone; relay only for trusted peers or logins."""
    if is_local_domain(rules, recipient_domain(recipient)):
        return R250_RECIPIENT_OK
    if auth_user is not None and rules.authenticated_may_relay:
        return R250_RECIPIENT_OK
    if is_trusted_peer(rules, peer_ip):
        return R250_RECIPIENT_OK
    return R550_RELAY_DENIED.with_text(f"Unable to relay for <{recipient}>")
