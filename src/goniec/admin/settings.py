"""The manager's Settings tabs: read, change, validate and save goniec.toml.

Owns the list of settings the web manager edits (grouped in the tabs IIS
admins know: General, Access, Messages, Delivery, Domains), their form text,
and saving a change: the TOML file is edited with tomlkit so comments and
layout survive, the new text is validated by `goniec.config.load.load_config`
before anything is replaced, and the file is replaced atomically (temp file in
the same directory, fsync, rename, fsync of the directory). A bad value
changes nothing and comes back as the loader's own message, attached to the
field it names. Asking the server to reload is the caller's job.

A server started without a config file (built-in defaults) has nothing to
save to: `SettingsFile.read(None)` gives a read-only view. Never raises for
a bad value; raises `SettingsError` when the file cannot be read or written.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from goniec.config.load import dotted, load_config
from goniec.config.schema import Config
from goniec.config.values import format_size
from goniec.errors import ConfigError

if TYPE_CHECKING:  # tomlkit is imported by a save: the manager's pages do not need it
    import tomlkit

Kind = Literal["text", "int", "size", "duration", "seconds", "bool", "choice", "lines", "map"]


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted path in the file: "relay.networks"
    label: str
    kind: Kind
    help: str = ""
    choices: tuple[str, ...] = ()
    restart: bool = False  # takes effect after a restart only (app.restart_needed)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    @property
    def form_name(self) -> str:
        return self.key.replace(".", "__")


_LEVELS = ("debug", "info", "warning", "error", "critical")
_LIST_MODES = ("only", "all_except")
_TLS = ("none", "opportunistic", "required", "verify", "implicit")

TABS: dict[str, tuple[str, tuple[Setting, ...]]] = {
    "general": ("General", (
        Setting("server.hostname", "Host name", "text",
                "Name in the greeting, EHLO reply and Received: headers.", restart=True),
        Setting("server.greeting", "Greeting text", "text", "Extra text after 220 <host> ESMTP."),
        Setting("server.log_level", "Log level", "choice", choices=_LEVELS),
        Setting("limits.connections", "Connections at once", "int", "0 = unlimited."),
        Setting("limits.connections_per_ip", "Connections per client address", "int",
                "0 = unlimited."),
        Setting("timeouts.command", "Connection time-out (seconds)", "seconds",
                "Waiting for the next command (RFC 5321 4.5.3.2.7)."),
    )),
    "access": ("Access", (
        Setting("access.mode", "Connection control", "choice",
                "all_except: everybody but the list; only: only the list.", choices=_LIST_MODES),
        Setting("access.networks", "Connection list: addresses", "lines",
                "One IP address or CIDR network per line."),
        Setting("access.domains", "Connection list: domains", "lines",
                "One domain per line (needs reverse DNS of every client)."),
        Setting("relay.mode", "Relay restrictions", "choice",
                "only: only the list below may relay (recommended).", choices=_LIST_MODES),
        Setting("relay.networks", "Relay list: addresses", "lines",
                "One IP address or CIDR network per line."),
        Setting("relay.domains", "Relay list: domains", "lines", "One domain per line."),
        Setting("relay.authenticated", "Allow authenticated users to relay", "bool"),
        Setting("auth.allow_plaintext", "Allow login without TLS", "bool"),
    )),
    "messages": ("Messages", (
        Setting("limits.message_size", "Message size limit", "size",
                'Bytes, or "10MB", "25MiB"; 0 = unlimited.'),
        Setting("limits.session_size", "Session size limit", "size", "0 = unlimited."),
        Setting("limits.messages_per_connection", "Messages per connection", "int",
                "0 = unlimited."),
        Setting("limits.recipients", "Recipients per message", "int"),
        Setting("limits.hop_count", "Maximum hop count", "int", "0 = unlimited."),
        Setting("limits.bad_commands", "Bad commands before disconnect", "int", "0 = unlimited."),
        Setting("delivery.ndr_copy_to", "Send a copy of failure reports to", "text"),
    )),
    "delivery": ("Delivery", (
        Setting("delivery.retry", "Retry intervals", "lines",
                'One duration per line ("15m", "1h"); the last repeats.'),
        Setting("delivery.delay_notice", "Delay notification", "duration"),
        Setting("delivery.expire", "Expiration timeout", "duration"),
        Setting("delivery.smart_host", "Smart host", "text",
                '"host", "host:port" or "[address]"; empty = deliver by MX.'),
        Setting("delivery.smart_host_tls", "Smart host TLS", "choice", choices=_TLS),
        Setting("delivery.direct_first", "Attempt direct delivery before the smart host", "bool"),
        Setting("delivery.masquerade_domain", "Masquerade domain", "text"),
        Setting("delivery.helo_name", "Outbound HELO name", "text",
                "Empty = the host name."),
        Setting("delivery.port", "Outbound TCP port", "int"),
        Setting("delivery.connections", "Outbound connections", "int", restart=True),
        Setting("delivery.connections_per_destination", "Connections per destination", "int",
                restart=True),
    )),
    "domains": ("Domains", (
        Setting("domains.local", "Local domains", "lines", "One domain per line."),
        Setting("domains.aliases", "Alias domains", "map",
                "One per line: alias.example = local.example"),
    )),
}

_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def _duration_text(seconds: float) -> str:
    for unit, n in _UNITS:
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return str(int(seconds)) if float(seconds).is_integer() else repr(seconds)


def _network_text(value: object) -> str:
    """"::1/128" -> "::1": a one-address network as the address, the way people write it."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network) and value.num_addresses == 1:
        return str(value.network_address)
    return str(value)


