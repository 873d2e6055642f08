"""The `[delivery]` section: retries, reports, routing and the mail folders (layer 1).

Owns the keys of `[delivery]`, `[delivery.local]`, `[delivery.pickup]` and
`[delivery.badmail]` (IIS Delivery tab, Domains node and Mailroot folders,
reference sections 5, 8 and 9): types, defaults (the IIS ones where IIS had
one) and single-section checks. Durations are seconds, or strings with a unit
("15m", "12h", "2d"). Paths are relative to the config file; an unset folder
defaults to a folder in server.data_dir, filled in by `DeliverySection.paths`.
Reads no files. Raises `ValueError` / `SchemaValueError` through pydantic,
like `schema`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

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

from goniec.config.sections import optional_path
from goniec.config.values import SchemaValueError, normalize_domain, parse_size, quote

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or "90s", "15m", "12h", "2d", "1w"; must be > 0."""
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like 900, \"15m\" or \"2d\" (got {quote(value)})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"must be a duration like 900, \"15m\" or \"2d\" (got {quote(value)})")
    if seconds <= 0:
        raise ValueError(f"must be more than 0 seconds (got {quote(value)})")
    return seconds


def _durations(value: object) -> tuple[float, ...]:
    if isinstance(value, str):  # IIS wrote "15,30,60,240" (minutes); accept "15m,30m,..."
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError('must be a non-empty array of durations, e.g. ["15m", "30m", "1h", "4h"]')
    out = []
    for i, item in enumerate(value):
        try:
            out.append(parse_duration(item))
        except ValueError as exc:
            raise SchemaValueError(str(exc), (i,)) from None
    return tuple(out)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Durations = Annotated[tuple[float, ...], BeforeValidator(_durations)]
