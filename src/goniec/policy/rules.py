"""The rule set the server applies, as immutable precomputed data (pure, layer 1).

Owns the value types every check reads: `AccessRules` (IIS Connection
control), `RelayRules` (IIS Relay restrictions), `SenderRules` (the sender
login map), `MessageLimits` (IIS Messages tab and more), `RateLimits`,
`PeerRules` (HELO strictness, reverse DNS), `ReverseDns` (the looked-up fact)
and `Rules`, the whole set. `policy.build` makes a `Rules` from the config;
a reload swaps the whole object, so a check always sees one consistent set.

Lists are precomputed for the hot path: networks as `NetSet` (binary search),
domains as frozensets. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from goniec.policy.domains import Domains
from goniec.policy.netset import NetSet
from goniec.policy.recipients import Directory, RecipientTable

# "only": only listed clients (IIS "Only the list below");
# "all_except": everyone but listed clients (IIS "All except the list below").
ListMode = Literal["only", "all_except"]
HeloMode = Literal["off", "syntax", "fqdn", "strict"]
ReverseMode = Literal["off", "record", "require"]
ReverseStatus = Literal["unchecked", "ok", "none", "tempfail"]


@dataclass(frozen=True, slots=True)
class ReverseDns:
    """What the shell learned about the client's host name.

    status "ok": `name` has a PTR record whose A/AAAA records include the
    client's address (forward-confirmed); "none": no such name (NXDOMAIN, no
    PTR, or no forward match); "tempfail": the lookup failed or timed out;
    "unchecked": not looked up (the config did not ask for it).
    """

    status: ReverseStatus = "unchecked"
    name: str | None = None


UNCHECKED = ReverseDns()


@dataclass(frozen=True, slots=True)
class ClientList:
    """A list of clients by address/network and by reverse-DNS domain, with its mode."""

    mode: ListMode = "all_except"
    networks: NetSet = field(default_factory=NetSet)
    domains: frozenset[str] = frozenset()  # a name matches itself and its subdomains


@dataclass(frozen=True, slots=True)
class AccessRules:
    clients: ClientList = field(default_factory=ClientList)  # default: everyone may connect


@dataclass(frozen=True, slots=True)
class RelayRules:
    clients: ClientList = field(
        default_factory=lambda: ClientList("only", NetSet(["127.0.0.0/8", "::1/128"]))
    )
    authenticated: bool = True  # IIS "Allow all computers which successfully authenticate"


@dataclass(frozen=True, slots=True)
class SenderRules:
    """The sender login map: which envelope senders an authenticated user may use.

    owners[user] holds canonical addresses ("alice@example.test"), whole
    domains ("@example.test") and "*" (any sender). A user whose name is an
    address owns that address too.
    """

    enabled: bool = False
    owners: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """0 means unlimited everywhere, as in the config."""

    recipients: int = 100  # per message
    messages_per_connection: int = 0
    session_size: int = 0  # bytes of accepted message bodies per connection
    hop_count: int = 30  # Received: headers, counting ours


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-minute rates (0 = unlimited) and the failed-login slow-down and lockout."""

    connections_per_ip: int = 0
    messages_per_ip: int = 0
    messages_per_user: int = 0
    failed_logins_per_ip: int = 10
    failed_logins_per_user: int = 30
    login_delay: float = 1.0  # seconds added to the 535 reply per recent failure
    login_delay_max: float = 10.0
    lockout: float = 600.0  # seconds an address may not log in after too many failures
    ipv6_prefix: int = 64  # IPv6 clients are counted per network of this size


@dataclass(frozen=True, slots=True)
class PeerRules:
    helo: HeloMode = "off"
    reverse_dns: ReverseMode = "off"


@dataclass(frozen=True, slots=True)
class Rules:
    hostname: str = "localhost"
    access: AccessRules = field(default_factory=AccessRules)
    relay: RelayRules = field(default_factory=RelayRules)
    directory: Directory = field(default_factory=Directory)
    senders: SenderRules = field(default_factory=SenderRules)
    limits: MessageLimits = field(default_factory=MessageLimits)
    rates: RateLimits = field(default_factory=RateLimits)
    peers: PeerRules = field(default_factory=PeerRules)

    @property
    def domains(self) -> Domains:
        return self.directory.domains

    @property
    def tables(self) -> Mapping[str, RecipientTable]:
        return self.directory.tables

    @property
    def needs_reverse_dns(self) -> bool:
        """Whether the shell must look up the client's name at connect."""
        return (self.peers.reverse_dns != "off" or bool(self.access.clients.domains)
                or bool(self.relay.clients.domains))
