"""The configuration schema: pydantic models with defaults and value rules (layer 1).

Owns every key of goniec.toml, its type, its default and its check, and the
helpers the server reads (listener host/port/family, sizes as int bytes,
resolved paths, relay networks, local domains). Reads no files: `load.py` parses
TOML and passes, in the validation context, the directory that relative paths
are resolved against (`base_dir`) and a callable giving the default hostname
(`default_hostname`). Raises pydantic's `ValidationError`; `load.py` turns that
into one `ConfigError` message. A `ValueError` raised here may be a
`SchemaValueError`, which names the key below the field that is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterable
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

from goniec.config.admin import AdminSection, LogSection
from goniec.config.delivery import DeliverySection
from goniec.config.mailauth import MailauthSection
from goniec.config.sections import (
    AccessSection,
    DnsSection,
    DomainsSection,
    PeersSection,
    RatesSection,
    RecipientTableSection,
    RelaySection,
    RemoteDomainSection,
    optional_path,
    resolve_path,
)
from goniec.config.values import (
    IPNetwork,
    SchemaValueError,
    SizeMarker,
    normalize_domain,
    parse_address,
    parse_seconds,
    parse_size,
    quote,
)

DEFAULT_DATA_DIR = "./goniec-data"
DEFAULT_LISTEN = "127.0.0.1:2525"


# --------------------------------------------------------------------------- value types


_SizeMarker = SizeMarker  # the name dump.py imports

Size = Annotated[int, BeforeValidator(parse_size), _SizeMarker()]


# Strict: TOML has real integers, so a "25" string is a mistake worth reporting.
Count = Annotated[int, Field(strict=True, ge=0)]
PositiveCount = Annotated[int, Field(strict=True, ge=1)]


Seconds = Annotated[float, BeforeValidator(parse_seconds)]


# --------------------------------------------------------------------------- names, paths


def _default_hostname(info: ValidationInfo) -> str:
    getter = (info.context or {}).get("default_hostname")
    return str(getter()) if callable(getter) else "localhost"


# --------------------------------------------------------------------------- listeners

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Listener(BaseModel):
    """One listening socket. `address` is normalised ("[::1]:25", "127.0.0.1:2525")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    address: StrictStr
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    auth: Literal["none", "optional", "required"] = "optional"

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError(
                "must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter"
                f" or digit (got {quote(v)})"
            )
        return v

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        host, port = parse_address(v)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def host(self) -> str:
        """The IP literal to bind, without brackets: "0.0.0.0", "::1"."""
        return parse_address(self.address)[0]

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def is_wildcard(self) -> bool:
        return ipaddress.ip_address(self.host).is_unspecified


# --------------------------------------------------------------------------- sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ServerSection(_Section):
    hostname: StrictStr = Field(default="", validate_default=True)
    data_dir: Path = Field(default=Path(DEFAULT_DATA_DIR), validate_default=True)
    # One process per CPU: the sessions and the delivery runners use every core
    # (a single process is held to one by the GIL).
    workers: int | Literal["auto"] = "auto"
    log_file: Path | None = None
    log_level: LogLevel = "info"
    greeting: StrictStr = ""
    # Started as root (to bind ports below 1024): switch to this user and group
    # once the sockets are bound and the files are ready. "" = stay as started.
    user: StrictStr = ""
    group: StrictStr = ""  # "" = the user's primary group

    @field_validator("hostname", mode="after")
    @classmethod
    def _check_hostname(cls, v: str, info: ValidationInfo) -> str:
        return normalize_domain(v) if v else _default_hostname(info)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _check_data_dir(cls, v: object, info: ValidationInfo) -> Path:
        if isinstance(v, Path):
            v = str(v)
        if not isinstance(v, str) or not v:
            raise ValueError(f"must be a non-empty path (got {quote(v)})")
        return resolve_path(v, info)

    @field_validator("log_file", mode="before")
    @classmethod
    def _check_log_file(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, v: object) -> int | str:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024):
            return v  # type: ignore[return-value]
        raise ValueError(f'must be a number from 1 to 1024 or "auto" (got {quote(v)})')

    @field_validator("greeting")
    @classmethod
    def _check_greeting(cls, v: str) -> str:
        # It goes on the 220 line as is: no CR/LF (RFC 5321 4.2), printable ASCII only.
        if any(not (32 <= ord(c) < 127) for c in v) or len(v) > 200:
            raise ValueError("must be at most 200 printable ASCII characters, on one line")
        return v

    @property
    def worker_count(self) -> int:
        """`workers` with "auto" resolved to the number of CPUs."""
        return self.workers if isinstance(self.workers, int) else max(1, os.cpu_count() or 1)


class TlsSection(_Section):
    certificate: Path | None = None
    key: Path | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: StrictStr = ""

    @field_validator("certificate", "key", mode="before")
    @classmethod
    def _check_paths(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)

    @field_validator("min_version", mode="before")
    @classmethod
    def _float_version(cls, v: object) -> object:
        # `min_version = 1.2` (a TOML float) means the same as "1.2".
        return str(v) if isinstance(v, float) else v

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSection:
        if (self.certificate is None) != (self.key is None):
            missing = "key" if self.key is None else "certificate"
            raise SchemaValueError(
                "certificate and key go together: set both, or neither for a self-signed"
                " certificate",
                (missing,),
            )
        return self

    @property
    def self_signed(self) -> bool:
        """True when no certificate is configured: the server makes one in data_dir/tls."""
        return self.certificate is None