Size = Annotated[int, BeforeValidator(parse_size)]
Count = Annotated[int, Field(strict=True, ge=1)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
TlsLevel = Literal["none", "opportunistic", "required", "verify", "implicit"]

HOUR = 3600.0
DAY = 86400.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalSection(_Section):
    """Local delivery (IIS Drop directory, or Maildir per mailbox)."""

    mode: Literal["maildir", "drop"] = "maildir"
    maildir_root: Path | None = None  # default data_dir/mail: <root>/<domain>/<local>/{tmp,new,cur}
    drop_dir: Path | None = None  # default data_dir/drop
    delivered_to: StrictBool = True  # prepend Delivered-To:, as Postfix's local(8) does

    @field_validator("maildir_root", "drop_dir", mode="before")
    @classmethod
    def _paths(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)


class PickupSection(_Section):
    """The Pickup folder (IIS, .NET SpecifiedPickupDirectory): off unless `dir` is set."""

    dir: Path | None = None
    scan_interval: Duration = 1.0
    # "auto": a file whose last line is a lone "." is in SMTP form (dots doubled);
    # "always": every file is (IIS SmtpDotStuffPickupDirFiles = TRUE); "never": none is.
    dot_stuffed: Literal["auto", "always", "never"] = "auto"

    @field_validator("dir", mode="before")
    @classmethod
    def _paths(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)


class BadmailSection(_Section):
    """The Badmail folder: what can be neither delivered nor returned."""

    dir: Path | None = None  # default data_dir/badmail
    max_size: Size = parse_size("100MB")  # oldest entries go first beyond this; 0: keep none
    max_age: Duration = 30 * DAY

    @field_validator("dir", mode="before")
    @classmethod
    def _paths(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)


@dataclass(frozen=True, slots=True)
class DeliveryPaths:
    """The folders, absolute, with the data_dir defaults filled in."""

    maildir_root: Path
    drop_dir: Path
    badmail_dir: Path
    pickup_dir: Path | None


class DeliverySection(_Section):
    """IIS Delivery tab: retries, delay notice, expiry, smart host, outbound settings."""

    # false: accept and queue only, deliver nothing (a receive-only node, or a
    # benchmark of acceptance); the queue keeps everything until it is switched on.
    enabled: StrictBool = True
    # Retries: IIS SmtpRemoteProgressiveRetry "15,30,60,240" minutes; the last repeats.
    retry: Durations = (15 * 60.0, 30 * 60.0, 60 * 60.0, 240 * 60.0)
    local_retry: Durations = (60 * 60.0,)  # IIS LocalRetryInterval 60 min
    delay_notice: Duration = 12 * HOUR  # SmtpRemoteDelayExpireMinutes 720
    expire: Duration = 2 * DAY  # SmtpRemoteNDRExpireMinutes 2880
    local_delay_notice: Duration = 12 * HOUR  # SmtpLocalDelayExpireMinutes
    local_expire: Duration = 2 * DAY  # SmtpLocalNDRExpireMinutes
    # RFC 3461 4.1: without NOTIFY, delay notices are at the MTA's discretion.
    # IIS sends them; Postfix only with delay_warning_time set.
    delay_notice_without_notify: StrictBool = True
    # Smart host: "host", "host:port", "[address]" (no MX lookup); "" = MX delivery.
    smart_host: StrictStr = ""
    direct_first: StrictBool = False  # IIS "Attempt direct delivery before sending to smart host"
    smart_host_tls: TlsLevel = "verify"  # certificate checked by default for smart hosts
    smart_host_username: StrictStr = ""
    smart_host_password_file: Path | None = None
    # OAuth2 instead of a password (Microsoft 365; Google needs a service-account JWT, not offered): the client-credentials flow
    # (RFC 6749 4.4) against this token endpoint; AUTH XOAUTH2 / OAUTHBEARER as
    # smart_host_username. The token is cached and refreshed before it expires.
    smart_host_oauth_token_url: StrictStr = ""
    smart_host_oauth_client_id: StrictStr = ""
    smart_host_oauth_client_secret_file: Path | None = None
    smart_host_oauth_scope: StrictStr = ""
    # CA bundle (PEM) that outbound certificate checks trust, for the smart host and
    # every route with tls = "verify" or "implicit"; "" = the system's trust store.
    ca_file: Path | None = None
    mx_tls: Literal["none", "opportunistic", "required", "verify"] = "opportunistic"
    port: Port = 25  # IIS "TCP port" for all outbound mail
    helo_name: StrictStr = ""  # default server.hostname (IIS "Fully-qualified domain name")
    masquerade_domain: StrictStr = ""  # IIS: replaces the domain of MAIL FROM
    connections: Count = 1000  # IIS MaxOutConnections
    connections_per_destination: Count = 100  # IIS MaxOutConnectionsPerDomain
    messages_per_connection: Count = 100  # connection reuse; 1 = a new connection per message
    idle_timeout: Duration = 5.0
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 300.0  # RFC 5321 4.5.3.2
    parallel: Count = 200  # messages in delivery at once per runner
    scan_interval: Duration = 1.0  # how often the spool is looked at for new messages
    ndr_copy_to: StrictStr = ""  # IIS "Send copy of Non-Delivery Report to"
    local: LocalSection = LocalSection()
    pickup: PickupSection = Field(default_factory=dict, validate_default=True)
    badmail: BadmailSection = Field(default_factory=dict, validate_default=True)

    @field_validator("smart_host_password_file", "ca_file", "smart_host_oauth_client_secret_file",
                     mode="before")
    @classmethod
    def _check_password_file(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)

    @field_validator("smart_host")
    @classmethod
    def _check_smart_host(cls, v: str) -> str:
        if v:
            from goniec.delivery.destination import parse_smart_host  # pure, no I/O

            parse_smart_host(v)  # ValueError names the problem
        return v.strip()

    @field_validator("helo_name", "masquerade_domain")
    @classmethod
    def _check_domain(cls, v: str) -> str:
        return normalize_domain(v) if v else ""

    @field_validator("smart_host_oauth_token_url")
    @classmethod
    def _check_token_url(cls, v: str) -> str:
        # The client secret travels to this URL: https only (plain http on loopback
        # is allowed for tests and local token helpers).
        if v:
            url = urlsplit(v)
            loopback = url.hostname in ("127.0.0.1", "::1", "localhost")
            if not url.hostname or not (url.scheme == "https"
                                        or (url.scheme == "http" and loopback)):
                raise ValueError(f"must be an https:// URL (got {quote(v)})")
        return v

    @field_validator("ndr_copy_to")
    @classmethod
    def _check_address(cls, v: str) -> str:
        if v and (v.count("@") != 1 or any(c.isspace() for c in v) or v.startswith("@")):
            raise ValueError(f"must be an address like \"postmaster@example.test\" (got {quote(v)})")
        return v

    @model_validator(mode="after")
    def _cross(self) -> DeliverySection:
        if self.direct_first and not self.smart_host:
            raise SchemaValueError("direct_first needs a smart_host to fall back to",
                                   ("direct_first",))
        oauth = bool(self.smart_host_oauth_token_url)
        secret = self.smart_host_password_file is not None
        if oauth and secret:
            raise SchemaValueError("use either a password file or OAuth2 for the smart host,"
                                   " not both", ("smart_host_oauth_token_url",))
        if bool(self.smart_host_username) != (secret or oauth):
            missing = ("smart_host_password_file or smart_host_oauth_token_url"
                       if self.smart_host_username else "smart_host_username")
            raise SchemaValueError("a smart host login needs smart_host_username and either"
                                   " smart_host_password_file or smart_host_oauth_token_url",
                                   (missing.split(" ")[0],))
        if oauth and not (self.smart_host_oauth_client_id
                          and self.smart_host_oauth_client_secret_file is not None):
            raise SchemaValueError("OAuth2 needs smart_host_oauth_client_id and"
                                   " smart_host_oauth_client_secret_file",
                                   ("smart_host_oauth_client_id",))
        if self.smart_host_username and self.smart_host_tls in ("none", "opportunistic"):
            raise SchemaValueError('a login needs smart_host_tls = "required", "verify" or'
                                   ' "implicit", so the password never crosses the network'
                                   " in clear", ("smart_host_tls",))
        for name in ("delay_notice", "local_delay_notice"):
            expire = self.expire if name == "delay_notice" else self.local_expire
            if getattr(self, name) >= expire:
                raise SchemaValueError(f"must be shorter than {'local_' if 'local' in name else ''}"
                                       "expire, or no delay notice would ever be sent", (name,))
        return self

    def paths(self, data_dir: Path) -> DeliveryPaths:
        return DeliveryPaths(
            maildir_root=self.local.maildir_root or data_dir / "mail",
            drop_dir=self.local.drop_dir or data_dir / "drop",
            badmail_dir=self.badmail.dir or data_dir / "badmail",
            pickup_dir=self.pickup.dir,
        )


# [delivery] keys a reload cannot change in a running process (the connection pool's
# limits and the runner's pace are fixed when they are made; folders are opened once).
# Everything else (routes, smart host, TLS, logins, retry schedule, reports, HELO name,
# masquerade, port, timeouts) follows a reload (`DeliveryService.reconfigure`).
RESTART_KEYS = ("enabled", "connections", "connections_per_destination",
                "messages_per_connection", "idle_timeout", "parallel", "scan_interval",
                "local", "pickup", "badmail")


def restart_keys(old: DeliverySection, new: DeliverySection) -> list[str]:
    """The [delivery] keys that differ and only take effect after a restart."""
    return [f"delivery.{k}" for k in RESTART_KEYS if getattr(old, k) != getattr(new, k)]
