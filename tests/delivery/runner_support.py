"""Real SMTP peers on loopback and the runner wiring for the queue-runner tests.

`Peer` is an aiosmtpd server (in its own thread) whose answer depends on the
recipient's local part: "ok*" accepts, "defer*" says 451, "refuse*" says
550 5.1.1; `mode` "defer" defers everyone, "drop" closes the connection at DATA, "stall" never
answers after the greeting. `StaticResolver` sends each domain to a peer.
`Harness` builds a `Runner` over a real `FsQueueStore` with the real
`SmtpTransport`, a controllable clock and short client timeouts.
"""

from __future__ import annotations

import asyncio
import email
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from goniec.config.delivery import DeliverySection
from goniec.delivery.destination import SmartHost, Target
from goniec.delivery.service import DeliveryService, build_service
from goniec.model import Envelope, MailParams, Recipient
from goniec.policy.domains import Domains
from goniec.policy.recipients import Directory, RecipientTable
from goniec.queue.api import SubmissionInfo
from goniec.queue.fs import FsQueueStore
from goniec.queue.submit import submit
from goniec.testing.process import free_port

BODY = (b"From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: runner test\r\n"
        b"Message-ID: <t1@sender.test>\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\n")


@dataclass
class Got:
    sender: str
    rcpts: list[str]
    data: bytes
    rcpt_options: list[Any] = field(default_factory=list)


class _Handler:
    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        local = address.split("@", 1)[0].lower()
        if local.startswith("defer") or self.peer.mode == "defer":
            return "451 4.3.0 try again later"
        if local.startswith("refuse"):
            return f"550 5.1.1 <{address}>: user unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.peer.mode == "drop":
            server.transport.close()
            return "421 gone"
        self.peer.received.append(Got(envelope.mail_from, list(envelope.rcpt_tos),
                                      bytes(envelope.original_content)))
        return "250 2.0.0 queued"


class _StallSMTP(SMTP):
    async def _handle_client(self) -> None:  # greet, then never read or answer again
        await self.push("220 stall.test ESMTP")
        await asyncio.sleep(3600)


class _StallController(Controller):
    def factory(self) -> SMTP:
        return _StallSMTP(self.handler, hostname="stall.test")


class Peer:
    def __init__(self, mode: str = "normal", host: str = "127.0.0.1") -> None:
        self.mode = mode
        self.received: list[Got] = []
        cls = _StallController if mode == "stall" else Controller
        self._port = free_port(host)
        self.controller = cls(_Handler(self), hostname=host, port=self._port,
                              server_hostname=f"{mode}.peer.test", decode_data=False,
                              ready_timeout=10)

    def start(self) -> Peer:
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return self._port

    def stop(self) -> None:
        self.controller.stop()

    def reports(self) -> list[email.message.Message]:
        return [email.message_from_bytes(g.data) for g in self.received if g.sender in ("", "<>")]


class StaticResolver:
    """domain -> port on 127.0.0.1 (the `Resolver` port, without DNS)."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.asked: list[str] = []

    async def mx_targets(self, domain: str, port: int) -> list[Target]:
        from goniec.delivery.resolver import LookupFailed
        from goniec.errors import Reply

        self.asked.append(domain)
        if domain not in self.ports:
            raise LookupFailed(Reply(550, "5.1.2", f"no such domain {domain}"))
        return [Target(f"mx.{domain}", "127.0.0.1", self.ports[domain])]

    async def smart_host_targets(self, spec: SmartHost, default_port: int) -> list[Target]:
        self.asked.append(str(spec))
        return [Target(spec.host, spec.address or "127.0.0.1",
                       spec.port or self.ports.get(spec.host, default_port))]


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Harness:
    def __init__(self, root: Path, ports: dict[str, int], *,
                 local_domains: frozenset[str] = frozenset(),
                 tables: dict[str, RecipientTable] | None = None, **delivery: Any) -> None:
        self.clock = Clock()
        self.root = root
        self.store = FsQueueStore(root / "spool", min_free_space=0, clock=self.clock)
        self.resolver = StaticResolver(ports)
        settings: dict[str, Any] = {"mx_tls": "none", "smart_host_tls": "none",
                                    "connect_timeout": 2, "command_timeout": 2}
        settings.update(delivery)
        self.delivery = DeliverySection.model_validate(settings, context={"base_dir": root})
        directory = Directory(Domains(local=local_domains), tables or {})
        self.service: DeliveryService = build_service(
            self.delivery, store=self.store, resolver=self.resolver, hostname="mx.goniec.test",
            data_dir=root, directory=directory, clock=self.clock)
        self.runner = self.service.runner

    async def put(self, *rcpts: str | Recipient, sender: str = "alice@sender.test",
                  body: bytes = BODY, ret: str | None = None, envid: str | None = None) -> str:
        env = Envelope(sender, tuple(r if isinstance(r, Recipient) else Recipient(r)
                                     for r in rcpts), MailParams(ret=ret, envid=envid))
        return await submit(self.store, [body], env, SubmissionInfo("t", "127.0.0.1"))

    async def close(self) -> None:
        await self.service.transport.close()
        self.store.close()
