"""Reverse- and forward-path parsing (RFC 5321 4.1.2, RFC 6531 3.3).

Owns the syntax of the address inside MAIL FROM:<...> and RCPT TO:<...>:
null path, source routes (accepted, then dropped: RFC 5321 4.1.1.3 and
Appendix C), dot-atom and quoted local parts, domains and address literals,
the RFC 5321 4.5.3.1 length limits, and UTF-8 (only under SMTPUTF8).
Returns the normalized "local@domain" string (domain names lowercased, local
part and literals kept as given). Raises `AddressError`; no I/O.
"""

from __future__ import annotations

import ipaddress
import re

# RFC 5321 4.5.3.1: local part 64, domain 255, whole path 256 octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_LABEL = 63
MAX_PATH = 256


class AddressError(ValueError):
    """The path is not acceptable; `needs_utf8` marks the RFC 6531 3.5 case
    (a valid non-ASCII address without SMTPUTF8), which deserves 553 5.6.7."""

    def __init__(self, reason: str, *, needs_utf8: bool = False) -> None:
        super().__init__(reason)
        self.needs_utf8 = needs_utf8


# RFC 5321 4.1.2 grammar, extended by RFC 6531 3.3 (UTF8-non-ascii in atext,
# qtextSMTP and sub-domain). Whether non-ASCII is allowed is checked separately.
# Possessive quantifiers (Python 3.11) keep matching linear.
_U = "\u0080-\U0010ffff"
_ATOM = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_U}]++"
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*+"
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U}]|\\[\x20-\x7e])*+"'
_LABEL = rf"[A-Za-z0-9{_U}][A-Za-z0-9\-{_U}]*+"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*+"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]++\]"  # RFC 5321 dcontent, checked below

_PATH_RE = re.compile(
    rf"<(?P<adl>@{_DOMAIN}(?:,@{_DOMAIN})*+:)?"
    rf"(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_DOMAIN}|{_LITERAL})>"
)
_ADL_DOMAIN_RE = re.compile(rf"@({_DOMAIN})")  # RFC 5321 4.1.2: At-domain has no literal
_IPV4_RE = re.compile(r"\[(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\]")
# Finds the end of the path: the first ">" outside a quoted string.
_SPLIT_RE = re.compile(r'<(?:[^"\\>]|\\.|"(?:[^"\\]|\\.)*+")*+>')


def split_path(text: str) -> tuple[str, list[str]]:
    """Split the argument of MAIL FROM:/RCPT TO: into "<path>" and its parameters.

    RFC 5321 4.1.2: the path is followed by SP-separated esmtp-params.
    """
    m = _SPLIT_RE.match(text)
    if m is None:
        raise AddressError("path must be enclosed in <...>")
    rest = text[m.end() :]
    if rest and rest[0] != " ":
        raise AddressError("parameters must be separated by a space")
    return m.group(), [p for p in rest.split(" ") if p]


def parse_reverse_path(path: str, *, smtputf8: bool) -> str:
    """The MAIL FROM sender: "" for the null path "<>", else "local@domain"."""
    if path == "<>":
        return ""
    return _parse_mailbox_path(path, smtputf8)


def parse_forward_path(path: str, *, smtputf8: bool) -> str:
    """The RCPT TO recipient. "<Postmaster>" without a domain is legal
    (RFC 5321 4.1.1.3) and is returned as given, without "@"."""
    if path[1:-1].lower() == "postmaster":
        return path[1:-1]
    return _parse_mailbox_path(path, smtputf8)


def _parse_mailbox_path(path: str, smtputf8: bool) -> str:
    if len(path.encode("utf-8")) > MAX_PATH:
        raise AddressError("path too long")
    m = _PATH_RE.fullmatch(path)
    if m is None:
        raise AddressError("bad address syntax")
    local, domain = m.group("local"), m.group("domain")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    adl = m.group("adl")
    if adl is not None:
        # RFC 5321 Appendix C: check the source route's syntax, then ignore it.
        for routed in _ADL_DOMAIN_RE.findall(adl):
            _check_domain(routed)
    domain = _check_domain(domain)
    if not smtputf8 and not path.isascii():
        # RFC 6531 3.5: non-ASCII addresses need SMTPUTF8 in MAIL.
        raise AddressError("non-ASCII address without SMTPUTF8", needs_utf8=True)
    return f"{local}@{domain}"


def _check_domain(domain: str) -> str:
    """Validate a Domain or address-literal; return it normalized."""
    if domain[0] == "[":
        return _check_literal(domain)
    # MAX_DOMAIN needs no check of its own: MAX_PATH already bounds the domain.
    for label in domain.split("."):
        # RFC 5321 4.1.2 Ldh-str ends with Let-dig; RFC 1035 2.3.4: 63 octets.
        if label[-1] == "-" or len(label.encode("utf-8")) > MAX_LABEL:
            raise AddressError("bad domain label")
    return domain.lower()


def _check_literal(literal: str) -> str:
    """RFC 5321 4.1.3 address literals: IPv4 dotted quad or "IPv6:" address."""
    m = _IPV4_RE.fullmatch(literal)
    if m is not None:
        if all(int(part) <= 255 for part in m.groups()):
            return literal
        raise AddressError("bad IPv4 address literal")
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:" and "%" not in inner:
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            pass
        else:
            return literal
    # General-address-literal tags other than IPv6 are not standardized.
    raise AddressError("bad address literal")
