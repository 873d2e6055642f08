"""The Pickup folder: message files dropped by applications, queued once (IIS, .NET).

Owns reading the Pickup folder (reference 9.1) and turning each file into a
queued message through the queue API (`queue.submit`):

- `parse_pickup()` (pure): optional `x-sender:` / `x-receiver:` lines at
  the top give the envelope and are removed; without `x-receiver:` the
  recipients come from To:, Cc: and Bcc: and the sender from `x-sender:`
  or From:. Bcc: is always removed (RFC 5322 3.6.3). Files in SMTP form
  (dots doubled, a lone "." as the last line: .NET Framework, IIS with
  SmtpDotStuffPickupDirFiles) are un-stuffed (RFC 5321 4.5.2); plain files
  (.NET Core, MimeKit) are taken byte for byte. `dot_stuffed` says which:
  "auto" (SMTP form iff the last line is a lone dot), "always", "never".
  Bare LF line ends become CRLF. Raises `PickupError` saying what is wrong.
- `PickupFolder`: claims a file by renaming it into `.processing/` (atomic:
  exactly one scanner of any process wins), queues it, then deletes it. A
  crash between claim and queueing leaves it in `.processing/`, where
  `recover()` finds it at the next start (a crash after queueing but before
  the delete gives one duplicate, never a loss). A file that cannot be parsed
  goes to Badmail with the reason. Files whose names start with "." or that
  another process holds an flock on (.NET FileShare.None) are left alone,
  as are files modified in the last `settle` seconds (a writer still busy).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import email.utils
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from goniec.delivery.badmail import Badmail
from goniec.errors import SMTPError
from goniec.model import Envelope, MailParams, Recipient
from goniec.obs import track
from goniec.queue import ids
from goniec.queue.api import QueueStore, SubmissionInfo
from goniec.queue.submit import local_received, submit

log = logging.getLogger("goniec.delivery")

PROCESSING = ".processing"
_BARE_LF = re.compile(rb"(?<!\r)\n")
_ENVELOPE_LINE = re.compile(rb"(?i)(x-sender|x-receiver)[ \t]*:[ \t]*(.*)")
_REMOVE = {b"bcc"}


class PickupError(ValueError):
    """A pickup file that cannot be queued; the message says why (for the .bdr note)."""


@dataclass(frozen=True, slots=True)
class PickupMessage:
    sender: str
    recipients: tuple[str, ...]
    data: bytes  # the message to queue, CRLF, envelope lines and Bcc: removed


def _address(raw: bytes, what: str) -> str:
    text = raw.decode("utf-8", "strict").strip()
    _, addr = email.utils.parseaddr(text) if "<" in text else ("", text)
    addr = addr.strip().strip("<>")
    if what == "x-sender" and addr == "":
        return ""  # "x-sender: <>": the null sender
    if not addr or any(c.isspace() or ord(c) < 32 for c in addr) or (
            "@" not in addr and addr.lower() != "postmaster"):
        raise PickupError(f"{what}: {text!r} is not an address")
    return addr


def _unstuff(lines: list[bytes], mode: str) -> list[bytes]:
    """Lines (each with its CRLF) of an SMTP-form file, un-stuffed; others as they are."""
    last = len(lines) - 1
    while last >= 0 and lines[last] in (b"\r\n", b""):
        last -= 1  # blank lines after the dot are harmless
    if mode == "never" or (mode == "auto" and (last < 0 or lines[last].rstrip(b"\r\n") != b".")):
        return lines
    end = next((i for i, line in enumerate(lines) if line.rstrip(b"\r\n") == b"."), None)
    if end is not None and any(line.strip() for line in lines[end + 1:]):
        raise PickupError(f"data after the end-of-data line (line {end + 1})")
    body = lines[:end] if end is not None else lines
    # RFC 5321 4.5.2: a line starting with "." had it doubled; take one away.
    return [line[1:] if line.startswith(b".") else line for line in body]


def _split_header(lines: list[bytes]) -> int:
    """Index of the blank line ending the header (len(lines) when there is no body)."""
    for i, line in enumerate(lines):
        if line == b"\r\n":
            return i
        if i == 0 and (line[:1] in (b" ", b"\t") or b":" not in line):
            raise PickupError("the file does not start with a header field")
    return len(lines)


def drop_fields(head: list[bytes]) -> list[bytes]:
    out, skipping = [], False
    for line in head:
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the field before
            if not skipping:
                out.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() in _REMOVE
        if not skipping:
            out.append(line)
    return out


def parse_pickup(data: bytes, *, dot_stuffed: str = "auto") -> PickupMessage:
    """The envelope and message of one pickup file. Raises `PickupError`."""
    if not data.strip():
        raise PickupError("the file is empty")
    data = _BARE_LF.sub(b"\r\n", data)
    lines = data.splitlines(keepends=True)
    sender: str | None = None
    receivers: list[str] = []
    n = 0
    while n < len(lines) and (m := _ENVELOPE_LINE.fullmatch(lines[n].rstrip(b"\r\n"))):
        try:
            if m.group(1).lower() == b"x-sender":
                if sender is not None:
                    raise PickupError("more than one x-sender line")
                sender = _address(m.group(2), "x-sender")
            else:
                receivers.append(_address(m.group(2), "x-receiver"))
        except UnicodeDecodeError:
            raise PickupError(f"line {n + 1}: the address is not UTF-8") from None
        n += 1
    lines = _unstuff(lines[n:], dot_stuffed)
    if not lines:
        raise PickupError("no message after the envelope lines")
    if not lines[-1].endswith(b"\r\n"):
        lines[-1] += b"\r\n"  # RFC 5322 2.1: a message is made of CRLF-terminated lines
    end = _split_header(lines)
    head = lines[:end]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        b"".join(head) + b"\r\n")
    if not receivers:
        fields = [str(v) for name in ("to", "cc", "bcc") for v in parsed.get_all(name, [])]
        receivers = [_address(a.encode(), "recipient") for _, a in email.utils.getaddresses(fields)
                     if a]
    if sender is None:
        found = email.utils.getaddresses([str(v) for v in parsed.get_all("from", [])])
        if not found or not found[0][1]:
            raise PickupError("no sender: neither an x-sender line nor a From: address")
        sender = _address(found[0][1].encode(), "from")
    if not receivers:
        raise PickupError("no recipients: no x-receiver line and no To:, Cc: or Bcc: address")
    message = b"".join(drop_fields(head) + lines[end:])
    return PickupMessage(sender, tuple(dict.fromkeys(receivers)), message)


def _locked_by_writer(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class PickupFolder:
    def __init__(self, folder: Path, store: QueueStore, badmail: Badmail, *, hostname: str,
                 dot_stuffed: str = "auto", settle: float = 0.0,
                 on_queued: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.processing = self.folder / PROCESSING
        self.store = store
        self.badmail = badmail
        self.hostname = hostname
        self.dot_stuffed = dot_stuffed
        self.settle = settle
        self.on_queued = on_queued
        self.clock = clock

    def _claim(self, name: str) -> Path | None:
        src = self.folder / name
        try:
            st = src.lstat()
        except FileNotFoundError:
            return None
        if not src.is_file() or src.is_symlink() or time.time() - st.st_mtime < self.settle:
            return None
        if _locked_by_writer(src):
            return None
        dest = self.processing / f"{ids.new_id()}-{name}"
        try:
            os.rename(src, dest)  # atomic: exactly one claimer wins
        except FileNotFoundError:
            return None  # another scanner was first
        return dest

    async def recover(self) -> int:
        """Queue files claimed before a crash; how many."""
        self.processing.mkdir(parents=True, exist_ok=True, mode=0o700)
        left = sorted(p for p in self.processing.iterdir() if p.is_file())
        for path in left:
            log.info("pickup.recovered file=%s", path.name)
            await self._process(path)
        return len(left)

    async def scan_once(self) -> int:
        """Claim and queue every ready file; the number taken."""
        self.processing.mkdir(parents=True, exist_ok=True, mode=0o700)
        taken = 0
        for name in sorted(os.listdir(self.folder)):
            if name.startswith("."):
                continue
            claimed = self._claim(name)
            if claimed is not None:
                taken += 1
                await self._process(claimed)
        return taken

    async def _process(self, path: Path) -> None:
        original = path.name.split("-", 1)[-1]
        data = await asyncio.to_thread(path.read_bytes)
        try:
            msg = parse_pickup(data, dot_stuffed=self.dot_stuffed)
        except PickupError as exc:
            await asyncio.to_thread(self._bad, path, original, data, str(exc))
            return
        params = MailParams(body=None if msg.data.isascii() else "8BITMIME",
                            smtputf8=not all(a.isascii() for a in (msg.sender, *msg.recipients)))
        env = Envelope(msg.sender, tuple(Recipient(r) for r in msg.recipients), params)
        now = self.clock()
        try:
            qid = await submit(self.store, [msg.data], env,
                               SubmissionInfo(f"pickup:{original}", "", None, None),
                               header=lambda q: local_received(self.hostname, "pickup", q, now))
        except SMTPError as exc:  # the spool is full or failing: try again at the next scan
            log.warning("pickup.deferred file=%s reply=%r", original, str(exc.reply))
            with contextlib.suppress(OSError):
                if not (self.folder / original).exists():
                    os.rename(path, self.folder / original)
            return
        path.unlink(missing_ok=True)
        track.received(qid, listener="pickup", size=len(msg.data), sender=msg.sender,
                       recipients=msg.recipients)
        log.info("pickup.queued file=%s msg=%s from=<%s> nrcpt=%d", original, qid, msg.sender,
                 len(msg.recipients))
        if self.on_queued is not None:
            self.on_queued()

    def _bad(self, path: Path, original: str, data: bytes, reason: str) -> None:
        log.warning("pickup.badmail file=%s reason=%r", original, reason)
        try:
            self.badmail.put(f"pickup-{original}", [data], f"bad pickup file {original}: {reason}")
        except OSError as exc:
            log.error("pickup.badmail_failed file=%s error=%r", original, exc)
            return  # keep it in .processing: nothing is thrown away unrecorded
        path.unlink(missing_ok=True)

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Scan every `interval` seconds until `stop` is set."""
        try:
            await self.recover()
        except OSError as exc:
            log.error("pickup.recover_failed folder=%s error=%r", self.folder, exc)
        while not stop.is_set():
            try:
                await self.scan_once()
            except OSError as exc:
                log.error("pickup.scan_failed folder=%s error=%r", self.folder, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
