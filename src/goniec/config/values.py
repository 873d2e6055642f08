"""Parsing and checking single config values: sizes, seconds, domains, addresses, networks.

Pure functions (layer 1) used by the schema's validators. Each raises
`ValueError` with a message meant for the user, or `SchemaValueError` when the
problem is at an index inside the value (`relay.networks[2]`). No I/O.
"""

from __future__ import annotations

import ipaddress
import re

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SchemaValueError(ValueError):
    """A rule failed at `loc` below the field being validated (e.g. (1, "name"))."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


def quote(value: object) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return str(value)


# Decimal units as on disk labels (10MB = 10_000_000), binary units spelled KiB/MiB/GiB.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: object) -> int:
    """Bytes from an int or a string like "10MB" (10_000_000) or "10MiB" (10_485_760)."""
    if isinstance(value, bool):
        raise ValueError(f'must be a size in bytes or a string like "10MB" (got {quote(value)})')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
        raise ValueError(
            "must be a number of bytes or a string with a unit B, KB, MB, GB (powers of 1000)"
            f" or KiB, MiB, GiB (powers of 1024) (got {quote(value)})"
        )
    raise ValueError(f'must be a size in bytes or a string like "10MB" (got {quote(value)})')


class SizeMarker:
    """Marks size fields (in their `Annotated` metadata) so dump_config writes them with a unit."""


def format_size(n: int) -> str | int:
    """The shortest exact spelling of `n` bytes, for dump_config."""
    for unit, factor in (("GB", 1000**3), ("GiB", 1024**3), ("MB", 1000**2), ("MiB", 1024**2),
                         ("KB", 1000), ("KiB", 1024)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return n


def parse_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number of seconds (got {quote(value)})")
    if value <= 0:
        raise ValueError(f"must be more than 0 seconds (got {value})")
    return float(value)


_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_domain(name: str) -> str:
    """Lower-case, IDNA-encoded, without the trailing dot; ValueError when not a domain."""
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"is not a valid internationalised domain name ({exc})") from None
    if not name or len(name) > 253:
        raise ValueError("must be a domain name of 1 to 253 characters")
    for label in name.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(
                f"is not a valid domain name: label {quote(label)} must be 1 to 63 letters,"
                " digits or hyphens, not starting or ending with a hyphen"
            )
    return name


def parse_address(value: str) -> tuple[str, int]:
    """(host, port) from "host:port" or "[v6]:port"; the host must be an IP literal."""
    if value.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", value)
        if not m:
            raise ValueError(f'must be "[ipv6]:port", e.g. "[::1]:2525" (got {quote(value)})')
        host, port_text = m.groups()
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{quote(host)} is not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f'must be "host:port", e.g. "0.0.0.0:25" (got {quote(value)})')
        if ":" in host:
            raise ValueError(f'IPv6 addresses need brackets, e.g. "[{host}]:{port_text}"')
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f'{quote(host)} is not an IP address; listen on an address literal such as'
                ' "0.0.0.0", "127.0.0.1", "[::]" or "[::1]"'
            ) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535 (got {quote(port_text)})")
    return str(ip), int(port_text)


def parse_domains(v: object) -> frozenset[str]:
    if not isinstance(v, list | tuple | set | frozenset):
        raise ValueError(f'must be an array of domain names, e.g. ["example.test"] (got {quote(v)})')
    out = set()
    for i, item in enumerate(sorted(v) if isinstance(v, set | frozenset) else v):
        if not isinstance(item, str):
            raise SchemaValueError(f"must be a domain name string (got {quote(item)})", (i,))
        try:
            out.add(normalize_domain(item))
        except ValueError as exc:
            raise SchemaValueError(f"{quote(item)} {exc}", (i,)) from None
    return frozenset(out)


def parse_networks(v: object) -> tuple[IPNetwork, ...]:
    if not isinstance(v, list | tuple):
        raise ValueError(f'must be an array of addresses or networks, e.g. ["10.0.0.0/8"] (got {quote(v)})')
    out: list[IPNetwork] = []
    for i, item in enumerate(v):
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise SchemaValueError(f"must be an address or network string (got {quote(item)})", (i,))
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=True))
            continue
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise SchemaValueError(
                f"{quote(item)} is not an IP address or a network in CIDR notation", (i,)
            ) from None
        raise SchemaValueError(
            f'{quote(item)} has host bits set; did you mean "{loose}"?', (i,)
        )
    return tuple(out)
