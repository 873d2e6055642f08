"""Fixtures for the mail authentication tests: a loopback DNS server, views on it, keys.

Every lookup goes to a `ZoneServer` on 127.0.0.1 (or to a UDP socket on
127.0.0.1 that never answers); the system resolver is never asked.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from goniec.mailauth.dnsview import DnsSettings, DnsView
from goniec.mailauth.keys import DkimKey, generate, public_record

from .dnsserver import ZoneServer


@pytest.fixture(scope="session")
def _shared_server() -> Iterator[ZoneServer]:
    # One server for the session (stopping one takes half a second); each test
    # gets it with an empty zone.
    server = ZoneServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dns_server(_shared_server: ZoneServer) -> ZoneServer:
    _shared_server.zone = {}
    _shared_server.missing = lambda name: None
    _shared_server.queries.clear()
    return _shared_server


@pytest.fixture
def view(dns_server: ZoneServer) -> DnsView:
    return DnsView(DnsSettings(("127.0.0.1",), dns_server.port, 1.0))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 where nobody answers (a dead name server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture(scope="session")
def rsa_key() -> DkimKey:
    return DkimKey("example.test", "rsa1", generate("rsa"))


@pytest.fixture(scope="session")
def ed_key() -> DkimKey:
    return DkimKey("example.test", "ed1", generate("ed25519"))


def publish(server: ZoneServer, key: DkimKey) -> None:
    """Put the key's public record at selector._domainkey.domain."""
    server.add(f"{key.selector}._domainkey.{key.domain}", "TXT", public_record(key.private_key))


def make_message(sender: str = "alice@example.test", to: str = "bob@goniec.test",
                 subject: str = "Hello", body: str = "Hello Bob.\r\nSee you.\r\n") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            "Message-ID: <1234@example.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()