def _sender_entry(v: object) -> str:
    """"alice@Example.TEST" -> "alice@example.test"; "@example.test" (a whole domain); "*"."""
    if v == "*":
        return "*"
    if not isinstance(v, str) or "@" not in v or any(c.isspace() for c in v):
        raise ValueError(f'must be an address, "@domain" or "*" (got {quote(v)})')
    local, _, domain = v.rpartition("@")
    try:
        domain = normalize_domain(domain)
    except ValueError as exc:
        raise ValueError(f"{quote(v)}: the domain {exc}") from None
    return f"{local.casefold()}@{domain}"


def _parse_senders(v: object) -> dict[str, frozenset[str]]:
    if not isinstance(v, dict):
        raise ValueError('must be a table of user = ["address", "@domain", ...]')
    out: dict[str, frozenset[str]] = {}
    for user, entries in v.items():
        items = [entries] if isinstance(entries, str) else entries
        if not isinstance(items, list | tuple):
            raise SchemaValueError(f"must be an array of addresses (got {quote(entries)})",
                                   (str(user),))
        try:
            out[str(user)] = frozenset(_sender_entry(e) for e in items)
        except ValueError as exc:
            raise SchemaValueError(str(exc), (str(user),)) from None
    return out


class AuthSection(_Section):
    allow_plaintext: StrictBool = False
    users_file: Path | None = None  # filled with data_dir/users by Config
    restrict_senders: StrictBool = False
    senders: Annotated[dict[str, frozenset[str]], BeforeValidator(_parse_senders)] = Field(
        default_factory=dict)

    @field_validator("users_file", mode="before")
    @classmethod
    def _check_users_file(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)


class LimitsSection(_Section):
    message_size: Size = parse_size("10MB")
    # 0 = unlimited for the three counters below.
    connections: Count = 1000
    connections_per_ip: Count = 50
    bad_commands: Count = 20
    recipients: PositiveCount = 100  # per message
    session_size: Size = 0  # bodies per connection, 0 = unlimited
    messages_per_connection: Count = 0
    hop_count: Count = 30  # Received: headers, ours included; 0 = unlimited

    @model_validator(mode="after")
    def _session_holds_a_message(self) -> LimitsSection:
        if self.session_size and (not self.message_size or self.session_size < self.message_size):
            raise SchemaValueError(
                "must be 0 (unlimited) or at least message_size, so that one session can"
                " always take one message", ("session_size",))
        return self


class TimeoutsSection(_Section):
    # RFC 5321 4.5.3.2: the minimum timeouts a server should allow.
    command: Seconds = 300.0  # 4.5.3.2.7 server timeout, waiting for the next command
    data_block: Seconds = 180.0  # 4.5.3.2.5 between data blocks
    data_end: Seconds = 600.0  # 4.5.3.2.6 final reply after end of data (a client timeout)
    tls_handshake: Seconds = 30.0


class QueueSection(_Section):
    min_free_space: Size = parse_size("100MB")


def _default_listeners() -> tuple[Listener, ...]:
    return (Listener(name="smtp", address=DEFAULT_LISTEN),)


def _overlap(a: Listener, b: Listener) -> bool:
    if a.port != b.port or a.family != b.family:
        return False
    return a.host == b.host or a.is_wildcard or b.is_wildcard


