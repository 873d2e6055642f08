"""Server-side protocol options: what the core offers in EHLO and its limits.

Owns `ServerOptions`, a frozen value the shell builds from configuration. It
validates itself (ValueError) so that the core never meets an impossible setting.
No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_MECHANISMS = ("PLAIN", "LOGIN")


@dataclass(frozen=True)
class ServerOptions:
    """What the server side of the protocol offers and enforces.

    max_message_size: advertised with SIZE (RFC 1870); 0 means no limit (bare SIZE).
    tls_available: offer STARTTLS while the connection is not yet encrypted.
    auth_mechanisms: SASL mechanisms offered ("PLAIN", "LOGIN"); () = no AUTH at all.
    auth_requires_tls: offer and accept AUTH only inside TLS (else 538, RFC 4954 6).
    max_bad_commands: errors the core answers itself before it closes with 421
        (0 = unlimited).
    max_line_length: RFC 5321 4.5.3.1.6 text line limit in DATA, CRLF included
        (0 = unlimited).
    The boolean switches turn extensions on; a switched-off extension is neither
    advertised nor accepted (its MAIL/RCPT parameters count as unknown, 555).
    """

    hostname: str
    max_message_size: int = 10 * 1024 * 1024
    tls_available: bool = False
    auth_mechanisms: tuple[str, ...] = SUPPORTED_MECHANISMS
    auth_requires_tls: bool = True
    max_bad_commands: int = 20
    pipelining: bool = True
    eightbitmime: bool = True
    smtputf8: bool = True
    chunking: bool = True
    dsn: bool = True
    enhanced_status_codes: bool = True
    max_line_length: int = 1000

    def __post_init__(self) -> None:
        if not self.hostname or any(c.isspace() for c in self.hostname):
            raise ValueError(f"hostname must be a non-empty word, got {self.hostname!r}")
        for name in ("max_message_size", "max_bad_commands", "max_line_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for mech in self.auth_mechanisms:
            if mech not in SUPPORTED_MECHANISMS:
                raise ValueError(
                    f"unsupported SASL mechanism {mech!r}; supported: {SUPPORTED_MECHANISMS}"
                )
