"""Sender authentication inside the receiving session: hold the body, check or sign it.

Owns, for `session.Session`:
- `MailAuthSettings`, the reloadable part (from `[mailauth]`, signing keys
  loaded from their files) that lives in `Settings`, and `MailAuthRuntime`,
  one per worker process: the `InboundChecker` (its `DnsView` on `[dns]`
  and its threads) and the budget of body bytes held in memory;
- `hold`: at the first body chunk, whether this message must be held whole
  (inbound checks for mail from the internet; DKIM signing for ours, until
  the From: domain is known to have a key), or streamed as before (None);
- `feed`: holding, or giving up (too big, memory budget spent, no key): what
  was held is then stored and the rest streams;
- `finish`: at the final dot, the checks and `goniec.mailauth.decision`, or
  the signatures, then the bytes to store (our Received:, then
  Authentication-Results or DKIM-Signature, then the message) or the refusal;
  a quarantine verdict sets `Session.hold_reason`, so the message is
  committed held in the queue.

"Ours" is mail from a logged-in client or a client on the relay list (mode
"only"); everything else is from the internet. The decision rules live in
goniec.mailauth.decision; this module only gathers facts, logs one
`event=mailauth` (or `event=reject stage=mailauth`) line per message and
hands bytes to the session. It never writes to the queue itself. An
unexpected failure of a check answers 451 (DESIGN 1.5); a message that
cannot be signed is stored unsigned, with a warning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from goniec.errors import Reply
from goniec.mailauth.decision import InboundPolicy, inbound_decision, strictest
from goniec.mailauth.dnsview import DnsSettings
from goniec.policy.client import client_listed
from goniec.policy.rules import Rules
from goniec.replies import R451_LOCAL_ERROR

if TYPE_CHECKING:
    from goniec.config.mailauth import MailauthDomainSection
    from goniec.config.schema import Config
    from goniec.mailauth.inbound import InboundChecker
    from goniec.mailauth.keys import DkimKey
    from goniec.mailauth.outcome import InboundResults
    from goniec.policy.addresses import IPAddress
    from goniec.policy.rules import ReverseDns
    from goniec.server.session import Session

log = logging.getLogger("goniec.server")

SIGN_INLINE = 256 * 1024  # larger messages are signed in a thread: hashing them takes ms
RETIRE_AFTER = 120.0  # seconds a replaced checker keeps its threads for checks in flight
_HEADER_END = b"\r\n\r\n"
HOLD_REASON = "dmarc quarantine"  # the queue's hold reason for a quarantine verdict


@dataclass(frozen=True, slots=True)
class MailAuthSettings:
    """[mailauth] as the session needs it; replaced as a whole on reload."""

    inbound: bool = False
    policy: InboundPolicy = InboundPolicy()
    keys: Mapping[str, tuple[DkimKey, ...]] = field(default_factory=dict)  # by From: domain
    parent_keys: Mapping[str, tuple[DkimKey, ...]] = field(default_factory=dict)  # subdomains
    max_size: int = 10_000_000
    memory: int = 100_000_000
    dns: DnsSettings = DnsSettings()
    check_helo: bool = True
    check_arc: bool = True
    spf_time_limit: float = 20.0
    authserv_aliases: tuple[str, ...] = ()
    arc_keys: Mapping[str, DkimKey] = field(default_factory=dict)  # by forwarding domain
    domain_policies: Mapping[str, InboundPolicy] = field(default_factory=dict)  # by rcpt domain

    def policy_for(self, recipients: Iterable[str]) -> InboundPolicy:
        """The inbound policy for a message to `recipients` (addresses): each domain's
        own ([mailauth.domains]) or the global one, merged strictest-first."""
        if not self.domain_policies:
            return self.policy
        domains = {r.rpartition("@")[2].lower().rstrip(".") for r in recipients}
        return strictest({self.domain_policies.get(d, self.policy) for d in domains})

    def arc_key(self, domain: str, size: int) -> DkimKey | None:
        """The key that ARC-seals a `size`-byte message forwarded for `domain`; None when
        there is none, or the message is over max_size (so never checked: nothing to seal)."""
        return self.arc_keys.get(domain.lower().rstrip(".")) if size <= self.max_size else None

    @property
    def active(self) -> bool:
        return self.inbound or bool(self.keys)

    def keys_for(self, domain: str) -> tuple[DkimKey, ...]:
        """The keys that sign mail From: `domain`: its own, else a parent's with subdomains."""
        found = self.keys.get(domain)
        if found:
            return found
        labels = domain.split(".")
        for i in range(1, len(labels)):
            found = self.parent_keys.get(".".join(labels[i:]))
            if found:
                return found
        return ()


