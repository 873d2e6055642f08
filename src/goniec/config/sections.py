"""Config sections of the access and relay rules (layer 1, part of the schema).

Owns the keys of [access], [relay], [domains], [recipients."<domain>"],
[remote_domains."<domain>"], [rates], [peers] and [dns]: types, defaults and
the checks of single sections. Checks that span sections (a recipient table
for a domain that is not local, an alias that points nowhere) live in
`schema.Config` and `policy.build`. Reads no files. Raises `ValueError` /
`SchemaValueError` through pydantic, like `schema`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from goniec.config.values import (
    IPNetwork,
    SchemaValueError,
    normalize_domain,
    parse_domains,
    parse_networks,
    parse_seconds,
    quote,
)

Domains = Annotated[frozenset[str], BeforeValidator(parse_domains)]
Networks = Annotated[tuple[IPNetwork, ...], BeforeValidator(parse_networks)]
Count = Annotated[int, Field(strict=True, ge=0)]
Seconds = Annotated[float, BeforeValidator(parse_seconds)]
ListMode = Literal["only", "all_except"]


def _zero_or_seconds(value: object) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return parse_seconds(value)


DelaySeconds = Annotated[float, BeforeValidator(_zero_or_seconds)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- paths


def base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    base = ctx.get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def resolve_path(raw: str, info: ValidationInfo) -> Path:
    path = Path(raw).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base_dir(info) / path))


def optional_path(v: object, info: ValidationInfo) -> Path | None:
    if v is None or v == "":
        return None
    if isinstance(v, Path):
        v = str(v)
    if not isinstance(v, str):
        raise ValueError(f"must be a path string (got {quote(v)})")
    return resolve_path(v, info)


class AccessSection(_Section):
    """IIS "Connection control": who may connect at all."""

    mode: ListMode = "all_except"
    networks: Networks = ()
    domains: Domains = frozenset()


class RelaySection(_Section):
    """IIS "Relay restrictions": who may send to domains that are not ours."""

    mode: ListMode = "only"
    networks: Networks = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )
    domains: Domains = frozenset()
    authenticated: StrictBool = True

    def trusts(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True when `ip` is inside one of `networks` (IPv4-mapped IPv6 counts as IPv4)."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks if net.version == addr.version)


def _domain_key(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a domain name (got {quote(v)})")
    try:
        return normalize_domain(v)
    except ValueError as exc:
        raise ValueError(f"{quote(v)} {exc}") from None


def _parse_alias_domains(v: object) -> dict[str, str]:
    if not isinstance(v, dict):
        raise ValueError('must be a table of alias = "local domain", e.g. {"example.org" ='
                         ' "example.test"}')
    out: dict[str, str] = {}
    for key, target in v.items():
        try:
            out[_domain_key(key)] = _domain_key(target)
        except ValueError as exc:
            raise SchemaValueError(str(exc), (str(key),)) from None
    return out


class DomainsSection(_Section):
    """IIS Domains node: local domains, alias domains."""

    local: Domains = frozenset({"localhost"})
    aliases: Annotated[dict[str, str], BeforeValidator(_parse_alias_domains)] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _check_aliases(self) -> DomainsSection:
        for alias, target in self.aliases.items():
            if alias in self.local:
                raise SchemaValueError(f"{quote(alias)} is a local domain already; an alias"
                                       " domain stands for another one", ("aliases", alias))
            if target not in self.local:
                raise SchemaValueError(f"{quote(target)} is not in domains.local",
                                       ("aliases", alias))
        return self

    def is_local(self, domain: str) -> bool:
        try:
            d = normalize_domain(domain)
        except ValueError:
            return False
        return d in self.local or d in self.aliases


# A local part as the config names it: no "@", no spaces or control characters.
_LOCAL_RE = re.compile(r"[^\s@\"\\\x00-\x1f\x7f]{1,64}")


def _local_part(v: object) -> str:
    if not isinstance(v, str) or not _LOCAL_RE.fullmatch(v):
        raise ValueError(f"must be a local part (1 to 64 characters, no \"@\", quotes or"
                         f" spaces) (got {quote(v)})")
    return v.casefold()


def _target(v: object) -> str:
    """A local part of the same domain, or a full address (domain normalised)."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a local part or an address (got {quote(v)})")
    local, at, domain = v.rpartition("@")
    if not at:
        return _local_part(v)
    return f"{_local_part(local)}@{_domain_key(domain)}"


