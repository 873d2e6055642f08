"""A set of IP networks with a fast membership test (pure, layer 1).

Owns `NetSet`: the networks of one list (access, relay), merged into sorted,
non-overlapping integer ranges per address family, so a lookup is one binary
search however long the list is. An IPv4-mapped IPv6 client (::ffff:a.b.c.d on
a dual-stack socket) matches the IPv4 networks as a.b.c.d, and IPv6 networks
that contain it as written (as `ipaddress` does). No I/O.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable

from goniec.policy.addresses import IPAddress, IPNetwork, plain_ip


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ranges.sort()
    starts: list[int] = []
    ends: list[int] = []
    for first, last in ranges:
        if ends and first <= ends[-1] + 1:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    return tuple(starts), tuple(ends)


def _within(ranges: tuple[tuple[int, ...], tuple[int, ...]], x: int) -> bool:
    starts, ends = ranges
    i = bisect_right(starts, x) - 1
    return i >= 0 and x <= ends[i]


class NetSet:
    """Immutable set of networks; `ip in netset`."""

    __slots__ = ("networks", "_v4", "_v6")

    def __init__(self, networks: Iterable[IPNetwork | str] = ()) -> None:
        nets = tuple(
            ipaddress.ip_network(n) if isinstance(n, str) else n for n in networks
        )
        self.networks: tuple[IPNetwork, ...] = nets
        v4 = [(int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == 4]
        v6 = [(int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == 6]
        self._v4 = _merge(v4)
        self._v6 = _merge(v6)

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(ip)
            except ValueError:
                return False
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        addr: IPAddress = plain_ip(ip)
        if addr is not ip and _within(self._v4, int(addr)):
            return True  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d (a dual-stack socket)
        return _within(self._v4 if ip.version == 4 else self._v6, int(ip))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __len__(self) -> int:
        return len(self.networks)

    def __repr__(self) -> str:
        return f"NetSet({[str(n) for n in self.networks]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetSet) and (self._v4, self._v6) == (other._v4, other._v6)

    def __hash__(self) -> int:
        return hash((self._v4, self._v6))