OFF = MailAuthSettings()


def build_settings(config: Config) -> MailAuthSettings:
    """From a validated config; reads the key files (load_config has checked them)."""
    section = config.mailauth
    keys: dict[str, list[DkimKey]] = {}
    parents: dict[str, list[DkimKey]] = {}
    arc_keys: dict[str, DkimKey] = {}
    if section.dkim:
        from goniec.mailauth.keys import load_dkim_key

        for entry in section.dkim:
            key = load_dkim_key(entry.key_file, entry.domain, entry.selector)
            keys.setdefault(entry.domain, []).append(key)
            if entry.subdomains:
                parents.setdefault(entry.domain, []).append(key)
            if entry.arc:  # load_config has checked it is RSA; the first listed seals
                arc_keys.setdefault(entry.domain, key)
    global_policy = InboundPolicy(dmarc=section.dmarc, quarantine=section.quarantine,
                                  spf_fail=section.spf_fail, temperror=section.temperror)
    return MailAuthSettings(
        inbound=section.inbound == "on",
        policy=global_policy,
        keys={d: tuple(k) for d, k in keys.items()},
        parent_keys={d: tuple(k) for d, k in parents.items()},
        max_size=section.max_size,
        memory=section.memory,
        dns=DnsSettings.from_config(config.dns),
        check_helo=section.helo,
        check_arc=section.arc,
        spf_time_limit=section.spf_time_limit,
        authserv_aliases=tuple(sorted(section.authserv_aliases)),
        arc_keys=arc_keys,
        domain_policies=_domain_policies(config, global_policy),
    )


def _domain_policies(config: Config, base: InboundPolicy) -> dict[str, InboundPolicy]:
    """[mailauth.domains] by name; an alias domain follows the domain it points to
    unless it has its own table."""
    out = {name: _domain_policy(base, entry) for name, entry in config.mailauth.domains.items()}
    for alias, target in config.domains.aliases.items():
        if alias not in out and target in out:
            out[alias] = out[target]
    return out


def _domain_policy(base: InboundPolicy, entry: MailauthDomainSection) -> InboundPolicy:
    changes = {k: v for k, v in entry.model_dump().items() if v is not None}
    return dataclasses.replace(base, **changes)


class MailAuthRuntime:
    """One worker process's checker and memory budget. Event-loop thread only."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.held = 0  # body bytes held by all sessions of this process
        self._checker: InboundChecker | None = None
        self._made_for: tuple[Any, ...] = ()
        self._retired: list[InboundChecker] = []

    def checker(self, ma: MailAuthSettings) -> InboundChecker:
        """The checker for these settings; a reload that changed [dns] gets a new one."""
        wanted = (ma.dns, ma.check_helo, ma.check_arc, ma.spf_time_limit, ma.authserv_aliases)
        if self._checker is None or wanted != self._made_for:
            from goniec.mailauth.dnsview import DnsView
            from goniec.mailauth.inbound import InboundChecker

            old = self._checker
            self._checker = InboundChecker(
                DnsView(ma.dns), self.hostname, also_ours=ma.authserv_aliases,
                spf_time_limit=ma.spf_time_limit, check_helo=ma.check_helo,
                check_arc=ma.check_arc)
            self._made_for = wanted
            if old is not None:  # checks in flight finish on the old threads
                self._retired.append(old)
                asyncio.get_running_loop().call_later(RETIRE_AFTER, self._retire, old)
        return self._checker

    def _retire(self, checker: InboundChecker) -> None:
        if checker in self._retired:
            self._retired.remove(checker)
            checker.close()

    def close(self) -> None:
        """At shutdown: stop every checker's threads."""
        checkers = [*self._retired, *([self._checker] if self._checker else [])]
        self._checker, self._retired = None, []
        for checker in checkers:
            checker.close()


