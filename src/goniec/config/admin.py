"""The `[admin]` and `[log]` sections: the manager, its API, the control socket, logs (layer 1).

Owns the keys of `[admin]` (the web manager and JSON API, who may log in, the
local control socket the CLI talks to) and `[log]` (line format, rotation,
the per-message trail). Paths left empty are filled in by `schema.Config`
from `server.data_dir`, so the effective value is what `config check` prints.
Reads no files. Raises `ValueError` / `SchemaValueError` through pydantic.
"""

from __future__ import annotations

import ipaddress
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

from goniec.config.sections import Seconds, optional_path
from goniec.config.values import SchemaValueError, SizeMarker, parse_size, quote

Size = Annotated[int, BeforeValidator(parse_size), SizeMarker()]

DEFAULT_WEB_LISTEN = "127.0.0.1:2580"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_host_port(address: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); ValueError naming the problem."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{quote(address)} must be host:port (IPv6 as [addr]:port)")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{quote(address)}: port must be 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{quote(address)}: the host must be an IP address") from None
    return host, port


class AdminSection(_Section):
    """The manager (web UI and /api/v1) and the control socket of the CLI."""

    web_listen: StrictStr = DEFAULT_WEB_LISTEN  # "" = no web manager
    allow_public: StrictBool = False  # a non-loopback web_listen needs this
    web_tls: StrictBool = False  # serve the manager over HTTPS with the [tls] certificate
    users_file: Path | None = None  # who may log in; default data_dir/admin-users
    tokens_file: Path | None = None  # API tokens (hashed); default data_dir/admin-tokens
    control_socket: Path | None = None  # default data_dir/run/control.sock
    session_lifetime: Seconds = 8 * 3600.0  # a web login lasts this long

    @field_validator("users_file", "tokens_file", "control_socket", mode="before")
    @classmethod
    def _paths(cls, v: object, info: ValidationInfo) -> Path | None:
        return optional_path(v, info)

    @field_validator("web_listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        if v:
            split_host_port(v)
        return v

    @model_validator(mode="after")
    def _public_needs_consent(self) -> AdminSection:
        # The manager can change every setting: never on the internet by accident.
        if self.web_is_public and not self.allow_public:
            raise SchemaValueError(
                f"{quote(self.web_listen)} is not a loopback address: set"
                " admin.allow_public = true to serve the manager there (and"
                " consider web_tls = true)", ("web_listen",))
        return self

    @property
    def web_endpoint(self) -> tuple[str, int] | None:
        """(host, port) of the manager, None when it is off."""
        return split_host_port(self.web_listen) if self.web_listen else None

    @property
    def web_is_public(self) -> bool:
        ep = self.web_endpoint
        return ep is not None and not ipaddress.ip_address(ep[0]).is_loopback


class LogSection(_Section):
    """Where event lines go and in what shape; the per-message trail."""

    format: Literal["line", "json", "w3c"] = "line"
    rotate: Literal["none", "size", "daily"] = "none"  # "none": leave it to logrotate
    max_size: Size = parse_size("100MB")  # with rotate = "size"
    keep: Annotated[int, Field(strict=True, ge=1, le=10000)] = 14  # rotated files kept
    trail: StrictBool = True  # per-message trail in data_dir/trail (received, attempts, ...)
    trail_days: Annotated[int, Field(strict=True, ge=1, le=3650)] = 30
