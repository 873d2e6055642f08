"""DMARC, RFC 7489: policy discovery, identifier alignment, result and disposition.

Owns:
- the RFC5322.From domain of a message (RFC 7489 6.6.1);
- the Organizational Domain (RFC 7489 3.2), from the Public Suffix List
  shipped in the `publicsuffixlist` package (its default rule "*" makes
  a.b.example.test -> example.test, so test domains need no special case);
- policy discovery (6.6.3): _dmarc.<From domain>, else _dmarc.<Organizational
  Domain>, through `DnsView` (a DNS failure is "temperror");
- the pure evaluation (`evaluate`): SPF and DKIM alignment, relaxed or strict
  (3.1), p= / sp= (6.3), pct= sampling with the next less strict policy for
  messages left out (6.6.4). The dice (`roll`) are an argument.

Reports are not sent (rua=/ruf= are parsed, nothing more). Raises nothing.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from goniec.mailauth.dnsview import DnsView
from goniec.mailauth.outcome import Disposition, DkimResult, DmarcCode, DmarcResult, SpfResult

Alignment = Literal["r", "s"]
_POLICIES: frozenset[str] = frozenset(("none", "quarantine", "reject"))
_LESS_STRICT: dict[Disposition, Disposition] = {
    "reject": "quarantine", "quarantine": "none", "none": "none"}


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed DMARC record (RFC 7489 6.3); p=None if p= is missing or invalid."""

    p: Disposition | None
    sp: Disposition | None = None
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    sp_invalid: bool = False
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Discovery:
    """Policy discovery's outcome: status "ok" with the record, "none", "temperror",
    or "permerror" (several records, or no usable p=); where it was found."""

    status: Literal["ok", "none", "temperror", "permerror"]
    record: DmarcRecord | None = None
    domain: str = ""
    reason: str = ""


@lru_cache(maxsize=1)
def _psl() -> object:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (the domain itself for a suffix)."""
    domain = domain.lower().rstrip(".")
    found = _psl().privatesuffix(domain)  # type: ignore[attr-defined]
    return str(found) if found else domain


def aligned(a: str, b: str, mode: Alignment) -> bool:
    """RFC 7489 3.1: strict = the same name; relaxed = the same Organizational Domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


def from_domain(message: bytes) -> tuple[str, str]:
    """(domain, "") for a message with one From field whose addresses share one
    domain (RFC 7489 6.6.1); ("", why) otherwise."""
    end = re.search(rb"\r?\n\r?\n", message)
    head = message[: end.start()] if end else message
    head = re.sub(rb"\r?\n[ \t]", b" ", head)  # unfold (RFC 5322 2.2.3)
    fields = [line.split(b":", 1)[1] for line in head.split(b"\n")
              if line.split(b":", 1)[0].strip().lower() == b"from" and b":" in line]
    if len(fields) != 1:
        return "", "no From field" if not fields else "several From fields"
    value = fields[0].decode("utf-8", "replace").strip()
    addresses = [addr for _, addr in email.utils.getaddresses([value]) if "@" in addr]
    domains = {addr.rpartition("@")[2].lower().rstrip(".").strip("<>") for addr in addresses}
    if len(domains) != 1 or "" in domains:
        return "", "no usable From address" if not domains else "From domains differ"
    return domains.pop(), ""


def parse_record(text: str) -> DmarcRecord | None:
    """The record, or None if `text` is not a DMARC record (v=DMARC1 first, RFC 7489 6.4)."""
    tags: dict[str, str] = {}
    for n, part in enumerate(text.split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if n == 0 and (name != "v" or value != "DMARC1"):
            return None
        if sep and name and name not in tags:
            tags[name] = value
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower()
    pct = tags.get("pct", "100")
    return DmarcRecord(
        p=p if p in _POLICIES else None,  # type: ignore[arg-type]
        sp=sp if sp in _POLICIES else None,  # type: ignore[arg-type]
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=min(100, max(0, int(pct))) if pct.isdigit() else 100,
        rua=tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip()),
        sp_invalid=bool(sp) and sp not in _POLICIES,
        raw=text,
    )


def _pick(values: Sequence[bytes], domain: str) -> Discovery:
    records = [r for r in (parse_record(v.decode("ascii", "replace")) for v in values) if r]
    if not records:
        return Discovery("none", None, domain, "no DMARC record")
    if len(records) > 1:  # RFC 7489 6.6.3 step 4: no DMARC processing
        return Discovery("permerror", None, domain, "several DMARC records")
    record = records[0]
    if record.p is None or record.sp_invalid:
        # RFC 7489 6.6.3 step 5: with a reporting address act as p=none, else ignore.
        if any(u.lower().startswith("mailto:") for u in record.rua):
            return Discovery("ok", DmarcRecord("none", None, record.adkim, record.aspf,
                                               record.pct, record.rua, raw=record.raw), domain)
        return Discovery("permerror", None, domain, "no valid p= in the DMARC record")
    return Discovery("ok", record, domain)


async def discover(view: DnsView, domain: str) -> Discovery:
    """RFC 7489 6.6.3: the record at _dmarc.<domain>, else at the Organizational Domain."""
    org = organizational_domain(domain)
    for name in dict.fromkeys((domain, org)):
        answer = await view.txt(f"_dmarc.{name}")
        if answer.status == "temperror":
            return Discovery("temperror", None, name, answer.reason)
        found = _pick(answer.values, name)
        if found.status != "none":
            return found
    return Discovery("none", None, org, "no DMARC record")


def evaluate(header_from: str, found: Discovery, spf: SpfResult | None,
             dkim: Sequence[DkimResult], roll: float) -> DmarcResult:
    """The DMARC result for a From domain, given discovery and the SPF/DKIM results.

    `roll` in [0, 1) decides pct= sampling (RFC 7489 6.6.4).
    """
    if found.status != "ok" or found.record is None:
        status: DmarcCode = "none" if found.status == "ok" else found.status
        return DmarcResult(status, header_from, None, "none",
                           record_domain=found.domain, reason=found.reason)
    rec = found.record
    spf_ok = (spf is not None and spf.result == "pass"
              and aligned(spf.domain, header_from, rec.aspf))
    dkim_ok = any(r.result == "pass" and aligned(r.domain, header_from, rec.adkim)
                  for r in dkim)
    subdomain = found.domain != header_from
    policy: Disposition = (rec.sp or rec.p or "none") if subdomain else (rec.p or "none")
    if spf_ok or dkim_ok:
        return DmarcResult("pass", header_from, policy, "none", spf_ok, dkim_ok, found.domain)
    disposition = policy if roll * 100 < rec.pct else _LESS_STRICT[policy]
    return DmarcResult("fail", header_from, policy, disposition, False, False, found.domain,
                       "no aligned SPF or DKIM pass")


async def check(view: DnsView, message: bytes, spf: SpfResult | None,
                dkim: Sequence[DkimResult], *, rng: random.Random | None = None
                ) -> DmarcResult:
    """DMARC for `message` (its From domain), after SPF and DKIM have run."""
    domain, why = from_domain(message)
    if not domain:
        return DmarcResult("permerror", "", None, "none", reason=why)
    found = await discover(view, domain)
    return evaluate(domain, found, spf, dkim, (rng or random).random())
