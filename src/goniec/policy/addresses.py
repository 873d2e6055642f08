"""Normal forms of domains and addresses for policy decisions (pure, layer 1).

Owns: domain normalisation (lower case, no trailing dot, IDNA A-labels, so
"Bücher.test." and "xn--bcher-kva.test" compare equal), splitting "local@domain"
at the last "@" (a quoted local part may hold "@"), the key a local part is
looked up by (quotes and backslash escapes removed, case folded), and the
routing-syntax test behind the percent hack, bang paths and quoted "@"
(RFC 5321 Appendix C and 3.6.1: we never route on the local part).

Inputs are addresses the protocol core already parsed ("local@domain", the
source route dropped). Nothing here raises on peer input; no I/O.
"""

from __future__ import annotations

import ipaddress
import re

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Characters that make a local part a route to somewhere else: "%" (the percent
# hack), "!" (UUCP bang paths) and "@" (only possible inside a quoted string).
ROUTING_CHARS = frozenset("%!@")

_ESCAPE = re.compile(r"\\(.)")


def normalize_domain(domain: str) -> str:
    """Lower case, without trailing dots, non-ASCII names IDNA-encoded (A-labels).

    Address literals ("[192.0.2.1]") are only lower-cased. A name that IDNA
    refuses stays as given, lower-cased: it then matches no configured domain.
    """
    domain = domain.rstrip(".").lower()
    if domain.isascii() or domain.startswith("["):
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def split_address(address: str) -> tuple[str, str]:
    """("local", "domain") of "local@domain"; ("Postmaster", "") for the bare
    Postmaster of RFC 5321 4.1.1.3. The domain is returned as given."""
    at = address.rfind("@")
    if at < 0:
        return address, ""
    return address[:at], address[at + 1 :]


def recipient_domain(address: str) -> str:
    """The normalised domain of "local@domain"; "" for the bare Postmaster."""
    return normalize_domain(split_address(address)[1])


def unquote_local(local: str) -> str:
    """The mailbox name a local part stands for: '"john smith"' -> 'john smith'.

    RFC 5321 4.1.2: a quoted string and the same characters as a dot-string name
    the same mailbox; backslash escapes inside quotes stand for the character.
    """
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        return _ESCAPE.sub(r"\1", local[1:-1])
    return local


def local_key(local: str) -> str:
    """How a local part is looked up in recipient tables and sender maps.

    Case-insensitive, as nearly every mail system treats local parts in
    practice (RFC 5321 2.4 allows a server to), quotes removed.
    """
    return unquote_local(local).casefold()


def has_routing_syntax(local: str) -> bool:
    """True for "user%remote", "remote!user" and '"user@remote"' local parts."""
    return not ROUTING_CHARS.isdisjoint(unquote_local(local))


def is_literal(domain: str) -> bool:
    return domain.startswith("[")


def literal_address(domain: str) -> IPAddress | None:
    """The IP of an address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]", else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return plain_ip(ipaddress.ip_address(inner))
    except ValueError:
        return None


def plain_ip(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d, a dual-stack socket) as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_domains(name: str, domains: frozenset[str]) -> bool:
    """True when `name` is one of `domains` or a subdomain of one ("a.b.test" in {"b.test"})."""
    if not domains or not name:
        return False
    name = normalize_domain(name)
    while True:
        if name in domains:
            return True
        dot = name.find(".")
        if dot < 0:
            return False
        name = name[dot + 1 :]