def _get(config: Config, path: tuple[str, ...]) -> Any:
    value: Any = config
    for part in path:
        value = getattr(value, part)
    return value


def form_text(config: Config, setting: Setting) -> str:
    """The effective value of `setting` as the text its form field shows."""
    value = _get(config, setting.path)
    kind = setting.kind
    if kind == "bool":
        return "true" if value else "false"
    if kind == "size":
        return str(format_size(int(value)))
    if kind == "duration":
        return _duration_text(float(value))
    if kind == "seconds":
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if kind == "lines":
        items = value
        if isinstance(items, frozenset):
            items = sorted(items)
        if setting.key.endswith("retry"):
            return "\n".join(_duration_text(float(v)) for v in items)
        return "\n".join(_network_text(v) for v in items)
    if kind == "map":
        return "\n".join(f"{k} = {v}" for k, v in sorted(value.items()))
    return "" if value is None else str(value)


def _normal(setting: Setting, text: str) -> str:
    """Form text with line ends, blank lines and edge spaces made uniform."""
    if setting.kind in ("lines", "map"):
        return "\n".join(line.strip() for line in text.splitlines() if line.strip())
    return text.strip() if setting.kind != "text" or setting.key != "server.greeting" else text


class _LocalError(ValueError):
    """A form value that cannot even be written as TOML (a map line without '=')."""


def _toml_value(setting: Setting, text: str) -> Any:
    kind = setting.kind
    text = _normal(setting, text)
    if kind == "bool":
        return text == "true"
    if kind in ("int", "size", "duration", "seconds"):
        # Numbers go in as numbers; anything else as a string for the loader to judge,
        # so the message the admin sees is the loader's ("must be an integer (got ...)").
        for conv in (int, float):
            with contextlib.suppress(ValueError):
                return conv(text)
        return text
    if kind == "lines":
        return [line for line in text.splitlines()]
    if kind == "map":
        import tomlkit

        table = tomlkit.inline_table()
        for number, line in enumerate(text.splitlines(), start=1):
            key, sep, value = line.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise _LocalError(f"line {number}: expected name = value (got {line!r})")
            table[key.strip().strip('"')] = value.strip().strip('"')
        return table
    return text


def _set(doc: tomlkit.TOMLDocument, path: tuple[str, ...], value: Any) -> None:
    import tomlkit
    from tomlkit.items import Table

    container: Any = doc
    for part in path[:-1]:
        if part not in container:
            container[part] = tomlkit.table()
        container = container[part]
        if not isinstance(container, (Table, dict)):
            raise _LocalError(f"{'.'.join(path[:-1])} is not a table in the file")
    container[path[-1]] = value


