"""The users file: SMTP AUTH accounts as `name:argon2-hash` lines.

Owns reading, checking and rewriting that file. Rewrites are atomic (a temp
file in the same directory, fsync, rename, fsync of the directory; mode 0600)
and keep comments and unknown order intact; an advisory lock (`<file>.lock`)
serialises writers in different processes. Raises `ConfigError` for a
malformed file (naming file and line) and `UserError` for a bad request
(user exists, no such user, bad name or password).
"""

from __future__ import annotations

import contextlib
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from goniec.admin import securefile
from goniec.errors import ConfigError

MAX_NAME = 256


class UserError(Exception):
    """A user operation cannot be done as asked; the message says why."""


def check_name(name: str) -> str:
    """Return `name` if it can be a user name, else raise UserError saying why."""
    if not name:
        raise UserError("user name must not be empty")
    if len(name) > MAX_NAME:
        raise UserError(f"user name is longer than {MAX_NAME} characters")
    if name.startswith("#"):
        raise UserError("user name must not start with '#' (that marks a comment)")
    for ch in name:
        if ch == ":" or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise UserError(
                f"user name must not contain ':', spaces or control characters (found {ch!r})"
            )
    return name


@dataclass(frozen=True, slots=True)
class _Parsed:
    lines: list[str]  # the file's lines, without line ends
    index: dict[str, int]  # user name -> line number (0-based) in `lines`

    def hash_of(self, name: str) -> str | None:
        i = self.index.get(name)
        return None if i is None else self.lines[i].split(":", 1)[1]


def _parse(path: Path, text: str) -> _Parsed:
    lines = text.splitlines()
    index: dict[str, int] = {}
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        where = f"{path}:{i + 1}"
        if not sep or not hashed.startswith("$argon2"):
            raise ConfigError(f"{where}: expected 'name:$argon2...' (a line made by goniec user add)")
        try:
            check_name(name)
        except UserError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if name in index:
            raise ConfigError(f"{where}: user {name!r} already defined on line {index[name] + 1}")
        index[name] = i
    return _Parsed(lines, index)


class UserStore:
    """Accounts in a users file, reloaded whenever the file changes on disk.

    `verify` runs an argon2 hash check, which takes tens of milliseconds of CPU
    on purpose: the class is synchronous, and the server must call it in a
    worker thread (`asyncio.to_thread(store.verify, name, password)`), never on
    the event loop. All methods are thread-safe. Pass a cheap `hasher`
    (e.g. `PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)`) in tests.
    """

    def __init__(self, path: str | Path, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._parsed = _Parsed([], {})
        self._dummy_hash: str | None = None

    # ---------------------------------------------------------------- reading
    def _current(self) -> _Parsed:
        """The parsed file, re-read when its inode, size or mtime changed."""
        try:
            stamp, text = securefile.read_changed(self.path, self._stamp)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: cannot read users file: {exc}") from None
        if text is not None:
            self._parsed = _parse(self.path, text) if stamp is not None else _Parsed([], {})
            self._stamp = stamp
        return self._parsed

    def list(self) -> list[str]:
        """User names, sorted."""
        with self._lock:
            return sorted(self._current().index)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return isinstance(name, str) and name in self._current().index

    def verify(self, name: str, password: str) -> bool:
        """True when `name` exists and `password` matches; False otherwise.

        An unknown user costs the same hash check as a known one, so response
        time does not tell a client which names exist.
        """
        with self._lock:
            hashed = self._current().hash_of(name)
            if hashed is None:
                if self._dummy_hash is None:
                    self._dummy_hash = self.hasher.hash("goniec-no-such-user")
                hashed, known = self._dummy_hash, False
            else:
                known = True
        try:
            ok = self.hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and known

    # ---------------------------------------------------------------- writing
    def add(self, name: str, password: str, *, replace: bool = False) -> None:
        """Add a user (or set a new password with replace=True)."""
        check_name(name)
        if not password:
            raise UserError("password must not be empty")
        hashed = self.hasher.hash(password)
        with self._edit() as parsed:
            i = parsed.index.get(name)
            if i is None:
                parsed.lines.append(f"{name}:{hashed}")
            elif replace:
                parsed.lines[i] = f"{name}:{hashed}"
            else:
                raise UserError(f"user {name!r} already exists")

    def delete(self, name: str) -> None:
        with self._edit() as parsed:
            i = parsed.index.get(name)
            if i is None:
                raise UserError(f"no such user: {name!r}")
            del parsed.lines[i]

    @contextlib.contextmanager
    def _edit(self) -> Iterator[_Parsed]:
        """Read-modify-write under the thread lock and the cross-process file lock."""
        with self._lock, self._file_lock():
            self._stamp = None  # always re-read: another process may have written
            parsed = self._current()
            yield parsed
            self._write("".join(line + "\n" for line in parsed.lines))
            self._stamp = None

    def _file_lock(self) -> contextlib.AbstractContextManager[None]:
        return securefile.file_lock(self.path)

    def _write(self, text: str) -> None:
        securefile.write_private(self.path, text)
