"""aiosmtpd baseline servers for the acceptance benchmark (run as a subprocess).

Owns: one aiosmtpd SMTP listener on a loopback port, with either a handler that
discards every message or one that makes each message durable the way an MTA
spool does (write to tmp/, fsync, rename into queue/, fsync the directory) in a
worker thread, so the event loop is not blocked by the disk.

On SIGUSR1 it writes the number of accepted messages to --stats; SIGTERM and
SIGINT stop it. It binds only to 127.0.0.1 or ::1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP


class Discard:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 2.0.0 OK discarded"


class FsyncSpool:
    def __init__(self, spool: Path) -> None:
        self.count = 0
        self.tmp = spool / "tmp"
        self.queue = spool / "queue"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.queue.mkdir(parents=True, exist_ok=True)
        self.ids = itertools.count()

    def _store(self, name: str, data: bytes) -> None:
        tmp = self.tmp / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.queue / name)
        dfd = os.open(self.queue, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{os.getpid()}.{next(self.ids)}"
        head = f"from={envelope.mail_from}\nto={','.join(envelope.rcpt_tos)}\n\n".encode()
        await asyncio.to_thread(self._store, name, head + envelope.original_content)
        self.count += 1
        return f"250 2.0.0 OK queued as {name}"


async def serve(args: argparse.Namespace) -> None:
    handler: Discard | FsyncSpool
    handler = Discard() if args.mode == "discard" else FsyncSpool(Path(args.spool))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="bench-aiosmtpd.test",  # never let aiosmtpd ask DNS for the FQDN
            data_size_limit=args.max_size,
            ident="aiosmtpd bench",
        ),
        host=args.host,
        port=args.port,
        backlog=4096,
        reuse_address=True,
    )
    stop = asyncio.Event()

    def dump_stats() -> None:
        tmp = args.stats + ".tmp"
        Path(tmp).write_text(str(handler.count))
        os.replace(tmp, args.stats)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_stats)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description="aiosmtpd benchmark baseline")
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["discard", "fsync"], default="discard")
    p.add_argument("--spool", default="spool")
    p.add_argument("--stats", required=True)
    p.add_argument("--max-size", type=int, default=200 * 1024 * 1024)
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