@dataclass
class SaveResult:
    ok: bool
    changed: list[str] = field(default_factory=list)  # keys written
    restart: list[str] = field(default_factory=list)  # of those, the ones needing a restart
    errors: dict[str, str] = field(default_factory=dict)  # setting key -> message
    general: list[str] = field(default_factory=list)  # messages naming no field of the tab


@dataclass(frozen=True)
class SettingsFile:
    """The config file as the manager sees it: path (None = built-in defaults), text, Config."""

    path: Path | None
    text: str
    config: Config
    error: str = ""  # the file does not load as it is (someone edited it by hand)

    @property
    def writable(self) -> bool:
        return self.path is not None and not self.error

    @property
    def version(self) -> str:
        """A fingerprint of the text, so a save notices that the file changed meanwhile."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:32]

    @classmethod
    def read(cls, path: Path | None, fallback: Config | None = None) -> SettingsFile:
        if path is None:
            return cls(None, "", fallback or load_config(None))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read: {exc}") from None
        try:
            config = load_config(path)
        except ConfigError as exc:
            return cls(path, text, fallback or load_config(None), error=str(exc))
        return cls(path, text, config)

    def values(self, tab: str) -> dict[str, str]:
        return {s.key: form_text(self.config, s) for s in TABS[tab][1]}


class SettingsError(Exception):
    """The config file cannot be read or replaced (permissions, disk)."""


_lock = threading.Lock()  # one save at a time in this process


def save(path: Path, tab: str, form: Mapping[str, str], version: str) -> SaveResult:
    """Apply the form of `tab` to the file at `path` if it validates; see the module doc.

    `form` maps `Setting.form_name` to text; a setting missing from it is left as it is.
    `version` is `SettingsFile.version` of the text the form was made from.
    """
    import tomlkit
    import tomlkit.exceptions

    with _lock:
        current = SettingsFile.read(path)
        if current.version != version:
            return SaveResult(False, general=[
                "The file changed since this page was opened (someone else saved, or it was"
                " edited by hand). Nothing was saved: look at the values again and retry."])
        if current.error:
            return SaveResult(False, general=[f"The file does not load as it is: {current.error}"])
        result = SaveResult(True)
        try:
            doc = tomlkit.parse(current.text)
        except tomlkit.exceptions.ParseError as exc:
            return SaveResult(False, general=[f"{path}: {exc}"])
        for setting in TABS[tab][1]:
            raw = form.get(setting.form_name)  # a checkbox form sends a hidden "false" first
            if raw is None:
                continue
            if _normal(setting, raw) == _normal(setting, form_text(current.config, setting)):
                continue
            try:
                _set(doc, setting.path, _toml_value(setting, raw))
            except _LocalError as exc:
                result.errors[setting.key] = str(exc)
                continue
            result.changed.append(setting.key)
            if setting.restart:
                result.restart.append(setting.key)
        if result.errors:
            result.ok = False
            return result
        if not result.changed:
            return result
        problem = _replace_checked(path, tomlkit.dumps(doc))
        if problem:
            _attach(result, tab, problem, path)
        return result


def _attach(result: SaveResult, tab: str, message: str, path: Path) -> None:
    """Put each line of a loader message next to the setting it names."""
    result.ok = False
    keys = {s.key: s for s in TABS[tab][1]}
    for line in message.splitlines():
        target = None
        for key in sorted(keys, key=len, reverse=True):
            name = dotted(tuple(key.split(".")))
            if f": {name}:" in line or f": {name}[" in line or f": {name}." in line:
                target = key
                break
        if target is None:
            result.general.append(line)
        else:
            old = result.errors.get(target)
            result.errors[target] = f"{old}\n{line}" if old else line


def _replace_checked(path: Path, text: str) -> str:
    """Write `text` next to `path`, validate that very file, then rename it over `path`.

    Returns "" when done, else the loader's message (with the real file name),
    and `path` is untouched. The temp file sits in the same directory, so
    relative paths in the config resolve exactly as they will after the rename.
    """
    directory = path.parent
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".new")
    except OSError as exc:
        raise SettingsError(f"{directory}: cannot write a temporary file: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            load_config(tmp)
        except ConfigError as exc:
            return str(exc).replace(tmp, str(path))
        os.replace(tmp, path)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot save: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return ""