# --- which messages are held ---------------------------------------------------------
def trusted_network(rules: Rules, ip: IPAddress, reverse: ReverseDns) -> bool:
    """A client on the relay list is ours; with relay.mode "all_except" nobody is
    (that list names who may *not* relay, so it says nothing about who is ours)."""
    clients = rules.relay.clients
    return clients.mode == "only" and client_listed(clients, ip, reverse) is True


class Held:
    """The body of one message, held in memory until the final dot."""

    __slots__ = ("runtime", "settings", "inbound", "keys", "buf", "counted", "reason", "_looked")

    def __init__(self, runtime: MailAuthRuntime, settings: MailAuthSettings,
                 inbound: bool) -> None:
        self.runtime = runtime
        self.settings = settings
        self.inbound = inbound  # else: signing, once the From: domain has keys
        self.keys: tuple[DkimKey, ...] = ()
        self.buf = bytearray()
        self.counted = 0  # bytes charged to runtime.held
        self.reason = ""  # why holding stopped early, for the log ("" = no key: quiet)
        self._looked = inbound  # From: domain looked up (inbound: nothing to look up)

    def add(self, data: bytes) -> bytes | None:
        """None while holding; else everything so far, to be stored and streamed from now."""
        size = len(self.buf) + len(data)
        limit = self.settings.max_size
        if size > limit or self.runtime.held + len(data) > self.settings.memory:
            self.reason = (f"larger than mailauth.max_size ({limit} bytes)" if size > limit
                           else "mailauth.memory in use by other messages")
            return self.give_up(data)
        start = max(0, len(self.buf) - 3)
        self.buf += data
        self.runtime.held += len(data)
        self.counted += len(data)
        if not self._looked:
            end = self.buf.find(_HEADER_END, start)
            if self.buf.startswith(b"\r\n"):
                end = 0  # no header section at all
            if end >= 0:
                self._looked = True
                self.keys = self._find_keys(bytes(self.buf[:end + 2]))
                if not self.keys:
                    return self.give_up(b"")
        return None

    def _find_keys(self, head: bytes) -> tuple[DkimKey, ...]:
        from goniec.mailauth.dmarc import from_domain

        domain, _ = from_domain(head)
        if not domain:
            return ()
        try:
            domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
        except UnicodeError:
            return ()
        return self.settings.keys_for(domain)

    def give_up(self, data: bytes) -> bytes:
        out = bytes(self.buf) + data
        self.release()
        return out

    def take(self) -> bytes:
        """The whole message at the final dot; its bytes stay charged to the budget
        until `release` (the checks or the signing still hold them)."""
        if not self._looked:  # the header section never ended: it is all header
            self._looked = True
            self.keys = self._find_keys(bytes(self.buf))
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def release(self) -> None:
        """Give the bytes back to the budget (idempotent)."""
        self.runtime.held -= self.counted
        self.counted = 0
        self.buf = bytearray()


def hold(s: Session) -> Held | None:
    """At the first chunk of a message: a `Held` when it needs checks or signing."""
    ma: MailAuthSettings = s.settings.mailauth
    if not ma.active:
        return None
    runtime: MailAuthRuntime | None = s.ctx.mailauth
    if runtime is None:
        return None
    if s.info.auth_user is not None or trusted_network(s.settings.rules, s.peer_addr, s.reverse):
        return Held(runtime, ma, inbound=False) if ma.keys else None
    return Held(runtime, ma, inbound=True) if ma.inbound else None


