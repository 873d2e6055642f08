"""SPF, RFC 7208: check_host() for the MAIL FROM and HELO identities, with pyspf.

Owns the call into pyspf and its result as a `SpfResult` value. pyspf does
the record walking and the limits of RFC 7208 4.6.4 (at most 10 mechanisms
and modifiers that cause DNS lookups, at most 2 void lookups, at most 10 MX
or PTR names); its DNS goes through a lookup function we give it (pyspf's
module-level `DNSLookup` hook, the same one pyspf's own test runner uses),
normally `DnsView.spf_lookup`, so it asks only the configured name servers.

pyspf blocks, so `check_mail_from` / `check_helo` run it in a worker thread
and the event loop never waits on DNS. Time is bounded twice: every lookup
by the resolver timeout, the whole check by `time_limit` (RFC 7208 4.6.4
suggests at least 20 s); past either the result is "temperror", never a
hang. Raises nothing: unexpected errors become "temperror" (DESIGN 1.5).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import spf as pyspf

from goniec.mailauth.dnsview import DnsView
from goniec.mailauth.outcome import Identity, SpfResult

Lookup = Callable[[str, str, "float | None"], list[tuple[tuple[str, str], Any]]]

DEFAULT_TIME_LIMIT = 20.0  # RFC 7208 4.6.4: at least 20 seconds for the whole evaluation
_CODES: frozenset[str] = frozenset(
    ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"))
# pyspf's older names (RFC 4408 era) for the RFC 7208 results.
_OLD_NAMES = {"unknown": "permerror", "error": "temperror"}


# --- pyspf's DNS hook --------------------------------------------------------------
# pyspf calls the module global `spf.DNSLookup` for every query. We install one
# dispatcher that uses the lookup function of the check running in this thread,
# and pyspf's own resolver for anyone else calling pyspf in this process.
_local = threading.local()
_original_lookup: Any = pyspf.DNSLookup


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> Any:
    lookup: Lookup | None = getattr(_local, "lookup", None)
    if lookup is None:
        return _original_lookup(name, qtype, strict, timeout)
    return lookup(name, qtype, getattr(_local, "deadline", None))


if getattr(pyspf.DNSLookup, "__name__", "") != "_dispatch":
    pyspf.DNSLookup = _dispatch


def check_host(ip: str, sender: str, helo: str, lookup: Lookup, *,
               identity: Identity = "mailfrom", time_limit: float = DEFAULT_TIME_LIMIT,
               receiver: str = "", default_explanation: str | None = None,
               strict: bool | int = True) -> SpfResult:
    """RFC 7208 4 check_host() for one identity, blocking (run it in a thread).

    identity "mailfrom" checks `sender` (postmaster@helo when it is empty, RFC
    7208 2.4); "helo" checks postmaster@helo (RFC 7208 2.3). `receiver` is our
    host name for the %{r} macro; `default_explanation` replaces pyspf's text
    for fail, softfail and permerror when the record has no exp=.
    """
    if identity == "helo":
        sender = ""
    checked_identity: Identity = "mailfrom" if sender else "helo"
    checked = sender or (f"postmaster@{helo}" if helo else "")
    domain = checked.rpartition("@")[2]
    if not checked or not domain:
        return SpfResult("none", checked_identity, domain, checked, "no identity to check")
    try:
        query = pyspf.query(i=ip, s=sender, h=helo, receiver=receiver or None,
                            strict=strict)
        if default_explanation is not None:
            query.set_default_explanation(default_explanation)
        _local.lookup = lookup
        _local.deadline = time.monotonic() + time_limit
        try:
            result, _code, explanation = query.check()
        finally:
            _local.lookup = None
            _local.deadline = None
    except Exception as exc:  # DESIGN 1.5: a surprise is temporary, never a verdict
        return SpfResult("temperror", checked_identity, domain, checked,
                         f"SPF check failed: {type(exc).__name__}")
    result = _OLD_NAMES.get(result, result)
    if result not in _CODES:  # "ambiguous" and friends only exist in harsh mode
        result = "permerror"
    return SpfResult(result, checked_identity, domain, checked,  # type: ignore[arg-type]
                     str(explanation or ""))


async def _in_thread(view: DnsView, executor: Executor | None, time_limit: float,
                     fn: Callable[[], SpfResult], identity: Identity, domain: str,
                     sender: str) -> SpfResult:
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, fn)
    # Safety net: the check bounds itself, this catches a stuck thread pool.
    try:
        return await asyncio.wait_for(future, time_limit + view.settings.timeout + 1.0)
    except TimeoutError:
        return SpfResult("temperror", identity, domain, sender, "SPF check timed out")


async def check_mail_from(view: DnsView, ip: str, sender: str, helo: str, *,
                          executor: Executor | None = None,
                          time_limit: float = DEFAULT_TIME_LIMIT,
                          receiver: str = "") -> SpfResult:
    """SPF for the MAIL FROM identity (postmaster@HELO for the null sender)."""
    fn = functools.partial(check_host, ip, sender, helo, view.spf_lookup,
                           time_limit=time_limit, receiver=receiver)
    checked = sender or f"postmaster@{helo}"
    return await _in_thread(view, executor, time_limit, fn,
                            "mailfrom" if sender else "helo", checked.rpartition("@")[2],
                            checked)


async def check_helo(view: DnsView, ip: str, helo: str, *, executor: Executor | None = None,
                     time_limit: float = DEFAULT_TIME_LIMIT, receiver: str = "") -> SpfResult:
    """SPF for the HELO identity (RFC 7208 2.3)."""
    fn = functools.partial(check_host, ip, "", helo, view.spf_lookup, identity="helo",
                           time_limit=time_limit, receiver=receiver)
    return await _in_thread(view, executor, time_limit, fn, "helo", helo,
                            f"postmaster@{helo}")
