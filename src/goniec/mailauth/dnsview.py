"""The DNS facts of mail authentication (layer 3): TXT, MX and address lookups.

Owns the one resolver configuration that SPF, DKIM, DMARC, ARC and
`goniec dns check` use: explicit name servers, port and timeout, exactly as
`goniec.delivery.dns.MxResolver` builds its resolver
(`dns.asyncresolver.Resolver(configure=False)`, so a test can never reach the
system resolver; an empty `nameservers` means /etc/resolv.conf, as the
`[dns]` config section says). Two faces share one answer cache:

- async lookups (`txt`, `mx`, `addresses`) for the event loop: DKIM and ARC
  keys, DMARC policy records and the DNS check;
- `spf_lookup`, a blocking lookup in the shape pyspf's `DNSLookup` hook
  wants, for SPF evaluation running in a worker thread (pyspf walks the
  record itself, so its lookups cannot be prefetched).

Every answer is a value, never an exception: "ok" with records, "none"
(NXDOMAIN or no records of the type: a definite answer) or "temperror"
(timeout, SERVFAIL, anything else). `spf_lookup` raises `spf.TempError`, the
hook's contract. Must not: import the server, the queue or policy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

T = TypeVar("T")
Status = Literal["ok", "none", "temperror"]

DEFAULT_TIMEOUT = 5.0  # seconds for one lookup, retries included
PER_TRY = 2.0  # seconds per try; dnspython retries until the lifetime is used up
CACHE_SIZE = 10_000
EDNS_PAYLOAD = 1232  # DNS flag day 2020: avoids fragmentation, fits DKIM keys and SPF
# A name that cannot exist (bad label, not encodable) is as absent as NXDOMAIN.
_NO_SUCH_NAME = (dns.resolver.NXDOMAIN, dns.name.NameTooLong, dns.name.LabelTooLong,
                 dns.name.EmptyLabel, dns.name.IDNAException)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """Where to ask: name servers (IP addresses; () = resolv.conf), port, timeout per lookup."""

    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_config(cls, section: Any) -> DnsSettings:
        """From the `[dns]` config section (anything with nameservers, port, timeout)."""
        return cls(tuple(section.nameservers), int(section.port), float(section.timeout))


@dataclass(frozen=True, slots=True)
class DnsAnswer(Generic[T]):
    """One lookup's outcome: status, the records (in answer order), why it failed."""

    status: Status
    values: tuple[T, ...] = ()
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _configure(resolver: Any, settings: DnsSettings, cache: Any) -> None:
    if settings.nameservers:
        resolver.nameservers = list(settings.nameservers)
    resolver.port = settings.port
    resolver.lifetime = settings.timeout
    resolver.timeout = min(settings.timeout, PER_TRY)
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    resolver.cache = cache


def _cname_loop(exc: BaseException) -> bool:
    """A CNAME loop or an endless chain: a permanent fault of the zone, so no data
    (RFC 1034 3.6.2; RFC 7208 5.5 skips such names), not a temporary error."""
    errors = getattr(exc, "kwargs", {}).get("errors") or []
    return bool(errors) and all(isinstance(e[3], dns.message.ChainTooLong) for e in errors)


def why(exc: BaseException) -> str:
    """A short reason for a failed lookup, for logs and result comments."""
    if isinstance(exc, dns.exception.Timeout):
        return "DNS timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "DNS server failure"
    return f"DNS error ({type(exc).__name__})"


class DnsView:
    """Async and blocking lookups against the configured name servers, one shared cache."""

    def __init__(self, settings: DnsSettings, *, cache: bool = True) -> None:
        self.settings = settings
        shared = dns.resolver.LRUCache(CACHE_SIZE) if cache else None
        # configure=False: nothing from /etc/resolv.conf unless no servers are given.
        configure = not settings.nameservers
        self._async = dns.asyncresolver.Resolver(configure=configure)
        self._sync = dns.resolver.Resolver(configure=configure)
        _configure(self._async, settings, shared)
        _configure(self._sync, settings, shared)

    # --- async, for the event loop -------------------------------------------------
    async def _resolve(self, name: str, rdtype: str) -> DnsAnswer[Any]:
        try:
            answer = await self._async.resolve(name, rdtype, search=False,
                                               raise_on_no_answer=False)
        except _NO_SUCH_NAME:
            return DnsAnswer("none", (), "no such domain")
        except (dns.exception.DNSException, OSError) as exc:
            if _cname_loop(exc):
                return DnsAnswer("none", (), "CNAME loop")
            return DnsAnswer("temperror", (), why(exc))
        records = tuple(answer.rrset or ())
        return DnsAnswer("ok", records) if records else DnsAnswer("none", (), "no records")

    async def txt(self, name: str) -> DnsAnswer[bytes]:
        """TXT records of `name`, each one's strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        got = await self._resolve(name, "TXT")
        return DnsAnswer(got.status, tuple(b"".join(r.strings) for r in got.values), got.reason)

    async def mx(self, name: str) -> DnsAnswer[tuple[int, str]]:
        """MX records as (preference, exchange without the final dot), best first."""
        got = await self._resolve(name, "MX")
        values = sorted((r.preference, r.exchange.to_text(omit_final_dot=True).lower())
                        for r in got.values)
        return DnsAnswer(got.status, tuple(values), got.reason)

    async def addresses(self, name: str) -> DnsAnswer[str]:
        """A and AAAA addresses of `name` ("temperror" only if neither gave an answer)."""
        v4, v6 = await asyncio.gather(self._resolve(name, "A"), self._resolve(name, "AAAA"))
        values = tuple(r.to_text() for r in v4.values + v6.values)
        if values:
            return DnsAnswer("ok", values)
        failed = v4 if v4.status == "temperror" else v6
        return DnsAnswer(failed.status, (), failed.reason or v4.reason)

    # --- blocking, for pyspf in a worker thread --------------------------------------
    def spf_lookup(self, name: str, qtype: str, deadline: float | None = None
                   ) -> list[tuple[tuple[str, str], Any]]:
        """pyspf's `DNSLookup` contract: [((name, type), value), ...]; [] for no data.

        Values: A/AAAA address text, MX (preference, exchange), PTR name, TXT/SPF
        tuple of byte strings. A timeout or server failure raises `spf.TempError`;
        so does a `deadline` (time.monotonic()) already passed.
        """
        import spf

        lifetime = self.settings.timeout
        if deadline is not None:
            lifetime = min(lifetime, deadline - time.monotonic())
            if lifetime <= 0:
                raise spf.TempError("DNS time limit for this SPF check exceeded")
        try:
            answer = self._sync.resolve(name, qtype, search=False, raise_on_no_answer=False,
                                        lifetime=lifetime)
        except (*_NO_SUCH_NAME, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, OSError) as exc:
            if _cname_loop(exc):
                return []
            raise spf.TempError(f"{why(exc)} for {name} {qtype}") from None
        key = (name, qtype)
        return [(key, _spf_value(qtype, r)) for r in (answer.rrset or ())]


def _spf_value(qtype: str, rdata: Any) -> Any:
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
    if qtype in ("PTR", "CNAME"):
        return rdata.target.to_text(omit_final_dot=True)
    if qtype in ("TXT", "SPF"):
        return tuple(rdata.strings)
    return rdata.to_text()

