"""A tiny authoritative DNS server on 127.0.0.1 for tests (dnslib), UDP only.

`records` maps a name (no trailing dot, lower case) to a list of (type, value):
("PTR", "host.example"), ("A", "127.0.0.1"), ("AAAA", "::1"). A name mapped to
"SERVFAIL" answers SERVFAIL; a name not in the table answers NXDOMAIN.
"""

from __future__ import annotations

from typing import Any

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

RDATA = {"A": A, "AAAA": AAAA, "PTR": PTR}


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: dict[str, Any]) -> None:
        self.records = records
        self.queries: list[str] = []

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append(f"{name} {qtype}")
        entry = self.records.get(name)
        if entry == "SERVFAIL":
            reply.header.rcode = RCODE.SERVFAIL
        elif entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            for rtype, value in entry:
                if rtype == qtype:
                    reply.add_answer(RR(request.q.qname, getattr(QTYPE, rtype),
                                        rdata=RDATA[rtype](value), ttl=1))
        return reply


class DnsServer:
    def __init__(self, records: dict[str, Any]) -> None:
        self.resolver = _Resolver(records)
        self.server = DNSServer(self.resolver, address="127.0.0.1", port=0,
                                logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
        self.port = int(self.server.server.server_address[1])

    def __enter__(self) -> DnsServer:
        self.server.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.server.server.server_close()
