"""All sender checks of one incoming message, concurrently, for the receiving session.

Owns `InboundChecker`, the one object the server shell needs: SPF of MAIL
FROM and of HELO (RFC 7208 2.3, 2.4), DKIM (RFC 6376), ARC (RFC 8617) and
DMARC policy discovery run at the same time; DMARC is then evaluated from
their results (RFC 7489 6.6). DNS goes through one `DnsView`; the blocking
parts (pyspf, signature arithmetic over the message) run in a small thread
pool owned here, so the event loop never waits on them. Every check is
bounded by the DNS timeout (SPF as a whole by `spf_time_limit`) and gives
"temperror" rather than hanging.

`prepare()` removes Authentication-Results fields that claim our name (RFC
8601 5) and puts ours on top. Raises nothing from `check`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from goniec.mailauth import arc, dkim, dmarc, spf
from goniec.mailauth.dnsview import DnsView
from goniec.mailauth.outcome import ArcResult, DmarcResult, InboundResults, SpfResult
from goniec.mailauth.results import authentication_results, remove_ours

DEFAULT_WORKERS = 8  # threads mostly wait on DNS (pyspf) or hash a body


class InboundChecker:
    """Inbound SPF, DKIM, ARC and DMARC with one resolver and one thread pool.

    authserv_id: our host name (RFC 8601 2.2); also_ours: other names a forged
    Authentication-Results might claim to be us (other hosts of our ADMD).
    """

    def __init__(self, view: DnsView, authserv_id: str, *, also_ours: Sequence[str] = (),
                 workers: int = DEFAULT_WORKERS,
                 spf_time_limit: float = spf.DEFAULT_TIME_LIMIT, check_helo: bool = True,
                 check_arc: bool = True, rng: random.Random | None = None) -> None:
        self.view = view
        self.authserv_id = authserv_id.lower().rstrip(".")
        self.ours = (self.authserv_id, *(n.lower().rstrip(".") for n in also_ours))
        self.spf_time_limit = spf_time_limit
        self.check_helo = check_helo
        self.check_arc = check_arc
        self._rng = rng or random.Random()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="goniec-mailauth")

    def close(self) -> None:
        """Stop the thread pool (running checks finish; no new ones start)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def spf(self, peer_ip: str, mail_from: str, helo: str) -> SpfResult:
        """SPF of MAIL FROM alone, e.g. to decide at the MAIL command."""
        return await spf.check_mail_from(self.view, peer_ip, mail_from, helo,
                                         executor=self._executor,
                                         time_limit=self.spf_time_limit,
                                         receiver=self.authserv_id)

    async def _helo(self, peer_ip: str, helo: str) -> SpfResult:
        return await spf.check_helo(self.view, peer_ip, helo, executor=self._executor,
                                    time_limit=self.spf_time_limit, receiver=self.authserv_id)

    async def _arc(self, message: bytes) -> ArcResult | None:
        if not self.check_arc:
            return None
        return await arc.verify(self.view, message, executor=self._executor)

    async def _discover(self, from_domain: str) -> dmarc.Discovery | None:
        return await dmarc.discover(self.view, from_domain) if from_domain else None

    async def check(self, message: bytes, *, peer_ip: str, helo: str,
                    mail_from: str, spf_result: SpfResult | None = None) -> InboundResults:
        """Run every check on `message` (the header block and body as received).

        mail_from: the reverse-path ("" for <>); spf_result: an SPF result already
        made at MAIL time, so it is not asked twice.
        """
        from_domain, why = dmarc.from_domain(message)
        helo_wanted = self.check_helo and bool(helo) and bool(mail_from)

        async def nothing() -> None:
            return None

        mail_task = (nothing() if spf_result is not None
                     else self.spf(peer_ip, mail_from, helo))
        got_spf, got_helo, got_dkim, got_arc, found = await asyncio.gather(
            mail_task,
            self._helo(peer_ip, helo) if helo_wanted else nothing(),
            dkim.verify(self.view, message, executor=self._executor),
            self._arc(message),
            self._discover(from_domain),
        )
        spf_mail = spf_result if spf_result is not None else got_spf
        assert spf_mail is not None
        if found is None:
            result = DmarcResult("permerror", "", None, "none", reason=why)
        else:
            result = dmarc.evaluate(from_domain, found, spf_mail, got_dkim, self._rng.random())
        return InboundResults(spf_mail, got_helo, tuple(got_dkim), result, got_arc)

    def header(self, results: InboundResults, linesep: bytes = b"\r\n") -> bytes:
        """Our Authentication-Results header field."""
        return authentication_results(self.authserv_id, results, linesep)

    def prepare(self, message: bytes, results: InboundResults) -> bytes:
        """The message to queue: forged A-R fields of ours removed, ours on top."""
        linesep = b"\r\n" if b"\r\n" in message[:1000] else b"\n"
        return self.header(results, linesep) + remove_ours(message, self.ours)
