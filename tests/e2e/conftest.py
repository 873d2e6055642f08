"""Fixtures of the end-to-end tests: the loopback DNS server that real `goniec serve`
processes resolve MX records through (never the system resolver)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from goniec.testing.dnsserver import ZoneServer


@pytest.fixture(scope="session")
def dns() -> Iterator[ZoneServer]:
    server = ZoneServer().start()
    yield server
    server.stop()


@pytest.fixture
def zone(dns: ZoneServer) -> Iterator[dict[str, Any]]:
    """The loopback zone (names ending in .test), emptied after each test."""
    yield dns.zone
    dns.zone.clear()
    dns.queries.clear()
