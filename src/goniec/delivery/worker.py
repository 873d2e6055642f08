"""One delivery attempt of one queued message (layer 4 shell; the caller holds its lease).

Owns `MessageWorker.process()`: take the recipients that are due, route each
(`router.route`), group them by next hop, deliver the groups concurrently
(SMTP through the `Transport`, local ones through `LocalDelivery` in a
thread, aliases and forwards through the recipient-table resolver of
`goniec.policy.recipients`), turn each result into the recipient's next state
(`schedule.decide`), queue the reports that are due (`bounce`), record the
states with `QueueStore.update_recipients`, and `remove` the message once
every recipient is final.

Order for crash safety: reports and forwarded copies are queued before the
states are recorded, so a crash in between repeats work (a duplicate at
worst) and never loses a report. A report about a report (null sender) is
never sent: it goes to the Badmail folder with the reason, as does a report
with nobody to send it to. Raises what the store raises while recording
(`OSError`, `SMTPError` 451/452); the runner retries the message later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from goniec.delivery import bounce
from goniec.delivery.badmail import Badmail
from goniec.delivery.local import LocalDelivery, LocalError
from goniec.delivery.outcome import DeliveryStatus, RecipientResult
from goniec.delivery.reports import queue_report
from goniec.delivery.router import LocalRoute, RemoteRoute, RoutingTable, domain_of, route
from goniec.delivery.schedule import Decision, Report, Timing, decide, next_due
from goniec.delivery.smtp_client import OutboundMessage
from goniec.delivery.transport import Transport
from goniec.errors import Reply, SMTPError
from goniec.model import Envelope, Recipient
from goniec.obs import track
from goniec.policy.recipients import Resolution
from goniec.queue.api import QueuedMessage, QueueStore, SubmissionInfo
from goniec.queue.submit import submit

if TYPE_CHECKING:
    from goniec.mailauth.keys import DkimKey

log = logging.getLogger("goniec.delivery")

Resolve = Callable[[str], Resolution | None]
# (forwarding domain, message size) -> the RSA key that ARC-seals the forwarded copy, or None.
ArcKeyFor = Callable[[str, int], "DkimKey | None"]
_CHUNK = 64 << 10
UNKNOWN_USER = Reply(550, "5.1.1", "unknown user")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    hostname: str = "localhost"
    remote: Timing = Timing()
    local: Timing = Timing(retry=(3600.0,))
    delay_without_notify: bool = True
    ndr_copy_to: str = ""  # IIS "Send copy of Non-Delivery Report to"


def _chunks(store: QueueStore, queue_id: str) -> Iterator[bytes]:
    with store.open_message(queue_id) as f:
        while chunk := f.read(_CHUNK):
            yield chunk


class MessageWorker:
    def __init__(self, store: QueueStore, *, table: RoutingTable, transport: Transport,
                 local: LocalDelivery | None, resolve: Resolve | None, badmail: Badmail,
                 settings: WorkerSettings, clock: Callable[[], float],
                 arc_key: ArcKeyFor | None = None) -> None:
        self.store = store
        self.arc_key = arc_key
        self.table = table
        self.transport = transport
        self.local = local
        self.resolve = resolve
        self.badmail = badmail
        self.settings = settings
        self.clock = clock

    async def process(self, msg: QueuedMessage) -> float | None:
        """Deliver what is due; the time to look again, or None when the message is gone."""
        if msg.is_done:  # a crash came between the last update and the remove
            await self.store.remove(msg.id)
            return None
        now = self.clock()
        due = [i for i, st in enumerate(msg.recipients)
               if not st.status.is_final and st.next_attempt <= now]
        if not due:
            return next_due(msg.recipients)
        groups: dict[object, tuple[LocalRoute | RemoteRoute, list[int]]] = {}
        for i in due:
            dec = route(domain_of(msg.recipients[i].address), self.table)
            key = ("local",) if isinstance(dec, LocalRoute) else dec.key
            groups.setdefault(key, (dec, []))[1].append(i)
        results: dict[int, RecipientResult] = {}
        local: set[int] = set()
        jobs = []
        for dec, idxs in groups.values():
            if isinstance(dec, LocalRoute):
                local.update(idxs)
                jobs.append(self._local(msg, idxs, results))
            else:
                jobs.append(self._remote(msg, dec, idxs, results))
        await asyncio.gather(*jobs)
        now = self.clock()
        decisions = {}
        for i in due:
            timing = self.settings.local if i in local else self.settings.remote
            decisions[i] = decide(msg.recipients[i], results[i], created=msg.created, now=now,
                                  timing=timing, local=i in local,
                                  delay_without_notify=self.settings.delay_without_notify)
        track.outcomes(msg, decisions, now)
        await self._reports(msg, decisions, now, local)
        finished = all(st.status.is_final or (i in decisions and decisions[i].state.status.is_final)
                       for i, st in enumerate(msg.recipients))
        if finished:
            # Every recipient is done: removing is the one durable step needed (recording
            # the final states first would cost a second fsync for nothing to read).
            await self.store.remove(msg.id)
            return None
        updated = await self.store.update_recipients(msg.id, {i: d.state
                                                              for i, d in decisions.items()})
        if updated.is_done:
            await self.store.remove(msg.id)
            return None
        return next_due(updated.recipients)

    # -- SMTP ----------------------------------------------------------------------------

    async def _remote(self, msg: QueuedMessage, dec: RemoteRoute, idxs: list[int],
                      results: dict[int, RecipientResult]) -> None:
        pending = idxs
        hop: RemoteRoute | None = dec
        while hop is not None and pending:
            env = Envelope(msg.sender, tuple(msg.recipients[i].recipient for i in pending),
                           msg.envelope.params)
            out = OutboundMessage(env, lambda: self.store.open_message(msg.id), msg.size, msg.id)
            got = await self.transport.send(hop, out)
            track.attempt(msg.id, got)
            for i, res in zip(pending, got, strict=True):
                results[i] = res
            # IIS "attempt direct delivery first": what MX could not take now goes to the
            # smart host in the same attempt; a permanent refusal stays final.
            pending = [i for i in pending if results[i].status is DeliveryStatus.DEFERRED]
            hop = hop.fallback

    # -- local ---------------------------------------------------------------------------

    async def _local(self, msg: QueuedMessage, idxs: list[int],
                     results: dict[int, RecipientResult]) -> None:
        for i in idxs:
            rcpt = msg.recipients[i].recipient
            try:
                results[i] = await self._deliver_local(msg, rcpt)
            except SMTPError as exc:
                results[i] = RecipientResult(rcpt, _status(exc.reply), exc.reply)
            except Exception as exc:  # DESIGN 1.5
                log.exception("delivery.local_error msg=%s rcpt=%s", msg.id, rcpt.address)
                reply = Reply(451, "4.3.0", f"local delivery failed: {type(exc).__name__}")
                results[i] = RecipientResult(rcpt, DeliveryStatus.DEFERRED, reply)
            log.info("delivery.local msg=%s rcpt=%s status=%s reply=%r", msg.id, rcpt.address,
                     results[i].status, str(results[i].reply))
            track.attempt(msg.id, [results[i]])

    async def _deliver_local(self, msg: QueuedMessage, rcpt: Recipient) -> RecipientResult:
        if self.resolve is None:
            found: Resolution | None = Resolution(mailboxes=(rcpt.address,))
        else:
            found = self.resolve(rcpt.address)
        if found is None or not (found.mailboxes or found.forwards):
            return RecipientResult(rcpt, DeliveryStatus.FAILED, UNKNOWN_USER.with_text(
                f"<{rcpt.address}>: unknown user"))
        if self.local is None:
            raise LocalError(Reply(451, "4.3.0", "local delivery is not set up"))
        agent = self.local

        def opener() -> BinaryIO:
            return self.store.open_message(msg.id)

        for box in found.mailboxes:
            mailbox = box if "@" in box else f"{box}@{self.settings.hostname}"
            await asyncio.to_thread(agent.deliver, opener, sender=msg.sender, mailbox=mailbox,
                                    original=rcpt.address)
        if found.forwards:
            await self._forward(msg, rcpt, found.forwards)
        text = f"delivered to {', '.join(found.mailboxes) or 'nobody'}"
        if found.forwards:
            text += f"; forwarded to {', '.join(found.forwards)}"
        return RecipientResult(rcpt, DeliveryStatus.DELIVERED, Reply(250, "2.0.0", text))

    async def _forward(self, msg: QueuedMessage, rcpt: Recipient, to: tuple[str, ...]) -> None:
        """A new queued copy for outside addresses (Postfix local(8) forwarding): same
        sender, so failures go back to the original sender; Delivered-To against loops."""
        orcpt = rcpt.orcpt or f"rfc822;{rcpt.address}"
        env = Envelope(msg.sender, tuple(Recipient(a, rcpt.notify, orcpt) for a in to),
                       msg.envelope.params)
        head = f"Delivered-To: {rcpt.address}\r\n".encode()
        sealed = await self._arc_seal(msg, rcpt, head)
        parts = [sealed] if sealed is not None else [head, *_chunks(self.store, msg.id)]
        qid = await submit(self.store, parts, env, SubmissionInfo("forward", "", None, None))
        log.info("delivery.forwarded msg=%s rcpt=%s new_msg=%s to=%s arc=%s", msg.id,
                 rcpt.address, qid, ",".join(to), "sealed" if sealed is not None else "none")

    async def _arc_seal(self, msg: QueuedMessage, rcpt: Recipient, head: bytes) -> bytes | None:
        """RFC 8617: the ARC set + `head` + the original, when the forwarding domain has
        an ARC key and the message carries our Authentication-Results; else None (forward
        unsealed). Reading and sealing (RSA, ~12 ms) run in a thread; a failure is logged
        and the message goes on unsealed, never lost."""
        key = self.arc_key(domain_of(rcpt.address), msg.size) if self.arc_key else None
        if key is None:
            return None
        from goniec.mailauth import arc  # dkimpy: only when a key seals

        def build() -> bytes | None:
            with self.store.open_message(msg.id) as f:
                message = head + f.read()
            seal = arc.seal(message, key, self.settings.hostname)
            return seal + message if seal else None  # b"": no results of ours to seal

        try:
            return await asyncio.to_thread(build)
        except Exception as exc:  # SealError, dkimpy's own, OSError: forward unsealed
            log.warning("delivery.arc_failed msg=%s rcpt=%s key=%s error=%r", msg.id,
                        rcpt.address, key.record_name, exc)
            return None

    # -- reports -------------------------------------------------------------------------

    async def _reports(self, msg: QueuedMessage, decisions: dict[int, Decision],
                       now: float, local: set[int]) -> None:
        by_kind: dict[Report, list[tuple[int, Decision]]] = {}
        for i, d in decisions.items():
            if d.report is not None:
                by_kind.setdefault(d.report, []).append((i, d))
        failed = [i for i, d in decisions.items() if d.state.status.is_final
                  and d.result.status is DeliveryStatus.FAILED]
        if not msg.sender:
            # RFC 3461 6.2 / RFC 5321 6.1: never a report about a report (no loops).
            if failed:
                reasons = "; ".join(decisions[i].result.describe() for i in failed)
                await self._to_badmail(msg, [msg.recipients[i].address for i in failed],
                                       f"This message is a delivery status notification that"
                                       f" cannot be delivered: {reasons}")
            return
        for kind, items in by_kind.items():
            entries = [self._entry(msg, kind, d, now, i in local) for i, d in items]
            await self._send_report(msg, kind, entries, now)

    async def _send_report(self, msg: QueuedMessage, kind: Report,
                           entries: list[bounce.ReportEntry], now: float) -> None:
        qid = await queue_report(self.store, msg, kind, entries, now,
                                 hostname=self.settings.hostname,
                                 ndr_copy_to=self.settings.ndr_copy_to)
        log.info("delivery.report msg=%s kind=%s report=%s to=%s rcpts=%s", msg.id, kind, qid,
                 msg.sender, ",".join(e.address for e in entries))
        track.report(msg.id, kind, qid, msg.sender)

    def _entry(self, msg: QueuedMessage, kind: Report, d: Decision, now: float,
               local: bool) -> bounce.ReportEntry:
        res = d.result
        remote = res.remote and res.remote_host is not None
        mta = res.remote_host.split("[", 1)[0] if remote and res.remote_host else None
        diagnostic = str(res.reply).replace("\r\n", " ") if remote else res.describe()
        until = None
        if kind is Report.DELAYED:
            timing = self.settings.local if local else self.settings.remote
            until = msg.created + timing.expire
        return bounce.ReportEntry(d.state.address, kind, res.status_code, diagnostic, mta,
                                  d.state.recipient.orcpt, now, until)

    async def _to_badmail(self, msg: QueuedMessage, rcpts: list[str], reason: str) -> None:
        def write() -> None:
            self.badmail.put(msg.id, _chunks(self.store, msg.id), reason, sender=msg.sender,
                             recipients=rcpts)
        try:
            await asyncio.to_thread(write)
            log.warning("delivery.badmail msg=%s reason=%r", msg.id, reason)
        except OSError as exc:  # keep going: the reason is in the log at least
            log.error("delivery.badmail_failed msg=%s reason=%r error=%r", msg.id, reason, exc)


def _status(reply: Reply) -> DeliveryStatus:
    if reply.is_permanent:
        return DeliveryStatus.FAILED
    return DeliveryStatus.DELIVERED if reply.code < 400 else DeliveryStatus.DEFERRED


__all__ = ["ArcKeyFor", "MessageWorker", "Resolve", "WorkerSettings"]
