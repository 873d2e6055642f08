"""Which domains this server is the destination for, and which it relays to (pure).

Owns `Domains` (IIS Domains node, reference section 8): local domains, alias
domains that stand for a local domain, and remote domains with their delivery
settings (`RemoteDomain`: relay for anyone as a backup MX, smart host, port,
login, TLS mode, HELO instead of EHLO). A remote domain may be a wildcard
"*.example.test" that matches every subdomain (not the domain itself); an
exact entry wins over a wildcard, a longer wildcard over a shorter one.

All names are stored normalised (`addresses.normalize_domain`); lookups
normalise their argument, so callers may pass what the client wrote. The
delivery work reads `remote_domain()` to route. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from goniec.policy.addresses import normalize_domain


@dataclass(frozen=True, slots=True)
class RemoteDomain:
    """Settings for mail to one remote domain (IIS "Remote domain" properties).

    relay: anyone may send to it (backup MX; overrides the relay rules).
    smart_host: "" = MX lookup; else a host name or "[ip]" to send all its mail to.
    tls: "none" | "opportunistic" | "required" | "verify" (the certificate too) |
        "implicit" (TLS from the first byte, port 465).
    username/password_file: SMTP AUTH at the smart host ("" = no login).
    use_helo: greet with HELO instead of EHLO (very old peers).
    """

    name: str
    relay: bool = False
    smart_host: str = ""
    port: int = 25
    tls: str = "opportunistic"
    username: str = ""
    password_file: str = ""
    use_helo: bool = False


@dataclass(frozen=True, slots=True)
class Domains:
    local: frozenset[str] = frozenset()
    aliases: Mapping[str, str] = field(default_factory=dict)  # alias domain -> local domain
    remote: Mapping[str, RemoteDomain] = field(default_factory=dict)  # exact names
    remote_wildcards: Mapping[str, RemoteDomain] = field(default_factory=dict)  # "*.x" as "x"

    def local_domain(self, domain: str) -> str | None:
        """The local domain `domain` stands for (itself, or an alias's target); None if remote."""
        d = normalize_domain(domain)
        if d in self.local:
            return d
        return self.aliases.get(d)

    def is_local(self, domain: str) -> bool:
        return self.local_domain(domain) is not None

    def remote_domain(self, domain: str) -> RemoteDomain | None:
        """The [remote_domains] entry that applies to `domain`, or None (plain MX routing)."""
        d = normalize_domain(domain)
        found = self.remote.get(d)
        if found is not None or not self.remote_wildcards:
            return found
        dot = d.find(".")
        while dot >= 0:
            d = d[dot + 1 :]
            found = self.remote_wildcards.get(d)
            if found is not None:
                return found
            dot = d.find(".")
        return None
