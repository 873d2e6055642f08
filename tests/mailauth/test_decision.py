"""inbound_decision: record only by default; enforce DMARC, refuse SPF fail, defer on errors."""

from __future__ import annotations

import pytest

from goniec.mailauth.decision import InboundPolicy, Verdict, inbound_decision
from goniec.mailauth.outcome import DmarcResult, InboundResults, SpfResult


def results(*, spf: str = "pass", dmarc: str = "pass", policy: str | None = "reject",
            disposition: str = "none", identity: str = "mailfrom") -> InboundResults:
    return InboundResults(
        spf=SpfResult(spf, identity, "example.test", "a@example.test"),  # type: ignore[arg-type]
        helo=None, dkim=(),
        dmarc=DmarcResult(dmarc, "example.test", policy, disposition))  # type: ignore[arg-type]


ENFORCE = InboundPolicy(dmarc="enforce")


def test_record_only_is_the_default() -> None:
    spoofed = results(spf="fail", dmarc="fail", disposition="reject")
    assert inbound_decision(spoofed, InboundPolicy()) == Verdict("accept")
    assert inbound_decision(results(spf="temperror", dmarc="temperror"),
                            InboundPolicy()).action == "accept"


def test_dmarc_reject_is_refused_when_enforcing() -> None:
    verdict = inbound_decision(results(spf="fail", dmarc="fail", disposition="reject"), ENFORCE)
    assert verdict.action == "reject" and verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    assert "example.test" in verdict.reply.text


def test_dmarc_quarantine_holds_and_sampled_out_mail_passes() -> None:
    quarantine = results(dmarc="fail", policy="quarantine", disposition="quarantine")
    assert inbound_decision(quarantine, ENFORCE) == Verdict(
        "hold", None, "dmarc=fail p=quarantine dis=quarantine header.from=example.test")
    assert inbound_decision(quarantine, InboundPolicy(dmarc="enforce", quarantine="accept"))\
        .action == "accept"
    # pct= left this one out: reject became quarantine
    assert inbound_decision(results(dmarc="fail", disposition="quarantine"), ENFORCE)\
        .action == "hold"
    assert inbound_decision(results(dmarc="fail", policy="none", disposition="none"),
                            ENFORCE).action == "accept"


def test_spf_fail_refusal_is_an_option_and_spares_dmarc_passes() -> None:
    policy = InboundPolicy(spf_fail="reject")
    verdict = inbound_decision(results(spf="fail", dmarc="fail", policy=None), policy)
    assert verdict.action == "reject" and verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.23")
    assert inbound_decision(results(spf="fail", dmarc="pass"), policy).action == "accept"
    assert inbound_decision(results(spf="softfail", dmarc="none"), policy).action == "accept"
    assert inbound_decision(results(spf="fail", dmarc="none", identity="helo"),
                            policy).action == "accept"


@pytest.mark.parametrize(("spf", "dmarc", "code"), [
    ("temperror", "fail", "4.7.24"), ("pass", "temperror", "4.4.3"),
])
def test_temporary_errors_defer_when_asked(spf: str, dmarc: str, code: str) -> None:
    verdict = inbound_decision(results(spf=spf, dmarc=dmarc, policy=None),
                               InboundPolicy(temperror="defer"))
    assert verdict.action == "defer" and verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, code)
    assert inbound_decision(results(spf="temperror", dmarc="pass"),
                            InboundPolicy(temperror="defer")).action == "accept"


def test_strictest_takes_the_strictest_choice_of_each_key() -> None:
    from goniec.mailauth.decision import strictest

    assert strictest([]) == InboundPolicy()
    one = InboundPolicy(dmarc="enforce")
    assert strictest([one]) is one
    merged = strictest([InboundPolicy(dmarc="enforce", quarantine="accept"),
                        InboundPolicy(spf_fail="reject", temperror="defer")])
    assert merged == InboundPolicy(dmarc="enforce", quarantine="hold", spf_fail="reject",
                                   temperror="defer")
