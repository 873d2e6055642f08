"""Small private files that several processes rewrite: the users, admin users and tokens files.

Owns the two ways such a file is changed safely: an advisory lock in a
sibling `<file>.lock` (flock, released when its holder closes it or dies) that
serialises writers in different processes, and the atomic rewrite (a 0600
temp file in the same directory, fsync, rename over the old one, fsync of the
directory), so a reader sees the old file or the new one, never half of one.
`read_changed` reads such a file again only when it changed (its inode, size
or mtime), so a check per login or API call costs one stat. Raises OSError.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

Stamp = tuple[int, int, int]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive writer's lock of `path` (making its folder, 0700, if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically and durably, mode 0600."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_changed(path: Path, stamp: Stamp | None) -> tuple[Stamp | None, str | None]:
    """(stamp, text) of `path` when it changed since `stamp`; (stamp, None) when it did
    not; (None, "") when it does not exist. OSError and UnicodeDecodeError when it
    cannot be read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, ""
    now = (st.st_ino, st.st_size, st.st_mtime_ns)
    if now == stamp:
        return stamp, None
    return now, path.read_text(encoding="utf-8")
