"""`goniec sendmail`: the sendmail-compatible command many Unix programs expect.

Owns the sendmail command line (`[-t] [-i] [-f sender] [-F name] [-C config]
[-N dsn] [-R ret] [-V envid] [recipients...]`, plus the -o, -b and -v options
that callers pass out of habit), reading the message from stdin and handing it
to the queue through the queue API (`queue.submit`: the queue module stays the
one writer of the spool; the running server's queue runner finds the message
at its next scan). The config is found as `goniec serve` finds it, or given
with -C as sendmail does.

As Postfix's sendmail does: without -i (or -oi) a line with a lone "."
ends the message; -t takes recipients from To:, Cc: and Bcc: and adds them to
those on the command line; Bcc: is removed; From:, Date: and Message-ID: are
added when missing; bare LF line ends become CRLF. Exit codes from
sysexits.h: 0 queued, 64 usage, 65 bad message, 75 temporary failure (queue
full or failing), 78 configuration error. Never raises.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import errno
import getpass
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from goniec.config import find_config_file, load_config
from goniec.errors import ConfigError, SMTPError
from goniec.model import Envelope, MailParams, Recipient

EX_OK, EX_USAGE, EX_DATAERR, EX_TEMPFAIL, EX_CONFIG = 0, 64, 65, 75, 78
USAGE = ("usage: goniec sendmail [-t] [-i] [-f sender] [-F name] [-C config] [-N dsn]"
         " [-R ret] [-V envid] [recipient ...]")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_WITH_VALUE = {"f", "r", "F", "C", "N", "R", "V", "B", "h", "L", "O", "X", "p", "q"}


class UsageError(Exception):
    pass


@dataclass
class Options:
    extract: bool = False  # -t
    ignore_dots: bool = False  # -i / -oi
    sender: str | None = None  # -f / -r
    full_name: str | None = None  # -F
    config: str | None = None  # -C
    notify: frozenset[str] | None = None  # -N
    ret: str | None = None  # -R
    envid: str | None = None  # -V
    recipients: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Options:
    opts = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            opts.recipients += args
            break
        if not arg.startswith("-") or arg == "-":
            opts.recipients.append(arg)
            continue
        flag, rest = arg[1], arg[2:]
        if flag in _WITH_VALUE:
            if not rest:
                if not args:
                    raise UsageError(f"option -{flag} needs a value")
                rest = args.pop(0)
            _set_value(opts, flag, rest)
        elif flag == "t":
            opts.extract = True
        elif flag == "i":
            opts.ignore_dots = True
        elif flag == "o":  # -oi, -odb, -oem, ...: only -oi changes anything here
            opts.ignore_dots = opts.ignore_dots or rest == "i"
        elif flag == "b":
            if rest not in ("m", ""):
                raise UsageError(f"mode -b{rest} is not supported (only -bm, deliver mail)")
        elif flag in ("v", "m", "n", "U", "G", "d"):
            pass  # verbose, me-too, no aliasing, initial submission: harmless
        else:
            raise UsageError(f"unknown option {arg}")
    return opts


def _set_value(opts: Options, flag: str, value: str) -> None:
    if flag in ("f", "r"):
        opts.sender = "" if value == "<>" else value.strip().strip("<>")
    elif flag == "F":
        opts.full_name = value
    elif flag == "C":
        opts.config = value
    elif flag == "N":  # RFC 3461 NOTIFY: never, or any of success, failure, delay
        words = frozenset(w.strip().upper() for w in value.split(",") if w.strip())
        if not words or not words <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"} or (
                "NEVER" in words and len(words) > 1):
            raise UsageError(f"-N {value}: use never, or success,failure,delay")
        opts.notify = words
    elif flag == "R":
        if value.upper() not in ("FULL", "HDRS"):
            raise UsageError(f"-R {value}: use full or hdrs")
        opts.ret = value.upper()
    elif flag == "V":
        opts.envid = value
    # -B, -h, -L, -O, -X, -p, -q take a value that changes nothing here


def read_message(stdin: BinaryIO, ignore_dots: bool) -> bytes:
    """The message from stdin with CRLF line ends; a lone "." ends it unless -i."""
    data = _BARE_LF.sub(b"\r\n", stdin.read())
    if not ignore_dots:
        lines = data.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.rstrip(b"\r\n") == b".":
                data = b"".join(lines[:i])
                break
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _header_end(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data)  # header only (or a body without header: handled as header)
    return end + 2


def prepare(data: bytes, opts: Options, sender: str, hostname: str,
            now: float) -> tuple[bytes, list[str]]:
    """The message to queue (Bcc: removed, missing fields added) and its recipients."""
    from goniec.delivery.pickup import drop_fields  # shared with the Pickup folder

    end = _header_end(data)
    head, body = data[:end], data[end:]
    if head and b":" not in head.split(b"\r\n", 1)[0]:
        head, body = b"", data  # no header at all: everything is body
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        head + b"\r\n")
    rcpts = list(opts.recipients)
    if opts.extract:
        fields = [str(v) for name in ("to", "cc", "bcc") for v in parsed.get_all(name, [])]
        rcpts += [a for _, a in email.utils.getaddresses(fields) if a]
    lines = drop_fields(head.splitlines(keepends=True))
    added = []
    if parsed.get("From") is None:
        name = f"{opts.full_name} " if opts.full_name else ""
        added.append(f"From: {name}<{sender}>" if name else f"From: {sender}")
    if parsed.get("Date") is None:
        added.append(f"Date: {email.utils.formatdate(now, localtime=True)}")
    if parsed.get("Message-ID") is None:
        added.append(f"Message-ID: {email.utils.make_msgid(domain=hostname)}")
    extra = "".join(f"{h}\r\n" for h in added).encode("utf-8")
    if not head and body:
        body = b"\r\n" + body  # the blank line that separates our header from the body
    return b"".join(lines) + extra + body, list(dict.fromkeys(rcpts))


async def _queue(config_spool: str, min_free: int, data: bytes, env: Envelope, user: str,
                 hostname: str, now: float) -> str:
    from goniec.queue.api import SubmissionInfo, storage_error
    from goniec.queue.fs import FsQueueStore  # the CLI may name the spool backend
    from goniec.queue.submit import local_received, submit

    store = FsQueueStore(config_spool, min_free_space=min_free, workers=2)
    try:
        if not store.free_space_ok(len(data)):
            raise storage_error(OSError(errno.ENOSPC, "below queue.min_free_space"))
        source = f"sendmail, from userid {os.getuid()}"
        return await submit(store, [data], env, SubmissionInfo("sendmail", "", None, user),
                            header=lambda q: local_received(hostname, source, q, now))
    finally:
        store.close()


def main(argv: Sequence[str] | None = None, stdin: BinaryIO | None = None,
         stderr: TextIO | None = None) -> int:
    err = stderr or sys.stderr
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"sendmail: {exc}\n{USAGE}", file=err)
        return EX_USAGE
    try:
        config = load_config(find_config_file(opts.config))
    except ConfigError as exc:
        print(f"sendmail: {exc}", file=err)
        return EX_CONFIG
    hostname = config.server.hostname
    user = getpass.getuser()
    sender = opts.sender if opts.sender is not None else f"{user}@{hostname}"
    now = time.time()
    data = read_message(stdin or sys.stdin.buffer, opts.ignore_dots)
    message, rcpts = prepare(data, opts, sender or f"MAILER-DAEMON@{hostname}", hostname, now)
    bad = [r for r in rcpts if any(c.isspace() or ord(c) < 32 for c in r)]
    if bad:
        print(f"sendmail: bad recipient address {bad[0]!r}", file=err)
        return EX_DATAERR
    if not rcpts:
        print("sendmail: no recipient addresses found (give them as arguments, or use -t)",
              file=err)
        return EX_USAGE
    params = MailParams(body=None if message.isascii() else "8BITMIME",
                        smtputf8=not all(a.isascii() for a in (sender, *rcpts)),
                        ret=opts.ret, envid=opts.envid)
    env = Envelope(sender, tuple(Recipient(r, opts.notify) for r in rcpts), params)
    try:
        asyncio.run(_queue(str(config.spool_path), config.min_free_space_bytes, message, env,
                           user, hostname, now))
    except SMTPError as exc:
        print(f"sendmail: cannot queue the message: {exc.reply}", file=err)
        return EX_TEMPFAIL
    except OSError as exc:
        print(f"sendmail: cannot queue the message: {exc}", file=err)
        return EX_TEMPFAIL
    return EX_OK


def entry() -> None:
    """Console script `goniec-sendmail` (link it as /usr/sbin/sendmail)."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
