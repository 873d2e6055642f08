"""Local delivery: Maildir per mailbox, or the IIS Drop folder (blocking; run in a thread).

Owns the files written for local recipients:

- Maildir (the layout mail readers and IMAP servers such as Dovecot read):
  <root>/<domain>/<local part>/{tmp,new,cur}. A message is written to tmp/
  under a name unique per the Maildir spec (time, microseconds, pid, a
  counter and random bits, host), fsynced, hard-linked into new/ (a link
  never overwrites, unlike rename), unlinked from tmp/, and new/ is fsynced.
  As Postfix's local(8) does, `Return-Path:`, `X-Original-To:` (when the
  address was rewritten by an alias) and `Delivered-To:` are prepended.
- Drop folder (IIS, reference 8.1): one `.eml` file per recipient with
  `X-Sender:` and `X-Receiver:` envelope lines first, so it can be replayed
  through a Pickup folder; written under a dot-name, fsynced, renamed.

A message that already carries `Delivered-To:` for the same mailbox is a
forwarding loop (Postfix: "mail forwarding loop"): `LocalError` 5.4.6.
Raises `LocalError` whose reply is temporary (4.2.2 mailbox full, 4.3.0
other storage trouble) or permanent (5.4.6 loop, 5.1.3 bad mailbox name).
The message bytes are copied as stored (CRLF line ends).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from goniec.errors import Reply, SMTPError

_CHUNK = 64 << 10
_counter = itertools.count()
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class LocalError(SMTPError):
    """Local delivery failed; `reply` says why and whether to retry."""


def storage_failed(exc: OSError, what: str) -> LocalError:
    if exc.errno in _FULL:  # RFC 3463 X.2.2 mailbox full: temporary
        return LocalError(Reply(452, "4.2.2", f"{what}: mailbox full ({exc.strerror})"))
    return LocalError(Reply(451, "4.3.0", f"{what}: {exc.strerror or exc}"))


def unique_name(hostname: str | None = None) -> str:
    """A Maildir-unique name: "<sec>.M<usec>P<pid>Q<n>R<rand>.<host>" (cr.yp.to/proto/maildir)."""
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    host = (hostname or socket.gethostname()).replace("/", "\\057").replace(":", "\\072")
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(8)}.{host}"


def mailbox_dir(root: Path, mailbox: str) -> Path:
    """<root>/<domain>/<local>/ for "local@domain"; names that could escape `root` refused."""
    local, _, domain = mailbox.rpartition("@")
    if not local:
        local, domain = domain, "localhost"
    for part in (local, domain):
        if (not part or part in (".", "..") or "/" in part or "\x00" in part
                or part.startswith(".")):
            raise LocalError(Reply(550, "5.1.3", f"bad mailbox name {mailbox!r}"))
    return root / domain / local


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """mkdir -p, then fsync every directory that got a new entry."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        _sync_dir(d.parent)


def _write_file(fd: int, head: bytes, body: BinaryIO) -> None:
    view = memoryview(head)
    while view:
        view = view[os.write(fd, view):]
    while chunk := body.read(_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    os.fsync(fd)


def _has_delivered_to(body: BinaryIO, address: str) -> bool:
    """Does the header already say Delivered-To: `address`? (reads the header only)."""
    want = address.lower().encode("utf-8", "replace")
    for line in body:
        if line in (b"\r\n", b"\n"):
            break
        if line[:13].lower() == b"delivered-to:" and line[13:].strip().lower() == want:
            return True
    return False


def _envelope_headers(sender: str, mailbox: str, original: str, delivered_to: bool) -> bytes:
    lines = [f"Return-Path: <{sender}>"]
    if original.lower() != mailbox.lower():
        lines.append(f"X-Original-To: {original}")
    if delivered_to:
        lines.append(f"Delivered-To: {mailbox}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


class LocalDelivery:
    """Writes local mail. mode: "maildir" (under `maildir_root`) or "drop" (`drop_dir`)."""

    def __init__(self, mode: str, *, maildir_root: Path, drop_dir: Path, hostname: str,
                 delivered_to: bool = True) -> None:
        if mode not in ("maildir", "drop"):
            raise ValueError(f"unknown local delivery mode {mode!r}")
        self.mode = mode
        self.maildir_root = Path(maildir_root)
        self.drop_dir = Path(drop_dir)
        self.hostname = hostname
        self.delivered_to = delivered_to

    def deliver(self, open_body: Callable[[], BinaryIO], *, sender: str, mailbox: str,
                original: str) -> Path:
        """Store one copy for `mailbox` ("local@domain"); the path written. Blocking."""
        if self.delivered_to:
            with open_body() as body:
                if _has_delivered_to(body, mailbox):
                    raise LocalError(Reply(554, "5.4.6", f"mail forwarding loop for {mailbox}"))
        if self.mode == "drop":
            return self._drop(open_body, sender, mailbox)
        return self._maildir(open_body, sender, mailbox, original)

    def _maildir(self, open_body: Callable[[], BinaryIO], sender: str, mailbox: str,
                 original: str) -> Path:
        box = mailbox_dir(self.maildir_root, mailbox)
        head = _envelope_headers(sender, mailbox, original, self.delivered_to)
        name = unique_name(self.hostname)
        tmp, new = box / "tmp" / name, box / "new" / name
        try:
            for sub in ("tmp", "new", "cur"):
                if not (box / sub).is_dir():
                    _make_dirs(box / sub)
            fd = os.open(tmp, _CREATE, 0o600)
            try:
                with open_body() as body:
                    _write_file(fd, head, body)
            finally:
                os.close(fd)
            try:
                os.link(tmp, new)  # never replaces an existing message
            finally:
                os.unlink(tmp)
            _sync_dir(box / "new")
        except OSError as exc:
            _unlink_quiet(tmp)
            raise storage_failed(exc, f"maildir {box}") from exc
        return new

    def _drop(self, open_body: Callable[[], BinaryIO], sender: str, mailbox: str) -> Path:
        # IIS writes X-Sender/X-Receiver first, so the file can go back through Pickup.
        head = f"X-Sender: {sender}\r\nX-Receiver: {mailbox}\r\n".encode()
        name = unique_name(self.hostname).replace("\\", "_")
        tmp, final = self.drop_dir / f".{name}.tmp", self.drop_dir / f"{name}.eml"
        try:
            if not self.drop_dir.is_dir():
                _make_dirs(self.drop_dir)
            fd = os.open(tmp, _CREATE, 0o600)
            try:
                with open_body() as body:
                    _write_file(fd, head, body)
            finally:
                os.close(fd)
            os.rename(tmp, final)  # readers never see a partial .eml
            _sync_dir(self.drop_dir)
        except OSError as exc:
            _unlink_quiet(tmp)
            raise storage_failed(exc, f"drop folder {self.drop_dir}") from exc
        return final


def _unlink_quiet(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
