"""What to do with an incoming message once SPF, DKIM and DMARC have run (a plain function).

Owns `InboundPolicy` (the local choices) and `inbound_decision`, which maps
results + policy to a `Verdict`: accept (the default: record the results in
Authentication-Results and nothing more), hold (DMARC quarantine: accept,
then keep the message in the queue for an operator), reject (550) or defer
(451). No I/O; imports only layer-0 modules, so it could move to
`goniec.policy` as it is.

- dmarc "enforce": do what the From domain's DMARC policy asks for a failed
  message (RFC 7489 6.6.4 disposition, after pct=): reject -> 550 5.7.1,
  quarantine -> hold (or "accept" with quarantine="accept").
- spf_fail "reject": refuse an SPF fail of MAIL FROM (550 5.7.23, RFC 7372
  3.2), except when DMARC passes (RFC 7489 10.1: an early SPF refusal would
  drop mail that DMARC, through DKIM, authenticates).
- Per recipient domain ([mailauth.domains."<domain>"]): `strictest` merges
  the policies of a message's recipients' domains.
- temperror "defer": a temporary DNS failure of SPF or DMARC answers 451, so
  the sender retries (DESIGN 1.5); the default accepts and records it.

The replies come from the catalog (goniec.replies): R550_DMARC_REJECT,
R550_SPF_FAIL (RFC 7372 3.2), R451_SPF_TEMP, R451_DMARC_TEMP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from goniec.errors import Reply
from goniec.mailauth.outcome import InboundResults
from goniec.replies import R451_DMARC_TEMP, R451_SPF_TEMP, R550_DMARC_REJECT, R550_SPF_FAIL

__all__ = ["ACCEPT", "R451_DMARC_TEMP", "R451_SPF_TEMP", "R550_DMARC_REJECT", "R550_SPF_FAIL",
           "InboundPolicy", "Verdict", "inbound_decision", "strictest"]

Action = Literal["accept", "hold", "reject", "defer"]


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """The local choices; the defaults only record (RFC 7489 leaves enforcement to us)."""

    dmarc: Literal["record", "enforce"] = "record"
    quarantine: Literal["hold", "accept"] = "hold"
    spf_fail: Literal["record", "reject"] = "record"
    temperror: Literal["accept", "defer"] = "accept"


@dataclass(frozen=True, slots=True)
class Verdict:
    """action, the reply to send for reject/defer (None otherwise), and why (for the log)."""

    action: Action
    reply: Reply | None = None
    reason: str = ""


ACCEPT = Verdict("accept")


def strictest(policies: Iterable[InboundPolicy]) -> InboundPolicy:
    """One policy for a message whose recipients' domains choose differently.

    After DATA there is one reply for the whole message (RFC 5321 4.2.5 leaves
    per-recipient replies to LMTP), so the strictest choice of each key wins:
    a domain that asked to refuse spoofed mail is never overruled by one that
    only records. An empty iterable gives the default (record only).
    """
    out = list(policies)
    if not out:
        return InboundPolicy()
    if len(out) == 1:
        return out[0]
    return InboundPolicy(
        dmarc="enforce" if any(p.dmarc == "enforce" for p in out) else "record",
        quarantine="hold" if any(p.quarantine == "hold" for p in out) else "accept",
        spf_fail="reject" if any(p.spf_fail == "reject" for p in out) else "record",
        temperror="defer" if any(p.temperror == "defer" for p in out) else "accept",
    )


def inbound_decision(results: InboundResults, policy: InboundPolicy) -> Verdict:
    """The verdict for one message; the strictest reason wins (reject > defer > hold)."""
    dmarc, spf = results.dmarc, results.spf
    enforced = policy.dmarc == "enforce" and dmarc.result == "fail"
    if enforced and dmarc.disposition == "reject":
        text = f"{R550_DMARC_REJECT.text} ({dmarc.from_domain})"
        return Verdict("reject", R550_DMARC_REJECT.with_text(text),
                       f"dmarc=fail p={dmarc.policy} header.from={dmarc.from_domain}")
    if (policy.spf_fail == "reject" and spf.result == "fail" and spf.identity == "mailfrom"
            and dmarc.result != "pass"):
        return Verdict("reject", R550_SPF_FAIL.with_text(
            f"{R550_SPF_FAIL.text} for {spf.domain}"), f"spf=fail smtp.mailfrom={spf.sender}")
    if policy.temperror == "defer":
        if spf.result == "temperror" and dmarc.result != "pass":
            return Verdict("defer", R451_SPF_TEMP, f"spf=temperror ({spf.explanation})")
        if dmarc.result == "temperror":
            return Verdict("defer", R451_DMARC_TEMP, f"dmarc=temperror ({dmarc.reason})")
    if enforced and dmarc.disposition == "quarantine" and policy.quarantine == "hold":
        return Verdict("hold", None, f"dmarc=fail p={dmarc.policy} dis=quarantine"
                                     f" header.from={dmarc.from_domain}")
    return ACCEPT
