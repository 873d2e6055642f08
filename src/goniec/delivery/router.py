"""Where each recipient's mail goes: local, a per-domain route, the smart host, or MX (pure).

Owns `RoutingTable` (the facts: local and alias domains, remote-domain routes,
the smart host and the outbound defaults, with logins already loaded by the
shell) and `route()`, which maps a recipient domain to one decision, in the
order IIS applies them (reference sections 5.4 and 8):

1. a local or alias domain -> `LocalRoute` (Maildir or Drop folder);
2. a remote-domain entry (exact name, else the longest "*." wildcard) ->
   its smart host, or MX with that entry's TLS/login/HELO settings;
3. a configured smart host -> the smart host; with "attempt direct delivery
   first", MX with the smart host as `fallback` for what MX defers;
4. otherwise MX (RFC 5321 5.1; the resolver does the lookup).

`RemoteRoute.key` says which recipients share one SMTP transaction: all
recipients for one smart host travel together, MX recipients per domain.
No I/O; raises nothing (an unknown domain is routed by MX like any other).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from goniec.delivery.destination import Route, SmartHost, TlsMode
from goniec.policy.addresses import normalize_domain
from goniec.policy.domains import Domains, RemoteDomain


@dataclass(frozen=True, slots=True)
class LocalRoute:
    domain: str  # the local domain (an alias domain already mapped to its target)


@dataclass(frozen=True, slots=True)
class RemoteRoute:
    """Deliver over SMTP. next_hop None means MX of `domain`; else that smart host."""

    domain: str
    next_hop: SmartHost | None
    route: Route
    port: int
    fallback: RemoteRoute | None = None
    via: str = "mx"  # "mx" | "route" (a [remote_domains] entry) | "smart_host": for logs

    @property
    def key(self) -> tuple[object, ...]:
        hop = ("mx", self.domain) if self.next_hop is None else ("host", str(self.next_hop))
        return (*hop, self.port, self.route, self.fallback)


Decision = LocalRoute | RemoteRoute


@dataclass(frozen=True, slots=True)
class DomainRoute:
    """A [remote_domains] entry made ready: its next hop parsed, its login loaded."""

    next_hop: SmartHost | None
    port: int
    route: Route


@dataclass(frozen=True, slots=True)
class RoutingTable:
    domains: Domains = field(default_factory=Domains)
    routes: Mapping[str, DomainRoute] = field(default_factory=dict)  # by RemoteDomain.name
    smart_host: SmartHost | None = None
    smart_host_route: Route = Route(tls=TlsMode.REQUIRED, verify=True)
    direct_first: bool = False
    mx_route: Route = Route(tls=TlsMode.OPPORTUNISTIC, verify=False)
    port: int = 25


def tls_route(level: str, *, esmtp: bool = True, login: object = None,
              ca_file: str | None = None) -> Route:
    """A `Route` from a config TLS level: none / opportunistic / required / verify / implicit."""
    mode = {"none": TlsMode.NONE, "opportunistic": TlsMode.OPPORTUNISTIC,
            "required": TlsMode.REQUIRED, "verify": TlsMode.REQUIRED,
            "implicit": TlsMode.IMPLICIT}[level]
    verify = level in ("verify", "implicit")
    return Route(tls=mode, verify=verify, ca_file=ca_file, login=login,  # type: ignore[arg-type]
                 esmtp=esmtp)


def domain_of(address: str) -> str:
    """The normalised domain of "local@domain"; "" for the bare "Postmaster"."""
    at = address.rfind("@")
    return normalize_domain(address[at + 1:]) if at >= 0 else ""


def route(domain: str, table: RoutingTable) -> Decision:
    """The decision for mail to `domain` (as written in the address; normalised here)."""
    if not domain:  # RFC 5321 4.1.1.3: the bare "Postmaster" is ours
        return LocalRoute(next(iter(sorted(table.domains.local)), "localhost"))
    d = normalize_domain(domain)
    local = table.domains.local_domain(d)
    if local is not None:
        return LocalRoute(local)
    entry: RemoteDomain | None = table.domains.remote_domain(d)
    if entry is not None:
        found = table.routes.get(entry.name)
        if found is not None and (found.next_hop is not None or _own_settings(entry)):
            return RemoteRoute(d, found.next_hop, found.route, found.port, via="route")
    if table.smart_host is not None:
        smart = RemoteRoute(d, table.smart_host, table.smart_host_route, table.port,
                            via="smart_host")
        if table.direct_first:
            return RemoteRoute(d, None, table.mx_route, table.port, fallback=smart)
        return smart
    return RemoteRoute(d, None, table.mx_route, table.port)


def _own_settings(entry: RemoteDomain) -> bool:
    """A remote-domain entry without a smart host still routes when it changes how to talk
    (TLS, login, HELO, port); one that only allows relaying leaves routing alone."""
    return (entry.tls != "opportunistic" or bool(entry.username) or entry.use_helo
            or entry.port != 25)
