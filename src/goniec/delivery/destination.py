"""Where a message goes and how to talk there (pure, layer 1).

Owns the values the router hands to `smtp_client.deliver`: `Target` (one
address to connect to), `Destination` (the ordered targets of one next hop
plus its `Route`), `Route` (TLS mode, certificate checking, login), the two
kinds of login, and `parse_smart_host` for the smart-host syntax of IIS and
Postfix's relayhost: `host`, `host:port`, `[host]`, `[address]`,
`[address]:port`, bare IPv6 addresses. Brackets mean "no MX lookup"
(RFC 5321 5.1 is skipped; IIS: "square brackets skip the DNS lookup").
Raises `ValueError` for a malformed smart host. No I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from goniec.protocol.client_commands import PASSWORD_MECHANISMS, TOKEN_MECHANISMS

_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


class TlsMode(StrEnum):
    """TLS toward the next hop.

    NONE: never STARTTLS. OPPORTUNISTIC: STARTTLS when offered, certificate not
    checked (encryption against passive listeners; RFC 7435); a failed handshake
    is retried once on the same host without TLS, as Postfix's "may" level does.
    REQUIRED: STARTTLS must be offered and succeed, else the delivery is deferred
    (IIS's "TLS encryption" box). IMPLICIT: TLS from the first byte (port 465,
    RFC 8314 3.3).
    """

    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"
    IMPLICIT = "implicit"


@dataclass(frozen=True, slots=True)
class Target:
    """One address to try. `host` is the name to verify the certificate against
    and to send as SNI (the MX name, the smart host's name, or the address)."""

    host: str
    address: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}[{self.address}]"


class TokenProvider(Protocol):
    """Gives OAuth2 access tokens (see `goniec.delivery.oauth`)."""

    async def token(self) -> str:
        """A valid access token. Raises `OAuthError` when none can be had."""
        ...

    def invalidate(self, token: str) -> None:
        """The server refused `token`: fetch a new one next time."""
        ...


@dataclass(frozen=True, slots=True)
class PasswordLogin:
    """AUTH PLAIN / LOGIN (IIS "Basic authentication")."""

    username: str
    password: str = field(repr=False)
    mechanisms: tuple[str, ...] = PASSWORD_MECHANISMS  # in order of preference


@dataclass(frozen=True, slots=True)
class OAuth2Login:
    """AUTH XOAUTH2 / OAUTHBEARER with tokens from `tokens` (Microsoft 365)."""

    username: str
    tokens: TokenProvider = field(repr=False, compare=False)
    mechanisms: tuple[str, ...] = TOKEN_MECHANISMS


Login = PasswordLogin | OAuth2Login


@dataclass(frozen=True, slots=True)
class Route:
    """How to talk to one next hop.

    verify: check the certificate (chain and name) under REQUIRED and IMPLICIT;
        OPPORTUNISTIC never checks. ca_file: PEM bundle to trust instead of the
        system's. login: credentials, or None (IIS "Anonymous access").
    allow_plaintext_auth: send credentials without TLS (off: the delivery is
        deferred rather than leak a password; IIS sent them "in clear text").
    esmtp: False for HELO only (IIS "Send HELO instead of EHLO").
    """

    tls: TlsMode = TlsMode.OPPORTUNISTIC
    verify: bool = True
    ca_file: str | None = None
    login: Login | None = None
    allow_plaintext_auth: bool = False
    esmtp: bool = True


@dataclass(frozen=True, slots=True)
class Destination:
    """One next hop: targets in the order to try them, and the route.

    name: the pool key and log name ("example.com", "[smtp.example]:587");
    connections are reused and limited per name.
    """

    name: str
    targets: tuple[Target, ...]
    route: Route = Route()


@dataclass(frozen=True, slots=True)
class SmartHost:
    """A parsed smart host. mx: look up MX records (unbracketed names only);
    address: set when `host` is an IP address (no lookup at all)."""

    host: str
    port: int | None
    mx: bool

    @property
    def address(self) -> str | None:
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None

    def __str__(self) -> str:
        text = self.host if self.mx else f"[{self.host}]"
        return f"{text}:{self.port}" if self.port is not None else text


def parse_smart_host(text: str) -> SmartHost:
    """Parse `host`, `host:port`, `[host]`, `[address]`, `[address]:port`,
    `[IPv6:addr]` or a bare IPv6 address. Raises ValueError."""
    spec = text.strip()
    if not spec:
        raise ValueError("smart host is empty")
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ValueError(f"smart host {text!r}: missing ']'")
        host, rest = spec[1:end], spec[end + 1 :]
        if host[:5].lower() == "ipv6:":  # RFC 5321 4.1.3 address literal form
            host = host[5:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"smart host {text!r}: unexpected {rest!r} after ']'")
        port = _port(rest[1:], text) if rest else None
        return SmartHost(_host(host, text), port, mx=False)
    if spec.count(":") >= 2:  # a bare IPv6 address; a port needs brackets
        return SmartHost(_host(spec, text), None, mx=False)
    host, colon, port_text = spec.partition(":")
    port = _port(port_text, text) if colon else None
    checked = _host(host, text)
    is_ip = SmartHost(checked, None, False).address is not None
    return SmartHost(checked, port, mx=not is_ip)


def _host(host: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME_RE.fullmatch(host) or host.replace(".", "").isdigit():
        raise ValueError(f"smart host {text!r}: {host!r} is not a host name or address")
    return host.rstrip(".").lower()


def _port(port: str, text: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"smart host {text!r}: bad port {port!r}")
    return int(port)
