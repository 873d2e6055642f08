"""API tokens of the manager's /api/v1: `name:sha256-hex:created` lines in the tokens file.

Owns making tokens (32 random bytes, URL-safe base64, shown to the operator
once), storing only their SHA-256, listing, deleting and checking them. A
check compares the digest with every stored one in constant time
(`hmac.compare_digest`), so timing does not tell how much of a guess was
right. Rewrites are atomic like the users file (temp file, fsync, rename,
fsync of the directory; mode 0600) under an advisory `<file>.lock`. The
file is re-read when it changes on disk, so a token added by the CLI works
in the running server at once. Raises `ConfigError` for a malformed file
and `TokenError` for a bad request (name taken, no such token, bad name).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goniec.admin import securefile
from goniec.admin.users import UserError, check_name
from goniec.errors import ConfigError

TOKEN_BYTES = 32


class TokenError(Exception):
    """A token operation cannot be done as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class TokenRow:
    name: str
    created: float  # epoch seconds

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _parse(path: Path, text: str) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        try:
            name, digest, created = parts
            check_name(name)
            if len(digest) != 64 or int(digest, 16) < 0:
                raise ValueError
            stamp = float(created)
        except (ValueError, UserError):
            raise ConfigError(f"{path}:{i}: expected 'name:sha256:created'"
                              " (a line made by goniec token add)") from None
        if name in out:
            raise ConfigError(f"{path}:{i}: token {name!r} is listed twice")
        out[name] = (digest, stamp)
    return out


class TokenStore:
    """The tokens file; thread-safe; cheap to check (one hash, no argon2)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    def _current(self) -> dict[str, tuple[str, float]]:
        try:
            stamp, text = securefile.read_changed(self.path, self._stamp)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: cannot read tokens file: {exc}") from None
        if text is not None:
            self._tokens = _parse(self.path, text) if stamp is not None else {}
            self._stamp = stamp
        return self._tokens

    def list(self) -> list[TokenRow]:
        with self._lock:
            return [TokenRow(n, c) for n, (_, c) in sorted(self._current().items())]

    def check(self, secret: str) -> str | None:
        """The name of the token whose secret this is, or None."""
        digest = _digest(secret)
        with self._lock:
            tokens = list(self._current().items())
        found = None
        for name, (stored, _) in tokens:  # no early exit: the time does not depend on a match
            if hmac.compare_digest(stored, digest):
                found = name
        return found

    def add(self, name: str, *, now: float | None = None) -> str:
        """Make a token called `name`; returns its secret (only its hash is kept)."""
        try:
            check_name(name)
        except UserError as exc:
            raise TokenError(str(exc).replace("user name", "token name")) from None
        secret = secrets.token_urlsafe(TOKEN_BYTES)
        created = time.time() if now is None else now
        with self._edit() as tokens:
            if name in tokens:
                raise TokenError(f"token {name!r} already exists (delete it first)")
            tokens[name] = (_digest(secret), created)
        return secret

    def delete(self, name: str) -> None:
        with self._edit() as tokens:
            if tokens.pop(name, None) is None:
                raise TokenError(f"no such token: {name!r}")

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, tuple[str, float]]]:
        with self._lock, self._file_lock():
            self._stamp = None  # another process may have written
            tokens = dict(self._current())
            yield tokens
            self._write("".join(f"{n}:{d}:{c:.0f}\n" for n, (d, c) in tokens.items()))
            self._stamp = None

    def _file_lock(self) -> contextlib.AbstractContextManager[None]:
        return securefile.file_lock(self.path)

    def _write(self, text: str) -> None:
        securefile.write_private(self.path, text)