class Config(BaseModel):
    """The whole effective configuration; immutable. Build it with `load_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A dict default is validated with the context (base_dir, default hostname).
    server: ServerSection = Field(default_factory=dict, validate_default=True)
    listeners: tuple[Listener, ...] = Field(default_factory=_default_listeners)
    tls: TlsSection = Field(default_factory=dict, validate_default=True)
    auth: AuthSection = Field(default_factory=dict, validate_default=True)
    limits: LimitsSection = LimitsSection()
    timeouts: TimeoutsSection = TimeoutsSection()
    domains: DomainsSection = DomainsSection()
    relay: RelaySection = RelaySection()
    queue: QueueSection = QueueSection()
    access: AccessSection = AccessSection()
    recipients: dict[str, RecipientTableSection] = Field(default_factory=dict)
    # A dict default is validated with the context (relative password_file paths).
    remote_domains: dict[str, RemoteDomainSection] = Field(default_factory=dict)
    rates: RatesSection = RatesSection()
    peers: PeersSection = PeersSection()
    dns: DnsSection = DnsSection()
    delivery: DeliverySection = Field(default_factory=dict, validate_default=True)
    mailauth: MailauthSection = MailauthSection()
    admin: AdminSection = AdminSection()
    log: LogSection = LogSection()

    @field_validator("recipients", "remote_domains", mode="before")
    @classmethod
    def _domain_keys(cls, v: object, info: ValidationInfo) -> object:
        if not isinstance(v, dict):
            return v  # pydantic reports the type
        out: dict[str, object] = {}
        for key, body in v.items():
            name = str(key)
            wild = info.field_name == "remote_domains" and name.startswith("*.")
            try:
                norm = normalize_domain(name[2:] if wild else name)
            except ValueError as exc:
                raise SchemaValueError(f"{quote(name)} {exc}", (name,)) from None
            norm = "*." + norm if wild else norm
            if norm in out:
                raise SchemaValueError(f"{quote(name)} is listed twice", (name,))
            out[norm] = body
        return out

    @field_validator("listeners", mode="before")
    @classmethod
    def _listeners_array(cls, v: object) -> object:
        if isinstance(v, dict):
            raise ValueError("must be an array of tables: write [[listeners]], not [listeners]")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _check_listeners(self.listeners, self.auth.allow_plaintext)
        _check_domains(self)
        if self.auth.users_file is None:
            # Defaults that depend on another key are filled in here so the value
            # the server reads, and dump_config prints, is the effective one.
            auth = self.auth.model_copy(update={"users_file": self.server.data_dir / "users"})
            self.__dict__["auth"] = auth
        data = self.server.data_dir
        admin_paths = {"users_file": data / "admin-users", "tokens_file": data / "admin-tokens",
                       "control_socket": data / "run" / "control.sock"}
        missing = {k: v for k, v in admin_paths.items() if getattr(self.admin, k) is None}
        if missing:
            self.__dict__["admin"] = self.admin.model_copy(update=missing)
        return self

    # Helpers the server uses -------------------------------------------------
    @property
    def data_path(self) -> Path:
        """server.data_dir, absolute."""
        return self.server.data_dir

    @property
    def spool_path(self) -> Path:
        return self.server.data_dir / "spool"

    @property
    def tls_path(self) -> Path:
        """Where the self-signed certificate lives when tls.certificate is not set."""
        return self.server.data_dir / "tls"

    @property
    def users_path(self) -> Path:
        """auth.users_file, absolute (default data_dir/users)."""
        assert self.auth.users_file is not None  # filled in by _cross_checks
        return self.auth.users_file

    @property
    def log_path(self) -> Path | None:
        """server.log_file, absolute; None means stderr."""
        return self.server.log_file

    @property
    def worker_count(self) -> int:
        return self.server.worker_count

    @property
    def message_size_bytes(self) -> int:
        """limits.message_size in bytes; 0 = unlimited."""
        return self.limits.message_size

    @property
    def min_free_space_bytes(self) -> int:
        return self.queue.min_free_space

    @property
    def local_domains(self) -> frozenset[str]:
        """domains.local: lower-case, IDNA (A-label) form, no trailing dot."""
        return self.domains.local

    @property
    def relay_networks(self) -> tuple[IPNetwork, ...]:
        return self.relay.networks

    def tls_paths(self) -> tuple[Path | None, Path | None]:
        """(certificate, key), absolute; (None, None) means make a self-signed pair."""
        return self.tls.certificate, self.tls.key

    @staticmethod
    def listener_endpoint(listener: Listener) -> tuple[str, int]:
        """(host, port) to bind, host without brackets."""
        return listener.host, listener.port


def _check_domains(config: Config) -> None:
    domains = config.domains
    for name in config.recipients:
        if name in domains.aliases:
            raise SchemaValueError(
                f"{quote(name)} is an alias domain: its recipients are those of"
                f" {quote(domains.aliases[name])}", ("recipients", name))
        if name not in domains.local:
            raise SchemaValueError(f"{quote(name)} is not in domains.local", ("recipients", name))
    for name in config.remote_domains:
        if name.removeprefix("*.") in domains.local or name in domains.aliases:
            raise SchemaValueError(f"{quote(name)} is a local domain, not a remote one",
                                   ("remote_domains", name))


def _check_listeners(listeners: Iterable[Listener], allow_plaintext: bool) -> None:
    seen: list[Listener] = []
    for i, lst in enumerate(listeners):
        for j, other in enumerate(seen):
            if other.name == lst.name:
                raise SchemaValueError(
                    f"duplicate listener name {quote(lst.name)} (also listeners[{j}])",
                    ("listeners", i, "name"),
                )
            if lst.address == other.address:
                raise SchemaValueError(
                    f"duplicate address {quote(lst.address)} (also listeners[{j}])",
                    ("listeners", i, "address"),
                )
            if _overlap(lst, other):
                raise SchemaValueError(
                    f"{quote(lst.address)} overlaps listeners[{j}] ({quote(other.address)}):"
                    " a wildcard address and another address on the same port cannot both bind",
                    ("listeners", i, "address"),
                )
        if lst.auth == "required" and lst.tls == "none" and not allow_plaintext:
            raise SchemaValueError(
                '"required" on a listener without TLS means no client can ever log in:'
                ' use tls = "starttls" or "implicit", or set auth.allow_plaintext = true',
                ("listeners", i, "auth"),
            )
        seen.append(lst)
    if not seen:
        raise SchemaValueError("at least one [[listeners]] table is needed", ("listeners",))

