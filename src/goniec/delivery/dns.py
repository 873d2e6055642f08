"""MX resolution with dnspython (layer 3): the DNS backend of the `Resolver` port.

Owns RFC 5321 5.1 as a client does it: MX records by preference (random
order among equal preferences), each MX host resolved to AAAA and A
addresses, the implicit MX (the domain's own A/AAAA) when there is no MX
record, null MX (RFC 7505) as an immediate permanent failure, dropping our
own name and everything after it from the MX list (RFC 5321 5.1, "loops back
to myself"), and smart-host lookups. The name servers, port and timeout are
explicit (`MxResolver(["127.0.0.1"], port=5353)`), so a test can never
reach the system resolver; `MxResolver.from_system()` reads resolv.conf.

Raises `LookupFailed` (see `goniec.delivery.resolver`): NXDOMAIN, or no MX
and no address, 550 5.1.2; null MX 556 5.1.10; loop 550 5.4.6; SERVFAIL,
timeouts and anything odd 451 4.4.3; MX hosts that do not resolve 451 4.4.4
(when in doubt, retry). For smart hosts every failure is made temporary.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from goniec.delivery.destination import SmartHost, Target
from goniec.delivery.outcome import soften
from goniec.delivery.resolver import LookupFailed
from goniec.errors import Reply
from goniec.policy.addresses import literal_address

DEFAULT_TIMEOUT = 10.0  # seconds for one query, retries included
DEFAULT_MAX_ADDRESSES = 10  # Postfix's smtp_mx_address_limit is 5; IPv6+IPv4 doubles it


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str
    preference: int


class _NotFound(Exception):
    """NXDOMAIN or no records of the asked type (a definite answer)."""


class _TryAgain(Exception):
    """SERVFAIL, timeout, or anything else: no definite answer."""


def _fail(code: int, enhanced: str, text: str) -> LookupFailed:
    return LookupFailed(Reply(code, enhanced, text))


def _literal(domain: str) -> str | None:
    """The address inside an RFC 5321 4.1.3 address literal, or None for a name."""
    if not domain.startswith("["):
        return None
    address = literal_address(domain)  # the one parser of literals (policy.addresses)
    if address is None:
        raise _fail(550, "5.1.2", f"bad address literal {domain}")
    return str(address)


class MxResolver:
    """Async MX and address lookups against the given name servers.

    nameservers: IP addresses of recursive resolvers (no fallback to the system's);
    port: their port; timeout: seconds per query, retries included;
    ipv4 / ipv6: which address families to use; prefer_ipv6: AAAA before A per host;
    max_addresses: targets returned at most; rng: for the shuffle among equal MX
    preferences (tests pass a seeded one); own_names: our host names, for the loop check.
    """

    def __init__(self, nameservers: Sequence[str], *, port: int = 53,
                 timeout: float = DEFAULT_TIMEOUT, ipv4: bool = True, ipv6: bool = True,
                 prefer_ipv6: bool = True, max_addresses: int = DEFAULT_MAX_ADDRESSES,
                 rng: random.Random | None = None, own_names: Collection[str] = (),
                 cache: bool = True) -> None:
        if not nameservers:
            raise ValueError("MxResolver needs at least one name server")
        if not (ipv4 or ipv6):
            raise ValueError("MxResolver needs IPv4 or IPv6")
        # configure=False: no /etc/resolv.conf, so nothing but `nameservers` is asked.
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(nameservers)
        resolver.port = port
        resolver.lifetime = timeout
        resolver.timeout = min(timeout, 2.0)  # per try; dnspython retries until lifetime
        if cache:
            resolver.cache = dns.resolver.LRUCache(10000)
        self._resolver = resolver
        families = [dns.rdatatype.AAAA, dns.rdatatype.A] if prefer_ipv6 else [
            dns.rdatatype.A, dns.rdatatype.AAAA]
        self._families = [f for f in families
                          if (f == dns.rdatatype.A and ipv4) or (f == dns.rdatatype.AAAA and ipv6)]
        self._max = max_addresses
        self._rng = rng or random.Random()
        self._own = frozenset(n.lower().rstrip(".") for n in own_names)

    @classmethod
    def from_system(cls, **kwargs: Any) -> MxResolver:
        """The name servers of /etc/resolv.conf (production default)."""
        system = dns.asyncresolver.Resolver(configure=True)
        return cls([str(ns) for ns in system.nameservers], **kwargs)

    # --- the Resolver port -------------------------------------------------------
    async def mx_targets(self, domain: str, port: int) -> list[Target]:
        literal = _literal(domain)
        if literal is not None:
            return [Target(literal, literal, port)]
        domain = domain.lower().rstrip(".")
        hosts = await self.mx_hosts(domain)
        if not hosts:
            return await self._implicit_mx(domain, port)
        found = await asyncio.gather(*(self._addresses_of(h.name) for h in hosts))
        targets: list[Target] = []
        temporary = False
        for host, result in zip(hosts, found, strict=True):
            if isinstance(result, _TryAgain):
                temporary = True
            elif not isinstance(result, _NotFound):
                targets += [Target(host.name, addr, port) for addr in result]
        targets = _unique(targets)[: self._max]
        if targets:
            return targets
        names = ", ".join(h.name for h in hosts)
        if temporary:
            raise _fail(451, "4.4.3", f"cannot resolve the MX hosts of {domain} ({names}),"
                                      " try again")
        raise _fail(451, "4.4.4", f"the MX hosts of {domain} ({names}) have no addresses")

    async def smart_host_targets(self, spec: SmartHost, default_port: int) -> list[Target]:
        port = spec.port or default_port
        if spec.address is not None:
            return [Target(spec.address, spec.address, port)]
        try:
            if spec.mx:
                return await self.mx_targets(spec.host, port)
            addresses = await self._addresses_of(spec.host)
        except LookupFailed as exc:
            # Our own configuration is wrong or DNS is down: never bounce for that.
            raise LookupFailed(soften(exc.reply)) from None
        if isinstance(addresses, _TryAgain):
            raise _fail(451, "4.4.3", f"cannot resolve smart host {spec.host}, try again")
        if isinstance(addresses, _NotFound):
            raise _fail(451, "4.4.4", f"smart host {spec.host} has no addresses")
        return [Target(spec.host, a, port) for a in addresses][: self._max]

    # --- steps -------------------------------------------------------------------
    async def mx_hosts(self, domain: str) -> list[MxHost]:
        """The MX list in the order to try; [] when the domain has no MX record."""
        try:
            answer = await self._resolver.resolve(domain, "MX", search=False,
                                                  raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise _fail(550, "5.1.2", f"Host or domain name not found. Name service error"
                                      f" for name={domain} type=MX: Host not found") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise _fail(451, "4.4.3", f"Host or domain name not found. Name service error"
                                      f" for name={domain} type=MX: {_why(exc)}, try again"
                        ) from None
        records = [(r.preference, r.exchange) for r in (answer.rrset or ())]
        if not records:
            return []  # RFC 5321 5.1: no MX, the domain itself is the implicit MX
        real = [(pref, name) for pref, name in records if name != dns.name.root]
        if not real:
            # RFC 7505 3: a single MX "." with preference 0: no mail for this domain.
            raise _fail(556, "5.1.10", f"Domain {domain} does not accept mail (null MX)")
        hosts = [MxHost(name.to_text(omit_final_dot=True).lower(), pref) for pref, name in real]
        self._rng.shuffle(hosts)  # random among equal preferences; sort() is stable
        hosts.sort(key=lambda h: h.preference)
        return self._without_self(domain, hosts)

    def _without_self(self, domain: str, hosts: list[MxHost]) -> list[MxHost]:
        # RFC 5321 5.1: if we are on the list, drop ourselves and every host at
        # our preference or worse; mail would only come back to us.
        mine = [h.preference for h in hosts if h.name in self._own]
        if not mine:
            return hosts
        kept = [h for h in hosts if h.preference < min(mine)]
        if not kept:
            raise _fail(550, "5.4.6", f"mail for {domain} loops back to myself")
        return kept

    async def _implicit_mx(self, domain: str, port: int) -> list[Target]:
        result = await self._addresses_of(domain)
        if isinstance(result, _TryAgain):
            raise _fail(451, "4.4.3", f"cannot resolve {domain}, try again")
        if isinstance(result, _NotFound):
            raise _fail(550, "5.1.2", f"Host or domain name not found: {domain} has no MX"
                                      " and no address records")
        return [Target(domain, a, port) for a in result][: self._max]

    async def _addresses_of(self, host: str) -> list[str] | _NotFound | _TryAgain:
        """AAAA and A (in preference order), asked at once; an error as a value."""
        results = await asyncio.gather(*(self._query(host, f) for f in self._families),
                                       return_exceptions=True)
        addresses: list[str] = []
        not_found: _NotFound | None = None
        try_again: _TryAgain | None = None
        for res in results:
            if isinstance(res, list):
                addresses += res
            elif isinstance(res, _NotFound):
                not_found = res
            else:
                try_again = res if isinstance(res, _TryAgain) else _TryAgain(repr(res))
        if addresses:
            return addresses
        return try_again or not_found or _TryAgain(host)

    async def _query(self, host: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
        try:
            answer = await self._resolver.resolve(host, rdtype, search=False,
                                                  raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise _NotFound(host) from None
        except (dns.exception.DNSException, OSError) as exc:
            raise _TryAgain(_why(exc)) from None
        addresses = [r.to_text() for r in (answer.rrset or ())]
        if not addresses:
            raise _NotFound(host)
        return addresses


def _why(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "server failure"
    return type(exc).__name__


def _unique(targets: list[Target]) -> list[Target]:
    seen: set[str] = set()
    out = []
    for t in targets:
        if t.address not in seen:
            seen.add(t.address)
            out.append(t)
    return out
