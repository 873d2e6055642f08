"""Helpers of the end-to-end delivery tests: a recording SMTP peer, spool and Maildir readers.

`Sink` is an aiosmtpd server on 127.0.0.1 (its own thread) that records every
message it accepts, can answer 451 to the first attempts (greylisting) and
can take its time per message (a slow destination). `sender_server()` makes
the delivering goniec ("A"): delivery on, its resolver pointed at the loopback
DNS server of the test, outbound mail sent to the given loopback port. The
readers look at a server's spool through the queue API and at its Maildirs.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from goniec.queue.api import QueuedMessage
from goniec.queue.fs import FsQueueStore
from goniec.testing.dnsserver import ZoneServer
from goniec.testing.process import ServerProcess, free_port, make_server

SENDER_HOST = "mx-a.sender.test"  # A's server.hostname: its Received: and its EHLO name
DEST_HOST = "mx-b.dest.test"  # B's


def wait_until(check: Callable[[], bool], what: str, *, timeout: float = 15.0,
               logs: Callable[[], str] = lambda: "") -> None:
    """Poll `check` every 20 ms; fail with `what` (and the server logs) after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs()}")
        time.sleep(0.02)


def sender_server(workdir: Path, dns: ZoneServer, port: int, *, workers: int = 1,
                  **delivery: Any) -> ServerProcess:
    """goniec A: accepts on a plain loopback listener, relays for 127.0.0.1 (the default),
    local domain sender.test (reports come back to its Maildir), resolves through `dns`,
    delivers to `port`. Short timers so a test never waits long."""
    settings: dict[str, Any] = {
        "enabled": True, "port": port, "scan_interval": 0.1, "retry": ["1s"],
        "connect_timeout": 2, "command_timeout": 5, "idle_timeout": 1,
    }
    settings.update(delivery)
    return make_server(
        workdir, listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
        server={"hostname": SENDER_HOST, "workers": workers},
        domains={"local": ["sender.test"]},
        dns={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2},
        delivery=settings,
    )


def logs_of(*servers: ServerProcess) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {s.workdir.name} log ---\n{s.log()[-6000:]}" for s in servers)


# --- reading a server's spool and Maildirs ---------------------------------------------

@dataclass(frozen=True)
class Stored:
    record: QueuedMessage
    data: bytes


def spool(server: ServerProcess) -> list[Stored]:
    """The messages in `server`'s spool, read through the queue API (oldest first)."""
    store = FsQueueStore(server.data_dir / "spool", min_free_space=0)
    try:
        out = []
        for qid in server.spool_ids():
            record = store.get(qid)
            if record is None:
                continue
            with store.open_message(qid) as fh:
                out.append(Stored(record, fh.read()))
        return sorted(out, key=lambda s: s.record.created)
    finally:
        store.close()


def maildir(server: ServerProcess, domain: str, local: str) -> list[bytes]:
    new = server.data_dir / "mail" / domain / local / "new"
    if not new.is_dir():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir())]


def split_trace(data: bytes) -> tuple[list[bytes], bytes]:
    """(the leading Received: fields, unfolded; the rest, byte for byte)."""
    fields: list[bytes] = []
    rest = data
    while rest.startswith(b"Received:"):
        end = rest.index(b"\r\n")
        while rest[end + 2:end + 3] in (b" ", b"\t"):  # folded continuation lines
            end = rest.index(b"\r\n", end + 2)
        fields.append(rest[:end].replace(b"\r\n", b""))
        rest = rest[end + 2:]
    return fields, rest


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


# --- a recording destination -------------------------------------------------------------

@dataclass(frozen=True)
class Got:
    sender: str
    rcpts: tuple[str, ...]
    data: bytes
    at: float


class Sink:
    """An SMTP destination on 127.0.0.1 that records what it accepts.

    defer_first: answer `451 4.7.1` to every RCPT of the first so many transactions
    (greylisting), then accept. delay: seconds to take per message between
    storing it and the 250 (a slow destination): a sender killed while waiting
    does not know it was delivered and sends it again (a duplicate, never a loss).
    """

    def __init__(self, *, defer_first: int = 0, delay: float = 0.0) -> None:
        self.defer_first = defer_first
        self.delay = delay
        self.lock = threading.Lock()
        self.got: list[Got] = []
        self.transactions: list[float] = []  # when each MAIL FROM came
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                     server_hostname="sink.dest.test", decode_data=False,
                                     ready_timeout=10)

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        with self.lock:
            self.transactions.append(time.monotonic())
            envelope.greylisted = len(self.transactions) <= self.defer_first
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if envelope.greylisted:
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        got = Got(envelope.mail_from, tuple(envelope.rcpt_tos),
                  bytes(envelope.original_content), time.monotonic())
        with self.lock:
            self.got.append(got)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 OK queued"

    def received(self) -> list[Got]:
        with self.lock:
            return list(self.got)

    def count(self) -> int:
        with self.lock:
            return len(self.got)