async def feed(s: Session, held: Held, data: bytes) -> None:
    """One more chunk of a held message; when holding stops, store what was held."""
    rest = held.add(data)
    if rest is None:
        return
    s.held = None
    await s.store(rest)
    if held.reason:
        what = "checked" if held.inbound else "signed"
        s.event("mailauth", level=logging.WARNING,
                msg=s.writer.queue_id if s.writer else None, action="skip",
                reason=f"not {what}: {held.reason}")


# --- at the final dot -------------------------------------------------------------------
async def finish(s: Session, held: Held) -> Reply | None:
    """Check or sign the held message and store it; or the refusal to answer (logged)."""
    try:
        message = held.take()
        if held.inbound:
            return await _check(s, held.settings, message)
        await _sign(s, held.keys, message)
        return None
    finally:
        held.release()


def summary(results: InboundResults) -> dict[str, Any]:
    """The log fields: spf=, helo_spf=, dkim= (result:domain, top first), dmarc=, arc=, from=."""
    out: dict[str, Any] = {"spf": results.spf.result}
    if results.helo is not None:
        out["helo_spf"] = results.helo.result
    out["dkim"] = ",".join(f"{r.result}:{r.domain or '-'}" for r in results.dkim) or "none"
    out["dmarc"] = results.dmarc.result
    out["arc"] = results.arc.result if results.arc is not None else "off"
    out["from"] = results.dmarc.from_domain or None
    return out


async def _check(s: Session, ma: MailAuthSettings, message: bytes) -> Reply | None:
    assert s.ctx.mailauth is not None
    checker = s.ctx.mailauth.checker(ma)
    try:
        results = await checker.check(message, peer_ip=str(s.peer_addr),
                                      helo=s.info.helo or "", mail_from=s.sender or "")
    except Exception:  # check() promises not to raise: this is a bug, fail temporarily
        s.log.exception("session=%s mailauth checks failed", s.info.session_id)
        s.event("reject", stage="mailauth", client=s.info.peer_ip, reply=str(R451_LOCAL_ERROR))
        return R451_LOCAL_ERROR
    verdict = inbound_decision(results, ma.policy_for(r.address for r in s.recipients))
    fields = summary(results)
    if verdict.reply is not None:  # reject or defer: nothing is stored
        s.event("reject", stage="mailauth", action=verdict.action, sender=s.sender,
                client=s.info.peer_ip, reply=str(verdict.reply), reason=verdict.reason, **fields)
        return verdict.reply
    await s.store(checker.prepare(message, results))
    if verdict.action == "hold":  # quarantine: queued held, delivered only when released
        s.hold_reason = HOLD_REASON
        fields.update(reason=verdict.reason)
    s.event("mailauth", msg=s.writer.queue_id if s.writer else None, action=verdict.action,
            **fields)
    return None


async def _sign(s: Session, keys: tuple[DkimKey, ...], message: bytes) -> None:
    from goniec.mailauth import dkim

    signatures, signed = [], []
    for key in keys:
        try:
            if len(message) <= SIGN_INLINE:
                signatures.append(dkim.sign(message, key))
            else:
                signatures.append(await asyncio.to_thread(dkim.sign, message, key))
            signed.append(f"{key.domain}/{key.selector}")
        except Exception as exc:  # SignError: a header dkimpy cannot parse; else a bug
            if not isinstance(exc, dkim.SignError):
                s.log.exception("session=%s DKIM signing failed", s.info.session_id)
            s.event("mailauth", level=logging.WARNING, action="sign_failed", d=key.domain,
                    s=key.selector, reason=str(exc) or type(exc).__name__)
    # DKIM-Signature goes right below our Received:. Neither trace field is among the
    # signed ones (RFC 6376 5.4.1), so the signature covers exactly what is stored and sent.
    await s.store(b"".join(signatures) + message)
    if signed:
        s.event("mailauth", msg=s.writer.queue_id if s.writer else None, action="sign",
                dkim_sign=",".join(signed))
