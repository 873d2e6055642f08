"""Reverse DNS of clients, forward-confirmed, without blocking the event loop (layer 3).

Owns `ReverseResolver`: a PTR lookup of the client's address, then an A or
AAAA lookup of each name found (at most a few), and the first name whose
addresses include the client's is the answer ("forward-confirmed reverse
DNS", as Postfix and most MTAs use it: anyone can publish any PTR name for
their own addresses). dnspython's asyncio resolver does the work, with the
configured name servers, port and timeout; the whole lookup is bounded by
the timeout. Results are `policy.rules.ReverseDns` values:

- "ok" with the name; "none" for NXDOMAIN, no PTR or no confirming address;
- "tempfail" for a timeout, SERVFAIL or any other failure: a temporary
  condition that policy answers with 4xx, never a silent accept.

dnspython is imported only when a resolver is made, i.e. only when the
config asks for reverse DNS. Raises nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from goniec.obs.log import format_value
from goniec.policy.addresses import IPAddress, plain_ip
from goniec.policy.rules import ReverseDns

MAX_NAMES = 5  # PTR names tried for forward confirmation
CACHE_SIZE = 10_000


class ReverseResolver:
    def __init__(self, nameservers: tuple[str, ...] = (), port: int = 53,
                 timeout: float = 5.0) -> None:
        import dns.asyncresolver
        import dns.resolver

        try:
            resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        except Exception as exc:  # no usable /etc/resolv.conf: every lookup fails, as 4xx
            logging.getLogger("goniec.server").warning(
                "event=dns_config_error error=%s", format_value(str(exc)))
            resolver = dns.asyncresolver.Resolver(configure=False)
        if nameservers:
            resolver.nameservers = list(nameservers)
        resolver.port = port
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)
        self._resolver: Any = resolver
        self.timeout = timeout

    async def lookup(self, ip: IPAddress) -> ReverseDns:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._lookup(plain_ip(ip))
        except TimeoutError:
            return ReverseDns("tempfail")
        except Exception:  # DESIGN 1.5: anything unexpected is temporary
            return ReverseDns("tempfail")

    async def _lookup(self, ip: IPAddress) -> ReverseDns:
        import dns.exception
        import dns.resolver

        absent = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)
        try:
            answer = await self._resolver.resolve_address(str(ip))
        except absent:
            return ReverseDns("none")
        except dns.exception.DNSException:
            return ReverseDns("tempfail")
        names = [rr.target.to_text(omit_final_dot=True).lower() for rr in answer][:MAX_NAMES]
        rdtype = "A" if ip.version == 4 else "AAAA"
        failed = False
        for name in names:
            try:
                forward = await self._resolver.resolve(name, rdtype)
            except absent:
                continue
            except dns.exception.DNSException:
                failed = True
                continue
            if any(ipaddress.ip_address(rr.address) == ip for rr in forward):
                return ReverseDns("ok", name)
        return ReverseDns("tempfail" if failed else "none")
