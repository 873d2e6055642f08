"""DMARC: records, Organizational Domains, alignment, discovery over DNS, evaluation."""

from __future__ import annotations

import asyncio

import pytest

from goniec.mailauth import dmarc
from goniec.mailauth.dnsview import DnsView
from goniec.mailauth.outcome import DkimResult, SpfResult

from .dnsserver import ZoneServer


def spf_pass(domain: str) -> SpfResult:
    return SpfResult("pass", "mailfrom", domain, f"bounce@{domain}")


def dkim_pass(domain: str) -> DkimResult:
    return DkimResult("pass", domain, "s1", "rsa-sha256")


def test_parse_record() -> None:
    rec = dmarc.parse_record("v=DMARC1; p=Reject; sp=quarantine; adkim=s; pct=20;"
                             " rua=mailto:a@example.test,mailto:b@example.test")
    assert rec is not None and rec.raw.startswith("v=DMARC1; p=Reject;")
    assert rec == dmarc.DmarcRecord("reject", "quarantine", "s", "r", 20,
                                    ("mailto:a@example.test", "mailto:b@example.test"),
                                    raw=rec.raw)
    assert dmarc.parse_record("v=spf1 -all") is None
    assert dmarc.parse_record("p=reject; v=DMARC1") is None  # v= must come first
    odd = dmarc.parse_record("v=DMARC1;p=maybe;pct=x;aspf=q")
    assert odd is not None and (odd.p, odd.pct, odd.aspf) == (None, 100, "r")


@pytest.mark.parametrize(("domain", "org"), [
    ("a.b.example.test", "example.test"), ("example.test", "example.test"),
    ("mail.example.co.uk", "example.co.uk"), ("x.y.example.invalid", "example.invalid"),
    ("test", "test"), ("Example.TEST.", "example.test"),
])
def test_organizational_domain(domain: str, org: str) -> None:
    assert dmarc.organizational_domain(domain) == org


def test_alignment_modes() -> None:
    assert dmarc.aligned("mail.example.test", "example.test", "r")
    assert not dmarc.aligned("mail.example.test", "example.test", "s")
    assert dmarc.aligned("EXAMPLE.test.", "example.test", "s")
    assert not dmarc.aligned("example.co.uk", "other.co.uk", "r")  # a public suffix is no org
    assert not dmarc.aligned("", "example.test", "r")


@pytest.mark.parametrize(("header", "expected"), [
    (b"From: Alice <alice@Example.TEST>", ("example.test", "")),
    (b"From: a@example.test, b@example.test", ("example.test", "")),
    (b"From: =?utf-8?q?Al=C3=AEce?=\r\n <alice@example.test>", ("example.test", "")),
    (b"From: a@example.test, b@other.test", ("", "From domains differ")),
    (b"From: a@example.test\r\nFrom: b@example.test", ("", "several From fields")),
    (b"To: b@example.test", ("", "no From field")),
    (b"From: undisclosed", ("", "no usable From address")),
])
def test_from_domain(header: bytes, expected: tuple[str, str]) -> None:
    assert dmarc.from_domain(header + b"\r\nSubject: x\r\n\r\nFrom: body@else.test\r\n") == (
        expected)


def discover(view: DnsView, domain: str) -> dmarc.Discovery:
    return asyncio.run(dmarc.discover(view, domain))


def test_discovery_falls_back_to_the_organizational_domain(dns_server: ZoneServer,
                                                          view: DnsView) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    dns_server.add("_dmarc.example.test", "TXT", "some other text")
    found = discover(view, "news.example.test")
    assert (found.status, found.domain) == ("ok", "example.test")
    assert found.record is not None and found.record.sp == "quarantine"
    assert dns_server.queries[:2] == [("_dmarc.news.example.test", "TXT"),
                                      ("_dmarc.example.test", "TXT")]
    assert discover(view, "nothing.test").status == "none"


def test_discovery_errors(dns_server: ZoneServer, view: DnsView) -> None:
    dns_server.add("_dmarc.two.test", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.two.test", "TXT", "v=DMARC1; p=reject")
    assert discover(view, "two.test").status == "permerror"
    dns_server.zone["_dmarc.flaky.test"] = ["SERVFAIL"]
    assert discover(view, "flaky.test").status == "temperror"
    # RFC 7489 6.6.3: no valid p= but a rua= -> act as p=none
    dns_server.add("_dmarc.rua.test", "TXT", "v=DMARC1; p=bogus; rua=mailto:r@rua.test")
    found = discover(view, "rua.test")
    assert found.status == "ok" and found.record is not None and found.record.p == "none"
    dns_server.add("_dmarc.nop.test", "TXT", "v=DMARC1; p=bogus")
    assert discover(view, "nop.test").status == "permerror"


def found(p: str, *, at: str = "example.test", sp: str | None = None, pct: int = 100,
          adkim: str = "r", aspf: str = "r") -> dmarc.Discovery:
    record = dmarc.DmarcRecord(p, sp, adkim, aspf, pct)  # type: ignore[arg-type]
    return dmarc.Discovery("ok", record, at)


def test_pass_through_spf_alignment() -> None:
    got = dmarc.evaluate("example.test", found("reject"), spf_pass("bounces.example.test"),
                         [], 0.5)
    assert (got.result, got.spf_aligned, got.dkim_aligned, got.disposition) == (
        "pass", True, False, "none")
    strict = dmarc.evaluate("example.test", found("reject", aspf="s"),
                            spf_pass("bounces.example.test"), [], 0.5)
    assert strict.result == "fail"


def test_pass_through_dkim_alignment() -> None:
    spf_other = spf_pass("mailer.other.test")  # an ESP's bounce domain: not aligned
    got = dmarc.evaluate("example.test", found("reject"), spf_other,
                         [DkimResult("fail", "example.test"), dkim_pass("example.test")], 0.5)
    assert (got.result, got.spf_aligned, got.dkim_aligned) == ("pass", False, True)
    unaligned = dmarc.evaluate("example.test", found("reject"), spf_other,
                               [dkim_pass("other.test")], 0.5)
    assert unaligned.result == "fail"


def test_fail_dispositions_policy_subdomain_policy_and_pct() -> None:
    fail = dmarc.evaluate("example.test", found("reject"), None, [], 0.99)
    assert (fail.result, fail.policy, fail.disposition) == ("fail", "reject", "reject")
    sub = dmarc.evaluate("news.example.test", found("reject", sp="quarantine"), None, [], 0.0)
    assert (sub.policy, sub.disposition) == ("quarantine", "quarantine")
    # RFC 7489 6.6.4: outside pct=, the next less strict policy
    sampled_out = dmarc.evaluate("example.test", found("reject", pct=10), None, [], 0.5)
    assert (sampled_out.policy, sampled_out.disposition) == ("reject", "quarantine")
    sampled_in = dmarc.evaluate("example.test", found("reject", pct=10), None, [], 0.05)
    assert sampled_in.disposition == "reject"
    none = dmarc.evaluate("example.test", found("none"), None, [], 0.0)
    assert (none.result, none.disposition) == ("fail", "none")
    nothing = dmarc.evaluate("example.test", dmarc.Discovery("none", None, "example.test"),
                             None, [], 0.0)
    assert (nothing.result, nothing.policy) == ("none", None)
