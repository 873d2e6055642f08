"""A DNS server on loopback for the mail authentication tests (dnslib, UDP, in a thread).

`ZoneServer.zone` maps a lower-case name to an ordered list of records:

    {"example.test": [("TXT", "v=spf1 ip4:192.0.2.1 -all"), ("MX", (10, "mx.example.test"))],
     "alias.example.test": [("CNAME", "example.test")],
     "broken.test": ["SERVFAIL"], "slow.test": ["DROP"]}

TXT/SPF values are a string or a list of strings (one record, several
character-strings); strings over 255 octets are split. A name not in the zone
is NXDOMAIN; a name without records of the asked type is NOERROR/NODATA.
"SERVFAIL" or "TIMEOUT" in a name's list answers SERVFAIL for any type not
listed before it (the RFC 7208 suite's TIMEOUT, made fast); "DROP" never
answers. CNAME chains are followed as a recursive resolver would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSServer

Zone = dict[str, list[Any]]


class _Quiet:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class ZoneServer(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone | None = None, port: int = 0) -> None:
        self.zone: Zone = zone if zone is not None else {}
        # Entries for names not in the zone (None: NXDOMAIN), e.g. the RFC 7208
        # suite's rule that "error.*" names time out.
        self.missing: Callable[[str], list[Any] | None] = lambda name: None
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = DNSServer(self, address="127.0.0.1", port=port, logger=_Quiet())
        self.port: int = self._server.server.server_address[1]

    def start(self) -> ZoneServer:
        self._server.start_thread()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()

    def add(self, name: str, rtype: str, value: Any) -> None:
        self.zone.setdefault(name.lower().rstrip("."), []).append((rtype, value))

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        # The raw labels, not str(qname), which escapes spaces and the like.
        name = b".".join(request.q.qname.label).decode("utf-8", "replace").lower()
        qtype = QTYPE[request.q.qtype]
        with self._lock:
            self.queries.append((name, qtype))
        seen: set[str] = set()
        while name not in seen:  # follow CNAME chains; a loop ends with what we have
            seen.add(name)
            entries = self.zone.get(name)
            if entries is None:
                entries = self.missing(name)
            if entries is None:
                if not reply.rr:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            cname = next((v for t, v in _records(entries) if t == "CNAME"), None)
            if cname is not None and qtype != "CNAME":
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(cname), ttl=60))
                name = cname.rstrip(".").lower()
                continue
            for entry in entries:
                if entry == "DROP":
                    raise DNSError("dropped on purpose")
                if entry in ("SERVFAIL", "TIMEOUT"):
                    if not any(r.rtype == getattr(QTYPE, qtype, -1) for r in reply.rr):
                        reply.header.rcode = RCODE.SERVFAIL
                    break
                rtype, value = entry
                if rtype == qtype:
                    reply.add_answer(RR(name, getattr(QTYPE, rtype), rdata=_rdata(rtype, value),
                                        ttl=60))
            return reply
        return reply


def _records(entries: list[Any]) -> list[tuple[str, Any]]:
    return [e for e in entries if isinstance(e, tuple)]


def _strings(value: str | list[str]) -> list[bytes]:
    parts = [value] if isinstance(value, str) else list(value)
    out: list[bytes] = []
    for part in parts:
        data = part.encode("utf-8")
        out += [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    # A TXT record needs at least one string (RFC 1035 3.3.14); the nearest legal
    # form of the suite's illegal empty record is one empty string.
    return out or [b""]


def _rdata(rtype: str, value: Any) -> Any:
    if rtype == "MX":
        preference, exchange = value
        return MX(exchange, int(preference))
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype in ("TXT", "SPF"):
        return TXT(_strings(value))
    if rtype == "PTR":
        return PTR(value)
    if rtype == "CNAME":
        return CNAME(value)
    raise ValueError(rtype)
