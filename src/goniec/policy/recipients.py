"""Recipient tables of local domains: who exists, and where their mail goes (pure).

Owns `RecipientTable` (per local domain: mailboxes, aliases, forwards and an
optional catch-all), `accepts()`, the cheap RCPT-time test behind
`550 5.1.1 User unknown` (no backscatter: unknown users are refused in the
session, never bounced later), and `resolve()`, which expands an address to
its final local mailboxes and the outside addresses it is forwarded to. The
delivery work calls `resolve()`; it is the one implementation of aliasing.

A local domain without a table accepts every local part (IIS drop-directory
behaviour). `postmaster` is always accepted (RFC 5321 4.5.1). Keys are
`addresses.local_key` forms; targets are stored as full canonical addresses
("alice@example.test") by the builder, which also refuses tables whose
aliases point nowhere or loop. No I/O; nothing here raises on peer input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from goniec.policy.addresses import local_key, normalize_domain, split_address
from goniec.policy.domains import Domains

# Expansion depth bound: config validation refuses loops, this bounds the work anyway.
MAX_DEPTH = 20
POSTMASTER = "postmaster"


@dataclass(frozen=True, slots=True)
class RecipientTable:
    mailboxes: frozenset[str] = frozenset()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    forwards: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    catch_all: str = ""  # a full address, "" = none

    def knows(self, key: str) -> bool:
        return key in self.mailboxes or key in self.aliases or key in self.forwards


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one address goes: local mailboxes and outside addresses."""

    mailboxes: tuple[str, ...] = ()  # "local@domain", canonical (local domain, folded key)
    forwards: tuple[str, ...] = ()  # addresses outside the local domains, as configured


@dataclass(frozen=True, slots=True)
class Directory:
    """The domains and their recipient tables: everything `resolve` needs."""

    domains: Domains = field(default_factory=Domains)
    tables: Mapping[str, RecipientTable] = field(default_factory=dict)


def canonical(directory: Directory, address: str) -> str:
    """"Alice@Example.ORG" -> "alice@example.test" when example.org is an alias domain."""
    local, domain = split_address(address)
    dom = directory.domains.local_domain(domain) or normalize_domain(domain)
    return f"{local_key(local)}@{dom}" if domain else local_key(local)


def accepts(directory: Directory, local: str, local_domain: str) -> bool:
    """Does local domain `local_domain` (already resolved) have a recipient `local`?"""
    table = directory.tables.get(local_domain)
    if table is None:
        return True
    key = local_key(local)
    return table.knows(key) or key == POSTMASTER or bool(table.catch_all)


def resolve(directory: Directory, address: str) -> Resolution | None:
    """Expand `address`: None when it names an unknown recipient of a local domain.

    Aliases and forwards expand recursively (a forward to a local address is
    followed too); each address is visited once. An address outside the local
    domains is returned as a forward as is. The bare "Postmaster" resolves to
    the mailbox "postmaster".
    """
    mailboxes: list[str] = []
    forwards: list[str] = []
    seen: set[str] = set()
    pending: list[tuple[str, int]] = [(address, 0)]
    while pending:
        addr, depth = pending.pop(0)
        local, domain = split_address(addr)
        if not domain:
            if local_key(local) == POSTMASTER:
                mailboxes.append(POSTMASTER)
                continue
            if depth == 0:
                return None
            continue  # targets built from config always carry a domain
        dom = directory.domains.local_domain(domain)
        if dom is None:
            if addr not in forwards:
                forwards.append(addr)
            continue
        key = local_key(local)
        canon = f"{key}@{dom}"
        if canon in seen or depth > MAX_DEPTH:
            continue
        seen.add(canon)
        table = directory.tables.get(dom)
        targets: tuple[str, ...] | None = None
        if table is None or key in table.mailboxes:
            mailboxes.append(canon)
        elif key in table.aliases:
            targets = table.aliases[key]
        elif key in table.forwards:
            targets = table.forwards[key]
        elif table.catch_all:
            targets = (table.catch_all,)
        elif key == POSTMASTER:
            mailboxes.append(canon)  # RFC 5321 4.5.1: postmaster always exists
        elif depth == 0:
            return None
        if targets:
            pending.extend((t, depth + 1) for t in targets)
    return Resolution(tuple(mailboxes), tuple(forwards))
