"""Turning the validated configuration into a `Rules` value (pure, layer 1).

Owns `build_rules(config)`: precomputes networks (`NetSet`), domain sets,
recipient tables with every alias target written as a full canonical address,
and the sender login map. It also refuses what the schema cannot see alone:
an alias whose target does not exist, an alias outside the local domains, or
an alias that expands to no mailbox at all (a loop). Those raise `RulesError`
with the key path, which `config.load` turns into one `ConfigError` line.
Reads the config only; no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from goniec.policy.addresses import local_key, split_address
from goniec.policy.domains import Domains, RemoteDomain
from goniec.policy.netset import NetSet
from goniec.policy.recipients import POSTMASTER, Directory, RecipientTable, canonical, resolve
from goniec.policy.rules import (
    AccessRules,
    ClientList,
    MessageLimits,
    PeerRules,
    RateLimits,
    RelayRules,
    Rules,
    SenderRules,
)

if TYPE_CHECKING:
    from goniec.config.schema import Config
    from goniec.config.sections import RecipientTableSection, RemoteDomainSection


class RulesError(ValueError):
    """The config is valid key by key but not as a whole; `loc` names the key."""

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


def _remote(name: str, s: RemoteDomainSection) -> RemoteDomain:
    return RemoteDomain(name=name, relay=s.relay, smart_host=s.smart_host, port=s.port,
                        tls=s.tls, username=s.username,
                        password_file=str(s.password_file) if s.password_file else "",
                        use_helo=s.use_helo)


def build_domains(config: Config) -> Domains:
    exact = {n: _remote(n, s) for n, s in config.remote_domains.items() if not n.startswith("*.")}
    wild = {n[2:]: _remote(n, s) for n, s in config.remote_domains.items() if n.startswith("*.")}
    return Domains(local=config.domains.local, aliases=dict(config.domains.aliases),
                   remote=exact, remote_wildcards=wild)


def _full(domains: Domains, domain: str, target: str) -> str:
    """A config target as a full address: "bob" -> "bob@<domain>"; alias domains mapped."""
    if "@" not in target:
        return f"{target}@{domain}"
    local, dom = split_address(target)
    return f"{local}@{domains.local_domain(dom) or dom}"


def _table(domains: Domains, domain: str, s: RecipientTableSection) -> RecipientTable:
    loc = ("recipients", domain)
    aliases = {}
    for key, targets in s.aliases.items():
        full = tuple(_full(domains, domain, t) for t in targets)
        for t in full:
            if not domains.is_local(split_address(t)[1]):
                raise RulesError(f"alias target {t!r} is outside the local domains: list it"
                                 " under forwards", (*loc, "aliases", key))
        aliases[key] = full
    forwards = {k: tuple(_full(domains, domain, t) for t in v) for k, v in s.forwards.items()}
    catch_all = _full(domains, domain, s.catch_all) if s.catch_all else ""
    return RecipientTable(s.mailboxes, aliases, forwards, catch_all)


def _exists(directory: Directory, address: str, *, catch_all: bool = True) -> bool:
    local, domain = split_address(address)
    dom = directory.domains.local_domain(domain)
    if dom is None:
        return True  # outside: the remote side decides
    table = directory.tables.get(dom)
    key = local_key(local)
    return (table is None or table.knows(key) or key == POSTMASTER
            or (catch_all and bool(table.catch_all)))


def _check(directory: Directory) -> None:
    for domain, table in directory.tables.items():
        named = [("aliases", k, v) for k, v in table.aliases.items()]
        named += [("forwards", k, v) for k, v in table.forwards.items()]
        if table.catch_all:
            named.append(("catch_all", "", (table.catch_all,)))
        for kind, key, targets in named:
            loc: tuple[str | int, ...] = ("recipients", domain, kind) + ((key,) if key else ())
            for t in targets:
                if not _exists(directory, t, catch_all=kind != "catch_all"):
                    raise RulesError(f"target {t!r} is not a mailbox, alias or forward", loc)
            start = f"{key}@{domain}" if key else targets[0]
            found = resolve(directory, start)
            if found is None or not (found.mailboxes or found.forwards):
                raise RulesError("expands to no mailbox or forward (an alias loop?)", loc)


def _owner_entry(domains: Domains, entry: str) -> str:
    if entry == "*":
        return entry
    local, domain = split_address(entry)
    dom = domains.local_domain(domain) or domain
    return f"@{dom}" if not local else f"{local}@{dom}"


def build_rules(config: Config) -> Rules:
    """The `Rules` for `config`; raises `RulesError` for inconsistent recipient tables."""
    domains = build_domains(config)
    tables = {d: _table(domains, d, s) for d, s in config.recipients.items()}
    directory = Directory(domains, tables)
    _check(directory)
    owners = {user: frozenset(_owner_entry(domains, e) for e in entries)
              for user, entries in config.auth.senders.items()}
    a, r, lim, rt = config.access, config.relay, config.limits, config.rates
    return Rules(
        hostname=config.server.hostname,
        access=AccessRules(ClientList(a.mode, NetSet(a.networks), a.domains)),
        relay=RelayRules(ClientList(r.mode, NetSet(r.networks), r.domains), r.authenticated),
        directory=directory,
        senders=SenderRules(config.auth.restrict_senders, owners),
        limits=MessageLimits(recipients=lim.recipients,
                             messages_per_connection=lim.messages_per_connection,
                             session_size=lim.session_size, hop_count=lim.hop_count),
        rates=RateLimits(
            connections_per_ip=rt.connections_per_ip, messages_per_ip=rt.messages_per_ip,
            messages_per_user=rt.messages_per_user,
            failed_logins_per_ip=rt.failed_logins_per_ip,
            failed_logins_per_user=rt.failed_logins_per_user, login_delay=rt.login_delay,
            login_delay_max=rt.login_delay_max, lockout=rt.lockout, ipv6_prefix=rt.ipv6_prefix),
        peers=PeerRules(config.peers.helo, config.peers.reverse_dns),
    )


__all__ = ["RulesError", "build_domains", "build_rules", "canonical"]
