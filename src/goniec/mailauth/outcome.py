"""The results of the sender checks, as plain values (layer 0 of mail authentication).

Owns the dataclasses that SPF, DKIM, DMARC and ARC produce and that the
Authentication-Results writer (`results.py`) and the decision
(`decision.py`) consume. No I/O and no imports beyond the standard library,
so that policy code may use them. Result words are those of the RFC 8601
registry: RFC 7208 8 (SPF), RFC 8601 2.7.1 (DKIM), RFC 7489 11.2 (DMARC),
RFC 8617 10.2 (ARC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SpfCode = Literal["none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"]
DkimCode = Literal["none", "pass", "fail", "neutral", "temperror", "permerror", "policy"]
DmarcCode = Literal["none", "pass", "fail", "temperror", "permerror"]
ArcCode = Literal["none", "pass", "fail"]
Disposition = Literal["none", "quarantine", "reject"]
Identity = Literal["mailfrom", "helo"]


@dataclass(frozen=True, slots=True)
class SpfResult:
    """One check_host() outcome (RFC 7208 2.6).

    identity: "mailfrom", or "helo" (also for a null reverse-path, RFC 7208 2.4,
    where the checked identity is postmaster@HELO); domain: the domain checked;
    sender: the address checked; explanation: the exp= text for fail (RFC 7208
    6.2), or why the result is an error.
    """

    result: SpfCode
    identity: Identity
    domain: str
    sender: str
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One DKIM-Signature's verification (RFC 6376 6.1; words of RFC 8601 2.7.1).

    domain / selector / algorithm / identity: the d=, s=, a= and i= tags ("" when
    unreadable); reason: why it did not pass; b: the first characters of b=
    (RFC 6008 header.b, to tell several signatures of one domain apart).
    """

    result: DkimCode
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    identity: str = ""
    reason: str = ""
    b: str = ""


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """The DMARC evaluation of one message (RFC 7489 6.6).

    from_domain: the RFC5322.From domain ("" if there was not exactly one);
    policy: the published p= (or sp= for a subdomain) that applies, None without
    a usable record; disposition: what the policy asks for this message after
    pct= sampling ("none" unless the result is fail); spf_aligned / dkim_aligned:
    which identifier passed in alignment (RFC 7489 3.1); record_domain: where the
    record was found (the From domain or its organizational domain).
    """

    result: DmarcCode
    from_domain: str = ""
    policy: Disposition | None = None
    disposition: Disposition = "none"
    spf_aligned: bool = False
    dkim_aligned: bool = False
    record_domain: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ArcResult:
    """The ARC chain validation of one message (RFC 8617 5.2).

    result: the chain validation status; instances: how many ARC sets the
    message carries; temporary: a key lookup failed temporarily (the "fail" may
    change on a later try); reason: why it failed.
    """

    result: ArcCode
    instances: int = 0
    temporary: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class InboundResults:
    """All checks of one incoming message: what the A-R header and the decision need."""

    spf: SpfResult
    helo: SpfResult | None
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    arc: ArcResult | None = None