def _parse_targets(v: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(v, dict):
        raise ValueError('must be a table of name = ["target", ...]')
    out: dict[str, tuple[str, ...]] = {}
    for key, targets in v.items():
        items = [targets] if isinstance(targets, str) else targets
        try:
            name = _local_part(key)
            if not isinstance(items, list | tuple) or not items:
                raise ValueError(f"must be an address or a non-empty array (got {quote(targets)})")
            out[name] = tuple(_target(t) for t in items)
        except ValueError as exc:
            raise SchemaValueError(str(exc), (str(key),)) from None
    return out


def _parse_mailboxes(v: object) -> frozenset[str]:
    if not isinstance(v, list | tuple | set | frozenset):
        raise ValueError('must be an array of local parts, e.g. ["alice", "bob"]')
    out = set()
    for i, item in enumerate(v):
        try:
            out.add(_local_part(item))
        except ValueError as exc:
            raise SchemaValueError(str(exc), (i,)) from None
    return frozenset(out)


class RecipientTableSection(_Section):
    """Who exists in one local domain. Keys are compared case-insensitively."""

    mailboxes: Annotated[frozenset[str], BeforeValidator(_parse_mailboxes)] = frozenset()
    aliases: Annotated[dict[str, tuple[str, ...]], BeforeValidator(_parse_targets)] = Field(
        default_factory=dict)
    forwards: Annotated[dict[str, tuple[str, ...]], BeforeValidator(_parse_targets)] = Field(
        default_factory=dict)
    catch_all: StrictStr = ""

    @field_validator("catch_all")
    @classmethod
    def _check_catch_all(cls, v: str) -> str:
        return _target(v) if v else ""

    @model_validator(mode="after")
    def _no_duplicates(self) -> RecipientTableSection:
        for name in self.aliases:
            if name in self.mailboxes:
                raise SchemaValueError(f"{quote(name)} is a mailbox and an alias", ("aliases", name))
        for name in self.forwards:
            if name in self.mailboxes or name in self.aliases:
                raise SchemaValueError(f"{quote(name)} is defined twice (forwards and mailboxes"
                                       " or aliases)", ("forwards", name))
        return self


def _check_host(v: str) -> str:
    if not v:
        return v
    if v.startswith("["):
        try:
            ipaddress.ip_address(v[1:-1].removeprefix("IPv6:").removeprefix("ipv6:"))
        except ValueError:
            raise ValueError(f"{quote(v)} is not an address literal like \"[192.0.2.1]\"") from None
        if not v.endswith("]"):
            raise ValueError(f"{quote(v)} is missing its closing \"]\"")
        return v
    return normalize_domain(v)


class RemoteDomainSection(_Section):
    """IIS Remote domain properties; read by the delivery work."""

    relay: StrictBool = False
    smart_host: StrictStr = ""
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 25
    tls: Literal["none", "opportunistic", "required", "verify", "implicit"] = "opportunistic"
    username: StrictStr = ""
    password_file: Path | None = None
    use_helo: StrictBool = False

    @field_validator("smart_host")
    @classmethod
    def _check_smart_host(cls, v: str) -> str:
        return _check_host(v)

    @field_validator("password_file", mode="before")
    @classmethod
    def _check_password_file(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)

    @model_validator(mode="after")
    def _login_needs_tls(self) -> RemoteDomainSection:
        if bool(self.username) != (self.password_file is not None):
            missing = "password_file" if self.username else "username"
            raise SchemaValueError("username and password_file go together", (missing,))
        if self.username and self.tls not in ("required", "verify", "implicit"):
            raise SchemaValueError('a login needs tls = "required", "verify" or "implicit", so'
                                   " the password never crosses the network in clear", ("tls",))
        return self


class RatesSection(_Section):
    """Per-minute rates per client address (IPv6: per network) and per user."""

    connections_per_ip: Count = 0
    messages_per_ip: Count = 0
    messages_per_user: Count = 0
    failed_logins_per_ip: Count = 10
    failed_logins_per_user: Count = 30
    login_delay: DelaySeconds = 1.0
    login_delay_max: DelaySeconds = 10.0
    lockout: Seconds = 600.0
    ipv6_prefix: Annotated[int, Field(strict=True, ge=32, le=128)] = 64


class PeersSection(_Section):
    """Checks on the client: HELO/EHLO name and reverse DNS."""

    helo: Literal["off", "syntax", "fqdn", "strict"] = "off"
    reverse_dns: Literal["off", "record", "require"] = "off"


class DnsSection(_Section):
    """The resolver used for reverse DNS of clients."""

    nameservers: tuple[StrictStr, ...] = ()
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 53
    timeout: Seconds = 5.0

    @field_validator("nameservers")
    @classmethod
    def _check_nameservers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(v):
            try:
                out.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise SchemaValueError(f"{quote(item)} is not an IP address", (i,)) from None
        return tuple(out)
