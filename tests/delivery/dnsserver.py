"""The loopback DNS server of the delivery tests; it lives in `goniec.testing.dnsserver`
so the end-to-end tests can use it too."""

from goniec.testing.dnsserver import Zone, ZoneServer, silent_udp_socket

__all__ = ["Zone", "ZoneServer", "silent_udp_socket"]
