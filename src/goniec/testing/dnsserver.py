"""A DNS server on loopback for tests (dnslib, UDP, in a thread): MX, A, AAAA, CNAME.

Used by the delivery tests and the end-to-end tests, which point `[dns]` of a
real `goniec serve` at it. dnslib is a test dependency; production code never
imports this module.

`ZoneServer.zone` maps a lower-case name to its records, or to "SERVFAIL":

    {"example.test": {"MX": [(10, "mx1.example.test")]},
     "mx1.example.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
     "alias.example.test": {"CNAME": "mx1.example.test"},
     "broken.test": "SERVFAIL"}

A name that is not in the zone is NXDOMAIN; a name without records of the asked
type is NOERROR/NODATA. `silent_udp_socket()` gives a port where nobody answers.
"""

from __future__ import annotations

import socket
from typing import Any

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer

Zone = dict[str, Any]


class _Quiet:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class ZoneServer(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.zone: Zone = {}
        self.queries: list[tuple[str, str]] = []
        self._server = DNSServer(self, address="127.0.0.1", port=0, logger=_Quiet())
        self.port: int = self._server.server.server_address[1]

    def start(self) -> ZoneServer:
        self._server.start_thread()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        for _ in range(8):  # follow CNAME chains, as a recursive resolver would
            entry = self.zone.get(name)
            if entry is None:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            if entry == "SERVFAIL":
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            if "CNAME" in entry and qtype != "CNAME":
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(entry["CNAME"]), ttl=60))
                name = entry["CNAME"].rstrip(".").lower()
                continue
            for value in entry.get(qtype, []):
                reply.add_answer(RR(name, getattr(QTYPE, qtype), rdata=_rdata(qtype, value),
                                    ttl=60))
            return reply
        reply.header.rcode = RCODE.SERVFAIL
        return reply


def _rdata(qtype: str, value: Any) -> Any:
    if qtype == "MX":
        preference, exchange = value
        return MX(exchange, preference)
    if qtype == "A":
        return A(value)
    if qtype == "AAAA":
        return AAAA(value)
    raise ValueError(qtype)


def silent_udp_socket() -> socket.socket:
    """A bound UDP socket on 127.0.0.1 that never answers (a dead name server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock
