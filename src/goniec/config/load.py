"""Reading goniec.toml into a `Config` (layer 3).

Owns finding the file (-c, $GONIEC_CONFIG, ./goniec.toml, built-in defaults),
parsing TOML, resolving relative paths, and turning every failure into one
`ConfigError` whose message names the file, the line when known, the key path
and what is wrong, e.g.
`goniec.toml:7: listeners[0].tls: must be one of "none", "starttls", "implicit" (got "yes")`.
Relative paths are resolved against the config file's directory, or against
the current directory when no file is used. Never writes anything.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import ssl
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from goniec.config.mailauth import mailauth_warnings
from goniec.config.schema import Config
from goniec.config.values import SchemaValueError, normalize_domain, quote
from goniec.errors import ConfigError
from goniec.policy.build import RulesError, build_rules

ENV_VAR = "GONIEC_CONFIG"
DEFAULT_FILE = "goniec.toml"

Loc = tuple[str | int, ...]


def find_config_file(explicit: str | Path | None = None) -> Path | None:
    """The file to load: `explicit`, else $GONIEC_CONFIG, else ./goniec.toml if present.

    None means "use the built-in defaults". A file named by -c or the environment
    variable is returned even when missing, so load_config reports it.
    """
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path(DEFAULT_FILE)
    return local if local.is_file() else None


def default_hostname() -> str:
    """socket.getfqdn(), or "localhost" when that is not a usable domain name."""
    try:
        return normalize_domain(socket.getfqdn())
    except (ValueError, OSError):
        return "localhost"


def load_config(path: str | Path | None) -> Config:
    """Load and validate `path` (None: built-in defaults). Raises ConfigError."""
    if path is None:
        return _validate({}, base_dir=Path.cwd(), label="built-in defaults", text="")
    path = Path(path)
    label = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{label}:{line}: not valid UTF-8 (TOML files are UTF-8)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_message(label, str(exc))) from None
    base_dir = path.absolute().parent
    return _validate(data, base_dir=base_dir, label=label, text=text)


def _syntax_message(label: str, msg: str) -> str:
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
    if m:
        return f"{label}:{m.group(1)}:{m.group(2)}: TOML syntax error: {msg[: m.start()]}"
    m = re.search(r"\s*\(at end of document\)$", msg)
    if m:
        return f"{label}: TOML syntax error at end of file: {msg[: m.start()]}"
    return f"{label}: TOML syntax error: {msg}"


def _validate(data: dict[str, Any], *, base_dir: Path, label: str, text: str) -> Config:
    context = {"base_dir": base_dir, "default_hostname": default_hostname}
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        lines = [_error_line(err, label, text) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    if config.tls.ciphers:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(config.tls.ciphers)
        except ssl.SSLError:
            loc: Loc = ("tls", "ciphers")
            raise ConfigError(
                _located(label, text, loc, "OpenSSL accepts none of these ciphers"
                         f" (got {quote(config.tls.ciphers)})")
            ) from None
    try:
        build_rules(config)  # checks that span keys: alias targets, loops
    except RulesError as exc:
        raise ConfigError(_located(label, text, exc.loc, str(exc))) from None
    problem = check_dkim_keys(config)
    if problem is not None:
        raise ConfigError(_located(label, text, problem[0], problem[1])) from None
    return config


def check_dkim_keys(config: Config) -> tuple[Loc, str] | None:
    """The first `[[mailauth.dkim]]` key that cannot be read or used: (where, why).

    Keys are read at load time (and so by `config check` and before a reload is
    applied), so a bad key never reaches a running server.
    """
    if not config.mailauth.dkim:
        return None
    from goniec.mailauth.keys import KeyError_, load_dkim_key  # cryptography: only when needed

    for i, entry in enumerate(config.mailauth.dkim):
        loc: Loc = ("mailauth", "dkim", i, "key_file")
        try:
            key = load_dkim_key(entry.key_file, entry.domain, entry.selector).private_key
            bits = getattr(key, "key_size", 2048)  # RSA; Ed25519 keys have no size
            if bits < 1024:  # RFC 8301 3.2: verifiers must not accept less
                raise KeyError_(f"an RSA key of {bits} bits; DKIM needs at least 1024 (RFC 8301)")
            if entry.arc and not hasattr(key, "key_size"):  # ARC is rsa-sha256 only (RFC 8617)
                return (("mailauth", "dkim", i, "arc"),
                        f"DKIM key {str(entry.key_file)!r} ({entry.selector}._domainkey."
                        f"{entry.domain}) is Ed25519; arc = true needs an RSA key")
        except FileNotFoundError:
            return loc, f"DKIM key {str(entry.key_file)!r} does not exist"
        except OSError as exc:
            return loc, f"cannot read DKIM key {str(entry.key_file)!r}: {exc.strerror or exc}"
        except KeyError_ as exc:
            return loc, f"DKIM key {str(entry.key_file)!r} is not usable: {exc}"
    return None


def check_files(config: Config, label: str = "config") -> list[str]:
    """Problems with files the config names (certificate, key), for `config check`."""
    problems = []
    for key in ("certificate", "key"):
        p: Path | None = getattr(config.tls, key)
        if p is not None and not os.access(p, os.R_OK):
            why = "does not exist" if not p.exists() else "is not readable"
            problems.append(f"{label}: tls.{key}: {str(p)!r} {why}")
    secrets: list[tuple[str, Path | None]] = [
        (f"remote_domains.{name}.password_file", remote.password_file)
        for name, remote in config.remote_domains.items()]
    secrets += [(f"delivery.{key}", getattr(config.delivery, key)) for key in
                ("smart_host_password_file", "smart_host_oauth_client_secret_file")]
    for key, pf in secrets:
        if pf is not None and not os.access(pf, os.R_OK):
            why = "does not exist" if not pf.exists() else "is not readable"
            problems.append(f"{label}: {key}: {str(pf)!r} {why}")
    return problems


def config_warnings(config: Config) -> list[str]:
    """Settings that are valid but probably not meant, for `config check` and the log."""
    out = []
    if config.relay.mode == "all_except":
        out.append('relay.mode = "all_except": every client not in relay.networks/domains may'
                   " relay; this is an open relay unless those lists cover the whole Internet")
    for name, table in config.recipients.items():
        if not (table.catch_all or "postmaster" in table.mailboxes
                or "postmaster" in table.aliases or "postmaster" in table.forwards):
            out.append(f"recipients.{name}: no postmaster entry; mail to postmaster@{name} is"
                       " accepted (RFC 5321 4.5.1) and goes to the mailbox \"postmaster\"")
    out += mailauth_warnings(config.mailauth, config.local_domains | frozenset(config.domains.aliases))
    return out


# --------------------------------------------------------------------------- messages


def dotted(loc: Sequence[str | int]) -> str:
    """("listeners", 0, "tls") -> "listeners[0].tls"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # A key with dots or other odd characters (a domain name) is quoted as in TOML.
        name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else quote(part)
        out += f".{name}" if out else name
    return out


def _located(label: str, text: str, loc: Loc, message: str) -> str:
    line = find_line(text, loc) if text else None
    where = f"{label}:{line}" if line else label
    return f"{where}: {dotted(loc)}: {message}" if loc else f"{where}: {message}"


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "an array",
    "list_type": "an array",
    "frozen_set_type": "an array",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
}


def _error_line(err: ErrorDetails, label: str, text: str) -> str:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, SchemaValueError):
            loc = loc + cause.loc
        message = str(cause) if cause is not None else err["msg"]
    elif kind == "extra_forbidden":
        message = "unknown section" if isinstance(got, dict) else "unknown key"
        message += _suggestion(loc)
    elif kind == "missing":
        message = "is required"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"must be one of {', '.join(quote(c) for c in choices)} (got {quote(got)})"
    elif kind in _TYPE_WORDS:
        message = f"must be {_TYPE_WORDS[kind]} (got {quote(got)})"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
              "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        message = f"must be {op} {bound} (got {quote(got)})"
    else:
        message = f"{err['msg']} (got {quote(got)})"
    return _located(label, text, loc, message)


def _suggestion(loc: Loc) -> str:
    """' (did you mean "hostname"?)' for a misspelt key, from the model's field names."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return ""
    names = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f" (known keys: {', '.join(names)})"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- line lookup

_ARRAY_HEADER = re.compile(r"\s*\[\[\s*([^\]]+?)\s*\]\]")
_TABLE_HEADER = re.compile(r"\s*\[\s*([^\]]+?)\s*\]")
_KEY_LINE = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(key: str) -> tuple[str, ...]:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+", key)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def find_line(text: str, loc: Loc) -> int | None:
    """Best effort: the 1-based line that defines `loc`, or its nearest parent's line.

    tomllib gives no positions for values, so this scans table headers and
    `key =` lines. It may miss keys inside inline tables; then it returns the
    line of the enclosing table, or None.
    """
    best: tuple[int, int] | None = None  # (matched length, line number)
    table: Loc = ()
    counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        m = _ARRAY_HEADER.match(line)
        if m:
            name = _split_key(m.group(1))
            counts[name] = counts.get(name, -1) + 1
            table = (*name, counts[name])
            path: Loc = table
        elif _TABLE_HEADER.match(line):
            m = _TABLE_HEADER.match(line)
            assert m is not None
            table = _split_key(m.group(1))
            path = table
        else:
            m = _KEY_LINE.match(line)
            if not m:
                continue
            path = table + _split_key(m.group(1))
        matches = len(path) <= len(loc) and tuple(loc[: len(path)]) == path
        if matches and (best is None or len(path) > best[0]):
            best = (len(path), number)
    return best[1] if best else None
