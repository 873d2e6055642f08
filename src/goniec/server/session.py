"""One SMTP session: the thin shell between a client socket and the protocol core.

Owns the read/decide/write loop: feeds bytes to `ServerConnection`, hands its
decision events before the body to `decide` (which asks goniec.policy),
streams the body into the queue while counting its size and Received:
headers, answers the final dot, and drives timeouts and STARTTLS. A body that
needs sender checks or a DKIM signature is held whole instead and handed to
`mailauth_step` at the final dot. It holds no protocol rules (those live in
goniec.protocol) and no access or relay rules (goniec.policy).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from goniec.errors import Reply, SMTPError
from goniec.model import Envelope, MailParams, Recipient, SessionInfo
from goniec.obs import metrics, track
from goniec.obs.log import log_event
from goniec.policy.addresses import IPAddress, plain_ip
from goniec.policy.hops import ReceivedCounter
from goniec.policy.login import client_key
from goniec.policy.rules import UNCHECKED, ReverseDns
from goniec.policy.transaction import check_data_end
from goniec.protocol import ServerConnection, events
from goniec.replies import (
    R250_QUEUED,
    R421_CLOSED_BY_ADMIN,
    R421_SHUTTING_DOWN,
    R421_TIMEOUT,
    R451_LOCAL_ERROR,
    with_hostname,
)
from goniec.server import decide, mailauth_step
from goniec.server import tls as tlsmod
from goniec.server.received import received_header
from goniec.server.stream import ClientStream, Interrupted

if TYPE_CHECKING:
    from goniec.queue.api import MessageWriter
    from goniec.server.context import ListenerSpec, ServerContext


def new_session_id() -> str:
    """10 hex digits that tie a session's log lines together (not a secret).

    From the `random` module, which reseeds every forked worker from the
    kernel: os.urandom is a system call that lets go of the GIL, and on the
    event loop's thread that hands the GIL to a queue thread waiting for it
    and waits to get it back, tens of microseconds under load."""
    return f"{random.getrandbits(40):010x}"


@functools.lru_cache(maxsize=1024)  # clients come back: parse each address once
def _ip(text: str) -> IPAddress:
    try:
        return plain_ip(ipaddress.ip_address(text.split("%")[0]))
    except ValueError:
        return ipaddress.ip_address("::")


class Session:
    def __init__(self, ctx: ServerContext, spec: ListenerSpec, stream: ClientStream) -> None:
        self.ctx = ctx
        self.spec = spec
        self.stream = stream
        peer = stream.extra("peername") or ("?", 0)
        sock = stream.extra("sockname") or ("?", 0)
        self.info = SessionInfo(
            session_id=new_session_id(),
            peer_ip=str(peer[0]),
            peer_port=int(peer[1]),
            local_ip=str(sock[0]),
            local_port=int(sock[1]),
            listener=spec.name,
        )
        self.peer_addr = _ip(self.info.peer_ip)
        self.server_addr = _ip(self.info.local_ip)
        self.settings = ctx.settings
        self.rate_key = client_key(self.peer_addr, self.settings.rules.rates.ipv6_prefix)
        self.reverse: ReverseDns = UNCHECKED
        implicit = spec.tls == "implicit"
        if implicit:
            self._record_tls()
        # Protocol options (SIZE, AUTH offer) hold for the whole connection: EHLO
        # has advertised them; a reload reaches the next connection.
        options = self.settings.options.get(spec.name, spec.options)
        self.conn = ServerConnection(options, tls_active=implicit)
        self.counted = False
        self.held: mailauth_step.Held | None = None
        self._reset()
        self.log = ctx.log
        self.close_reply = R421_SHUTTING_DOWN  # said when the stream is interrupted
        self.messages = 0  # accepted in this session
        self.session_bytes = 0  # their body sizes
        ctx.sessions.add(self)

    def refresh_settings(self) -> bool:
        """Take the newest settings (after a reload); True when they changed."""
        current = self.ctx.settings
        if current is self.settings:
            return False
        self.settings = current
        self.rate_key = client_key(self.peer_addr, current.rules.rates.ipv6_prefix)
        return True

    def _reset(self) -> None:
        self.sender: str | None = None
        self.params = MailParams()
        self.recipients: list[Recipient] = []
        self.writer: MessageWriter | None = None
        self._drop_held()
        self.store_failed: Reply | None = None
        self.hold_reason: str | None = None  # store the message held (DMARC quarantine)
        self.body_bytes = 0
        self.hops: ReceivedCounter | None = None

    def _record_tls(self) -> None:
        version, cipher = tlsmod.describe(self.stream.extra("ssl_object"))
        self.info.tls_version, self.info.tls_cipher = version, cipher

    def event(self, event: str, /, level: int = logging.INFO, **kv: object) -> None:
        log_event(self.log, event, level=level, session=self.info.session_id, **kv)

    # -- main loop ----------------------------------------------------------------
    async def run(self) -> None:
        ctx = self.ctx
        self.event("connect", client=self.info.peer_ip, port=self.info.peer_port,
                    listener=self.spec.name, tls=self.info.tls_version or "no")
        metrics.current().session_opened(self.spec.name)
        try:
            await self._loop()
        except (ConnectionError, OSError) as exc:
            self.event("disconnect", reason=f"connection error: {exc}")
        except asyncio.CancelledError:
            self.event("disconnect", reason="server stopping")
            raise
        except Exception:
            self.log.exception("session=%s unexpected error", self.info.session_id)
        finally:
            metrics.current().session_closed(self.spec.name, self.info.tls_version)
            self.ctx.sessions.discard(self)
            await self._abort_message()
            if self.counted:
                ctx.counter.close(self.info.peer_ip)
            self.stream.close()

    async def _loop(self) -> None:
        conn = self.conn
        stream = self.stream
        while True:
            ev = conn.next_event()
            if ev is events.NEED_DATA:
                out = conn.data_to_send()
                if out:
                    await stream.write(out)
                timeouts = self.settings.timeouts
                timeout = timeouts.data_block if conn.in_data else timeouts.command
                try:
                    data = await stream.read(timeout)
                except TimeoutError:
                    self.event("timeout", after=timeout)
                    conn.close(with_hostname(R421_TIMEOUT, self.ctx.hostname))
                    continue
                except Interrupted:
                    conn.close(with_hostname(self.close_reply, self.ctx.hostname))
                    continue
                conn.receive_data(data)
                continue
            handler = _HANDLERS[type(ev)]
            if await handler(self, ev):
                return

    def shutdown(self) -> None:
        """Server stopping: an idle session ends now with 421 (RFC 5321 3.8);
        one that is receiving a message may finish it first."""
        if not self.conn.in_data:
            self.stream.interrupt()

    def disconnect(self) -> None:
        """An operator ends this session: 421 at its next read (RFC 5321 3.8); a message
        still arriving is not stored (the client was not told 250, so it tries again)."""
        self.close_reply = R421_CLOSED_BY_ADMIN
        self.stream.interrupt()

    # -- the body -------------------------------------------------------------------
    async def _on_chunk(self, ev: events.DataChunk) -> bool:
        if self.store_failed is not None:
            return False  # the rest of a body that can no longer be stored
        rules = self.settings.rules
        data = ev.data
        self.body_bytes += len(data)
        hops = self.hops
        if hops is None:
            hops = self.hops = ReceivedCounter(stop_after=rules.limits.hop_count)
        if not hops.done:
            hops.feed(data)
        verdict = check_data_end(rules, received_headers=hops.count,
                                 message_bytes=self.body_bytes, session_bytes=self.session_bytes)
        if verdict is not None:
            # Too many hops or past the session size: stop storing now, answer at the dot.
            self.store_failed = verdict
            await self._abort_message()
            return False
        held = self.held
        if held is None and self.writer is None:  # the first chunk
            held = self.held = mailauth_step.hold(self)
        if held is not None:
            await mailauth_step.feed(self, held, data)
            return False
        await self.store(data)
        return False

    async def store(self, data: bytes) -> None:
        """Append `data` to the stored message, creating it with our Received: first."""
        try:
            writer = self.writer
            if writer is None:
                writer = self.writer = self.ctx.queue.new_message()
                await writer.write(received_header(
                    self.info, hostname=self.ctx.hostname, queue_id=writer.queue_id,
                    recipients=[r.address for r in self.recipients]))
            await writer.write(data)
        except Exception as exc:
            # Disk full or any other storage failure: keep reading the body so the
            # session stays in step, and answer the final dot with 4xx.
            self.store_failed = exc.reply if isinstance(exc, SMTPError) else R451_LOCAL_ERROR
            if not isinstance(exc, SMTPError):
                self.log.exception("session=%s storing the body failed", self.info.session_id)
            await self._abort_message()

    async def _on_data_end(self, ev: events.DataEnd) -> bool:
        if self.writer is None and self.held is None and self.store_failed is None:
            await self._on_chunk(events.DataChunk(b""))  # an empty BDAT LAST body
        held = self.held
        if held is not None and self.store_failed is None:
            self.held = None
            refusal = await mailauth_step.finish(self, held)
            if refusal is not None:  # logged by mailauth_step; nothing was stored
                metrics.current().rejected(refusal)
                self.conn.respond(refusal)
                self._reset()
                return False
        if self.store_failed is not None:
            self.event("reject", stage="data", client=self.info.peer_ip,
                       reply=str(self.store_failed))
            metrics.current().rejected(self.store_failed)
            self.conn.respond(self.store_failed)
            self._reset()
            return False
        writer = self.writer
        assert writer is not None and self.sender is not None
        envelope = Envelope(self.sender, tuple(self.recipients), self.params)
        try:
            qid = await writer.commit(envelope, self.info, held=self.hold_reason is not None,
                                      hold_reason=self.hold_reason or "")
        except SMTPError as exc:
            self.event("reject", stage="data", reply=str(exc.reply), msg=writer.queue_id)
            metrics.current().rejected(exc.reply)
            await self._abort_message()
            self.conn.respond(exc.reply)
            self._reset()
            return False
        except Exception as exc:
            # DESIGN 1.5: an unclassified failure is a temporary one.
            self.log.exception("session=%s msg=%s commit failed", self.info.session_id,
                               writer.queue_id)
            await self._abort_message()
            self.conn.respond(R451_LOCAL_ERROR)
            self.event("reject", stage="data", reply=str(R451_LOCAL_ERROR), error=str(exc))
            metrics.current().rejected(R451_LOCAL_ERROR)
            self._reset()
            return False
        self.messages += 1
        self.session_bytes += self.body_bytes
        track.received(qid, listener=self.spec.name, size=self.body_bytes, sender=self.sender,
                       recipients=[r.address for r in self.recipients],
                       client=self.info.peer_ip, session=self.info.session_id,
                       held=self.hold_reason)
        if self.hold_reason is None:
            self.event("queued", msg=qid, sender=self.sender, nrcpt=len(self.recipients),
                       client=self.info.peer_ip)
            if self.ctx.queued is not None:
                self.ctx.queued(qid)  # this process's runner delivers it without a scan
        else:  # kept in the queue until an operator releases it
            self.event("queued", msg=qid, sender=self.sender, nrcpt=len(self.recipients),
                       client=self.info.peer_ip, held=self.hold_reason)
        self.conn.respond(R250_QUEUED.with_text(f"Ok: queued as {qid}"))
        self._reset()
        return False

    # -- information ----------------------------------------------------------------
    async def _on_rejected(self, ev: events.MessageRejected) -> bool:
        self.event("reject", stage="data", reply=str(ev.reply), client=self.info.peer_ip)
        metrics.current().rejected(ev.reply)
        await self._abort_message()
        self._reset()
        return False

    async def _on_reset(self, ev: events.TransactionReset) -> bool:
        await self._abort_message()
        self._reset()
        return False

    async def _on_starttls(self, ev: events.StartTls) -> bool:
        ctx_tls = self.ctx.tls_context
        await self.stream.write(self.conn.data_to_send())
        if ctx_tls is None:  # the core only offers STARTTLS when a context exists
            return True
        try:
            await self.stream.start_tls(ctx_tls, self.settings.timeouts.tls_handshake)
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.event("tls", result="failed", error=str(exc) or type(exc).__name__)
            return True
        self._record_tls()
        # RFC 3207 4.2: forget everything learned before TLS, including the HELO.
        self.info.helo, self.info.esmtp, self.info.auth_user = None, False, None
        self.conn.tls_started()
        self.event("tls", result="ok", version=self.info.tls_version, cipher=self.info.tls_cipher)
        return False

    async def _on_bad(self, ev: events.BadCommand) -> bool:
        self.event("bad_command", level=logging.INFO, line=ev.line[:80], reply=str(ev.reply))
        return False

    async def _on_closing(self, ev: events.Closing) -> bool:
        out = self.conn.data_to_send()
        if out:
            await self.stream.write(out)
        self.event("disconnect", reason=ev.reason, messages=self.messages)
        return True

    # -- helpers --------------------------------------------------------------------
    def _drop_held(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            held.release()  # gives its bytes back to the process's mailauth budget

    async def _abort_message(self) -> None:
        self._drop_held()
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                await writer.abort()
            except Exception:  # pragma: no cover - abort must not hide the real error
                self.log.exception("session=%s abort failed", self.info.session_id)


# Event type -> the Session method that handles it; every event type has one.
_HANDLERS: dict[type, Callable[[Session, Any], Awaitable[bool]]] = {
    events.Connected: decide.on_connected,
    events.Helo: decide.on_helo,
    events.AuthCredentials: decide.on_auth,
    events.MailFrom: decide.on_mail,
    events.RcptTo: decide.on_rcpt,
    events.DataChunk: Session._on_chunk,
    events.DataEnd: Session._on_data_end,
    events.MessageRejected: Session._on_rejected,
    events.TransactionReset: Session._on_reset,
    events.StartTls: Session._on_starttls,
    events.BadCommand: Session._on_bad,
    events.Closing: Session._on_closing,
}
