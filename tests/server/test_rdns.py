"""Reverse DNS of clients: the dnspython resolver against a DNS server on 127.0.0.1,
and the real server recording, requiring and matching names."""

from __future__ import annotations

import asyncio
import email
import ipaddress
import smtplib
import socket
import time
from pathlib import Path

from dns_helper import DnsServer
from test_live import stored

from goniec.server.rdns import ReverseResolver
from goniec.testing.process import make_server

RECORDS = {
    "1.0.0.127.in-addr.arpa": [("PTR", "client.goniec.test")],
    "client.goniec.test": [("A", "127.0.0.1")],
    "2.0.0.127.in-addr.arpa": [("PTR", "liar.goniec.test")],  # forward does not match
    "liar.goniec.test": [("A", "127.0.0.99")],
    "3.0.0.127.in-addr.arpa": "SERVFAIL",
    "4.0.0.127.in-addr.arpa": [("PTR", "host.blocked.goniec.test")],
    "host.blocked.goniec.test": [("A", "127.0.0.4")],
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa":
        [("PTR", "six.goniec.test")],
    "six.goniec.test": [("AAAA", "::1")],
}


def lookup(port: int, ip: str, timeout: float = 2.0) -> tuple[str, str | None]:
    resolver = ReverseResolver(("127.0.0.1",), port, timeout)
    result = asyncio.run(resolver.lookup(ipaddress.ip_address(ip)))
    return result.status, result.name


def test_resolver_results() -> None:
    with DnsServer(RECORDS) as dns:
        assert lookup(dns.port, "127.0.0.1") == ("ok", "client.goniec.test")
        assert lookup(dns.port, "::ffff:127.0.0.1") == ("ok", "client.goniec.test")
        assert lookup(dns.port, "::1") == ("ok", "six.goniec.test")
        assert lookup(dns.port, "127.0.0.2") == ("none", None)  # PTR without a matching A
        assert lookup(dns.port, "127.0.0.5") == ("none", None)  # NXDOMAIN
        assert lookup(dns.port, "127.0.0.3") == ("tempfail", None)  # SERVFAIL


def test_resolver_times_out_without_blocking_the_loop() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        resolver = ReverseResolver(("127.0.0.1",), silent.getsockname()[1], 0.5)

        async def both() -> tuple[str, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            result = await resolver.lookup(ipaddress.ip_address("127.0.0.1"))
            task.cancel()
            return result.status, ticks

        start = time.monotonic()
        status, ticks = asyncio.run(both())
        assert status == "tempfail"
        assert 0.4 < time.monotonic() - start < 3
        assert ticks > 10  # the event loop kept running meanwhile
    finally:
        silent.close()


def greet(port: int, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as s:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(1024)
            if not chunk:
                break
            data += chunk
        return data


def test_server_requires_and_records_reverse_dns(tmp_path: Path) -> None:
    with DnsServer(RECORDS) as dns:
        server = make_server(
            tmp_path, listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
            peers={"reverse_dns": "require"},
            access={"mode": "all_except", "domains": ["blocked.goniec.test"]},
            dns={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2},
        ).start()
        try:
            assert greet(server.port, "127.0.0.1").startswith(b"220 ")
            assert greet(server.port, "127.0.0.2").startswith(b"554 5.7.25")
            assert greet(server.port, "127.0.0.5").startswith(b"554 5.7.25")
            assert greet(server.port, "127.0.0.3").startswith(b"421 4.7.25 mx.goniec.test")
            assert greet(server.port, "127.0.0.4").startswith(b"554 5.7.1")
            with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as s:
                s.ehlo("helo.goniec.test")
                s.mail("a@goniec.test")
                s.rcpt("b@goniec.test")
                code, text = s.data(b"Subject: rdns\r\n\r\nhi\r\n")
                assert code == 250
            qid = text.decode().rsplit(" ", 1)[1]
            received = email.message_from_bytes(stored(server, qid))["Received"]
            assert "from helo.goniec.test (client.goniec.test [127.0.0.1])" in received
            assert "stage=connect client=127.0.0.2 reply=\"554 5.7.25" in server.log()
        finally:
            server.stop()


def test_record_only_never_refuses(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        server = make_server(
            tmp_path, listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
            peers={"reverse_dns": "record"},
            dns={"nameservers": ["127.0.0.1"], "port": silent.getsockname()[1], "timeout": 0.3},
        ).start()
        try:
            start = time.monotonic()
            assert greet(server.port, "127.0.0.1").startswith(b"220 ")
            assert time.monotonic() - start < 3  # bounded by the DNS timeout
        finally:
            server.stop()
    finally:
        silent.close()
