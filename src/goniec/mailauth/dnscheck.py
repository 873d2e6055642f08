"""`goniec dns check`: which DNS records a mail domain needs, and whether they are published.

Owns the checks behind the command, each a `RecordCheck` (kind, DNS name,
status ok / missing / wrong / error, what is published, what to publish):
- MX (RFC 5321 5.1): present, not a null MX (RFC 7505), pointing at our host;
- SPF (RFC 7208 4.5): exactly one v=spf1 TXT record; with `ips`, whether it
  lets those addresses send (check_host() on postmaster@domain);
- DKIM (RFC 6376 3.6.2): selector._domainkey TXT with a usable key; with the
  expected record (from our key), the same p=;
- DMARC (RFC 7489 6.1): a usable _dmarc record, at the domain or its
  Organizational Domain.
Lookups go through `DnsView` (the configured resolver). `format_report` makes
the text. Raises nothing; DNS failures are reported as status "error".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import dkim as dkimpy
from dkim.util import parse_tag_value

from goniec.mailauth import dmarc
from goniec.mailauth.dnsview import DnsAnswer, DnsView
from goniec.mailauth.spf import check_host

Status = Literal["ok", "missing", "wrong", "error"]


@dataclass(frozen=True, slots=True)
class RecordCheck:
    kind: str
    name: str
    status: Status
    published: tuple[str, ...] = ()
    advice: str = ""
    note: str = ""


def _texts(answer: DnsAnswer[bytes]) -> tuple[str, ...]:
    return tuple(v.decode("utf-8", "replace") for v in answer.values)


async def check_mx(view: DnsView, domain: str, mail_host: str | None) -> RecordCheck:
    answer = await view.mx(domain)
    advice = f"{domain}. IN MX 10 {mail_host or 'mail.' + domain}."
    shown = tuple(f"{p} {h or '.'}" for p, h in answer.values)
    if answer.status == "temperror":
        return RecordCheck("MX", domain, "error", note=answer.reason)
    if answer.status == "none":
        return RecordCheck("MX", domain, "missing", advice=advice,
                           note="without MX, senders try the domain's own address")
    hosts = [h for _, h in answer.values]
    if hosts in ([""], ["."]):
        return RecordCheck("MX", domain, "wrong", shown, advice,
                           "null MX (RFC 7505): the domain accepts no mail")
    if mail_host and mail_host.lower().rstrip(".") not in hosts:
        return RecordCheck("MX", domain, "wrong", shown, advice,
                           f"{mail_host} is not among the MX hosts")
    return RecordCheck("MX", domain, "ok", shown)


async def check_spf(view: DnsView, domain: str, ips: Sequence[str]) -> RecordCheck:
    answer = await view.txt(domain)
    advice = f'{domain}. IN TXT "v=spf1 mx -all"'
    if answer.status == "temperror":
        return RecordCheck("SPF", domain, "error", note=answer.reason)
    records = tuple(t for t in _texts(answer) if t.lower().split(" ")[0] == "v=spf1")
    if not records:
        return RecordCheck("SPF", domain, "missing", advice=advice)
    if len(records) > 1:
        return RecordCheck("SPF", domain, "wrong", records, advice,
                           "several SPF records: every check gives permerror (RFC 7208 4.5)")
    loop = asyncio.get_running_loop()
    notes: list[str] = []
    status: Status = "ok"
    for ip in ips:
        got = await loop.run_in_executor(None, lambda ip=ip: check_host(  # type: ignore[misc]
            ip, f"postmaster@{domain}", domain, view.spf_lookup))
        notes.append(f"{ip}: {got.result}")
        if got.result != "pass":
            status = "wrong"
    return RecordCheck("SPF", domain, status, records, advice if status != "ok" else "",
                       ", ".join(notes))


def _p(record: str) -> str:
    try:
        value: bytes = parse_tag_value(record.encode()).get(b"p", b"")
        return value.decode().replace(" ", "")
    except Exception:
        return ""


async def check_dkim(view: DnsView, domain: str, selector: str,
                     expected: str | None) -> RecordCheck:
    name = f"{selector}._domainkey.{domain}"
    answer = await view.txt(name)
    advice = expected or f"run: goniec dkim keygen {domain} {selector}"
    if answer.status == "temperror":
        return RecordCheck("DKIM", name, "error", note=answer.reason)
    records = _texts(answer)
    if not records:
        return RecordCheck("DKIM", name, "missing", advice=advice)
    try:
        dkimpy.evaluate_pk(name.encode(), answer.values[0])
    except Exception as exc:
        return RecordCheck("DKIM", name, "wrong", records, advice, f"unusable key: {exc}")
    if expected and _p(records[0]) != _p(expected):
        return RecordCheck("DKIM", name, "wrong", records, advice,
                           "the published key is not the one Goniec signs with")
    return RecordCheck("DKIM", name, "ok", records)


async def check_dmarc(view: DnsView, domain: str) -> RecordCheck:
    name = f"_dmarc.{domain}"
    advice = f'{name}. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@{domain}"'
    found = await dmarc.discover(view, domain)
    if found.status == "temperror":
        return RecordCheck("DMARC", name, "error", note=found.reason)
    if found.status == "none":
        return RecordCheck("DMARC", name, "missing", advice=advice,
                           note="start with p=none, then quarantine or reject")
    if found.status == "permerror" or found.record is None:
        return RecordCheck("DMARC", name, "wrong", (f"at _dmarc.{found.domain}",), advice,
                           found.reason)
    rec = found.record
    shown = (rec.raw,)
    note = f"p={rec.p}" + (f" sp={rec.sp}" if rec.sp else "") + f" pct={rec.pct}"
    if found.domain != domain:
        note += f" (inherited from {found.domain})"
    return RecordCheck("DMARC", name, "ok", shown, "", note)


async def check_domain(view: DnsView, domain: str, *, mail_host: str | None = None,
                       selectors: Mapping[str, str | None] | None = None,
                       ips: Sequence[str] = ()) -> list[RecordCheck]:
    """All checks for `domain`. selectors: selector -> the record we expect (or None)."""
    domain = domain.lower().rstrip(".")
    jobs = [check_mx(view, domain, mail_host), check_spf(view, domain, ips)]
    jobs += [check_dkim(view, domain, s, e) for s, e in (selectors or {}).items()]
    jobs.append(check_dmarc(view, domain))
    return list(await asyncio.gather(*jobs))


def format_report(domain: str, checks: Sequence[RecordCheck]) -> str:
    lines = [f"DNS records for {domain}:"]
    for c in checks:
        lines.append(f"  {c.kind:<6} {c.status.upper():<8} {c.name}")
        lines += [f"           published: {p}" for p in c.published]
        if c.note:
            lines.append(f"           note: {c.note}")
        if c.advice and c.status != "ok":
            lines.append(f"           publish: {c.advice}")
    if not any(c.kind == "DKIM" for c in checks):
        lines.append("  DKIM   (no selector given: use --selector)")
    return "\n".join(lines)
