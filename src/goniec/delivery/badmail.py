"""The Badmail folder: mail that can be neither delivered nor returned (blocking).

Owns the files under the Badmail folder (IIS reference 9.4): for each entry
`<name>.bad`, the message (with `X-Sender:`/`X-Receiver:` lines first when
the envelope is known, so it can be replayed through the Pickup folder, as
IIS's .BAD files could), and `<name>.bdr`, one line of text saying why.
Both are written under dot-names, fsynced and renamed, .bdr first.

Retention (IIS grew Badmail without limit until MaxBadMailFolderSize came):
after each write, entries older than `max_age` go, then the oldest entries
until the folder holds at most `max_size` bytes. `max_size` 0 keeps nothing
(the reason is still logged by the caller). Raises `OSError` when the folder
cannot be written; callers log it and keep the message where it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("goniec.delivery")

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, _CREATE, 0o600)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


class Badmail:
    def __init__(self, folder: Path, *, max_size: int = 100_000_000,
                 max_age: float = 30 * 86400.0, clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.max_size = max_size
        self.max_age = max_age
        self.clock = clock

    def put(self, name: str, message: Iterable[bytes], reason: str, *,
            sender: str | None = None, recipients: Iterable[str] = ()) -> Path | None:
        """Keep `message` with `reason`; the .bad path, or None when retention keeps nothing."""
        if self.max_size <= 0:
            return None
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = name
        n = 0
        while (self.folder / f"{stem}.bad").exists():
            n += 1
            stem = f"{name}.{n}"
        head = b""
        if sender is not None:
            lines = [f"X-Sender: {sender}"] + [f"X-Receiver: {r}" for r in recipients]
            head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
        note = reason.replace("\r", " ").replace("\n", " ") + "\n"
        _write_atomic(self.folder / f"{stem}.bdr", [note.encode("utf-8")])
        _write_atomic(self.folder / f"{stem}.bad", [head, *message])
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.prune()
        return self.folder / f"{stem}.bad"

    def prune(self) -> int:
        """Apply the retention limits; the number of entries removed."""
        entries: dict[str, list[os.stat_result]] = {}
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        paths: dict[str, list[Path]] = {}
        for fname in names:
            stem, dot, ext = fname.rpartition(".")
            if not dot or fname.startswith(".") or ext not in ("bad", "bdr"):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.folder / fname)
                entries.setdefault(stem, []).append(st)
                paths.setdefault(stem, []).append(self.folder / fname)
        order = sorted(entries, key=lambda s: max(st.st_mtime for st in entries[s]))
        total = sum(st.st_size for sts in entries.values() for st in sts)
        now = self.clock()
        removed = 0
        for stem in order:
            age = now - max(st.st_mtime for st in entries[stem])
            if age <= self.max_age and total <= self.max_size:
                break
            for p in paths[stem]:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            total -= sum(st.st_size for st in entries[stem])
            removed += 1
        if removed:
            log.info("badmail.pruned entries=%d folder=%s", removed, self.folder)
        return removed
