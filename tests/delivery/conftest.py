"""Fixtures of the delivery tests: a loopback DNS server, TLS material, and a guard
that makes any use of the system resolver or a non-loopback name fail the test."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
import trustme

from .dnsserver import ZoneServer, silent_udp_socket

_real_getaddrinfo = socket.getaddrinfo
_LOOPBACK_NAMES = {"127.0.0.1", "::1", "localhost"}


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name not in _LOOPBACK_NAMES:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
        except OSError:
            raise AssertionError(f"a delivery test tried to resolve {name!r} "
                                 "outside the loopback DNS server") from None
    return _real_getaddrinfo(host, *args, **kwargs)


def _no_resolv_conf(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a delivery test tried to read the system resolver configuration")


@pytest.fixture(autouse=True)
def _only_loopback_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    monkeypatch.setattr(dns.resolver.BaseResolver, "read_resolv_conf", _no_resolv_conf)


@pytest.fixture(scope="session")
def dns_server() -> Iterator[ZoneServer]:
    server = ZoneServer().start()
    yield server
    server.stop()


@pytest.fixture
def zone(dns_server: ZoneServer) -> Iterator[dict[str, Any]]:
    """The loopback zone, emptied after each test."""
    yield dns_server.zone
    dns_server.zone.clear()


@pytest.fixture
def silent_dns_port() -> Iterator[int]:
    sock = silent_udp_socket()
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def other_ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("otherca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
