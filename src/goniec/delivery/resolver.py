"""The resolver port: how the router asks for the targets of a next hop (layer 2).

Owns the `Resolver` protocol and `LookupFailed`, so that the router and the
queue runner depend on this port, and only the composition root names the
DNS backend (`goniec.delivery.dns.MxResolver`), as DESIGN 2 asks. No I/O.

Errors: every method raises `LookupFailed` (an `SMTPError`): the reply is
temporary (4.4.3 DNS failure, 4.4.4 no usable host) or permanent (5.1.2 no
such domain, 5.1.10 null MX, 5.4.6 the MX list points back at us).
"""

from __future__ import annotations

from typing import Protocol

from goniec.delivery.destination import SmartHost, Target
from goniec.errors import SMTPError


class LookupFailed(SMTPError):
    """No targets: `reply` says why and whether to try again (`temporary`)."""


class Resolver(Protocol):
    async def mx_targets(self, domain: str, port: int) -> list[Target]:
        """RFC 5321 5.1: the addresses to try for mail to `domain`, best first.

        `domain` may be an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]").
        """
        ...

    async def smart_host_targets(self, spec: SmartHost, default_port: int) -> list[Target]:
        """The addresses of a smart host (MX lookup only for unbracketed names).

        A smart host is our own configuration, so every failure is temporary.
        """
        ...
