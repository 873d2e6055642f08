"""End to end over a loopback DNS server: inbound checks, the header, the decision, ARC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from goniec.mailauth import arc, dkim
from goniec.mailauth.decision import InboundPolicy, inbound_decision
from goniec.mailauth.dnsview import DnsSettings, DnsView
from goniec.mailauth.inbound import InboundChecker
from goniec.mailauth.keys import DkimKey, generate
from goniec.mailauth.outcome import InboundResults

from .conftest import make_message, publish
from .dnsserver import ZoneServer

SENDER_IP = "192.0.2.10"
OUR_IP = "198.51.100.25"
SPOOFER_IP = "203.0.113.9"


@pytest.fixture(scope="module")
def arc_key() -> DkimKey:
    return DkimKey("goniec.test", "arc1", generate("rsa"))


@pytest.fixture
def world(dns_server: ZoneServer, rsa_key: DkimKey, arc_key: DkimKey) -> ZoneServer:
    z = dns_server
    z.add("example.test", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    z.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; rua=mailto:d@example.test")
    z.add("mail.example.test", "A", SENDER_IP)
    z.add("mail.example.test", "TXT", "v=spf1 a -all")
    z.add("evil.test", "TXT", f"v=spf1 ip4:{SPOOFER_IP} -all")
    z.add("goniec.test", "TXT", f"v=spf1 ip4:{OUR_IP} -all")
    publish(z, rsa_key)
    publish(z, arc_key)
    return z


@pytest.fixture
def checker(view: DnsView) -> Iterator[InboundChecker]:
    c = InboundChecker(view, "mx.goniec.test")
    yield c
    c.close()


def run_check(checker: InboundChecker, message: bytes, ip: str, helo: str,
              mail_from: str) -> InboundResults:
    return asyncio.run(checker.check(message, peer_ip=ip, helo=helo, mail_from=mail_from))


def test_mail_that_passes_everything(world: ZoneServer, checker: InboundChecker,
                                     rsa_key: DkimKey) -> None:
    message = make_message()
    signed = dkim.sign(message, rsa_key) + message
    got = run_check(checker, signed, SENDER_IP, "mail.example.test", "alice@example.test")
    assert got.spf.result == "pass" and got.helo is not None and got.helo.result == "pass"
    assert [d.result for d in got.dkim] == ["pass"]
    assert (got.dmarc.result, got.dmarc.spf_aligned, got.dmarc.dkim_aligned) == (
        "pass", True, True)
    assert got.arc is not None and got.arc.result == "none"
    queued = checker.prepare(signed, got)
    top = queued.split(b"\r\n\r\n")[0].decode()
    assert top.startswith("Authentication-Results: mx.goniec.test;\r\n\tspf=pass")
    for word in ("smtp.mailfrom=alice@example.test", "dkim=pass header.b=",
                 "dmarc=pass (p=reject dis=none) header.from=example.test", "arc=none"):
        assert word in top
    assert queued.endswith(signed)
    assert inbound_decision(got, InboundPolicy(dmarc="enforce")).action == "accept"


def test_spoofed_mail_from_a_reject_domain(world: ZoneServer, checker: InboundChecker) -> None:
    message = make_message(sender="ceo@example.test")
    got = run_check(checker, message, SPOOFER_IP, "spoof.evil.test", "mallory@evil.test")
    assert got.spf.result == "pass"  # evil.test's own SPF passes, but is not aligned
    assert got.dkim == ()
    assert (got.dmarc.result, got.dmarc.policy, got.dmarc.disposition) == (
        "fail", "reject", "reject")
    header = checker.header(got)
    assert b"dmarc=fail (p=reject dis=reject) header.from=example.test" in header
    assert b"dkim=none" in header
    assert inbound_decision(got, InboundPolicy()).action == "accept"  # record only
    verdict = inbound_decision(got, InboundPolicy(dmarc="enforce"))
    assert verdict.action == "reject" and verdict.reply is not None
    assert verdict.reply.code == 550 and verdict.reply.enhanced == "5.7.1"


def test_forged_results_claiming_our_name_are_removed(world: ZoneServer,
                                                      checker: InboundChecker) -> None:
    forged = (b"Authentication-Results: MX.goniec.test; dmarc=pass header.from=example.test\r\n"
              b"Authentication-Results: elsewhere.test; spf=pass\r\n" + make_message())
    got = run_check(checker, forged, SPOOFER_IP, "x.evil.test", "m@evil.test")
    queued = checker.prepare(forged, got)
    head = queued.split(b"\r\n\r\n")[0]
    assert head.count(b"Authentication-Results: ") == 2
    assert b"elsewhere.test; spf=pass" in head and b"MX.goniec.test" not in head
    assert head.startswith(b"Authentication-Results: mx.goniec.test;")


def test_a_dead_name_server_gives_temperror_and_the_session_goes_on(silent_port: int,
                                                                    rsa_key: DkimKey) -> None:
    view = DnsView(DnsSettings(("127.0.0.1",), silent_port, 0.5))
    checker = InboundChecker(view, "mx.goniec.test")
    message = make_message()
    signed = dkim.sign(message, rsa_key) + message

    async def main() -> tuple[InboundResults, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        got = await checker.check(signed, peer_ip=SENDER_IP, helo="mail.example.test",
                                  mail_from="alice@example.test")
        task.cancel()
        return got, ticks

    started = time.monotonic()
    try:
        got, ticks = asyncio.run(main())
    finally:
        checker.close()
    assert time.monotonic() - started < 1.5
    assert ticks >= 25
    assert got.spf.result == "temperror" and got.helo is not None
    assert got.helo.result == "temperror"
    assert [d.result for d in got.dkim] == ["temperror"]
    assert got.dmarc.result == "temperror"
    verdict = inbound_decision(got, InboundPolicy(dmarc="enforce", temperror="defer"))
    assert verdict.action == "defer" and verdict.reply is not None
    assert verdict.reply.code == 451


def test_forwarded_mail_carries_a_valid_arc_set(world: ZoneServer, checker: InboundChecker,
                                                view: DnsView, rsa_key: DkimKey,
                                                arc_key: DkimKey) -> None:
    message = make_message()
    signed = dkim.sign(message, rsa_key) + message
    got = run_check(checker, signed, SENDER_IP, "mail.example.test", "alice@example.test")
    queued = checker.prepare(signed, got)
    arc_set = asyncio.run(arc.seal_in_thread(queued, arc_key, "mx.goniec.test"))
    assert arc_set.startswith(b"ARC-Seal: i=1; cv=none;")
    assert b"ARC-Authentication-Results: i=1; mx.goniec.test;" in arc_set
    forwarded = arc_set + queued
    # The next hop: our address is not in example.test's SPF, and a footer
    # added by the "list" breaks DKIM; ARC still shows what we saw.
    changed = forwarded + b"-- \r\nlist footer\r\n"
    next_hop = InboundChecker(view, "mx.next.test")
    try:
        there = run_check(next_hop, forwarded, OUR_IP, "mx.goniec.test", "alias@goniec.test")
        assert there.arc is not None and (there.arc.result, there.arc.instances) == ("pass", 1)
        broken = run_check(next_hop, changed, OUR_IP, "mx.goniec.test", "alias@goniec.test")
        assert [d.result for d in broken.dkim] == ["fail"] and broken.dmarc.result == "fail"
        assert broken.arc is not None and broken.arc.result == "fail"
        # a second forwarder seals again: the chain has two sets and passes
        second = DkimKey("next.test", "arc2", generate("rsa"))
        publish(world, second)
        next_hop_queued = next_hop.prepare(forwarded, there)
        resealed = arc.seal(next_hop_queued, second, "mx.next.test") + next_hop_queued
        assert resealed.startswith(b"ARC-Seal: i=2; cv=pass;")
        final = asyncio.run(arc.verify(DnsView(view.settings), resealed))
        assert (final.result, final.instances) == ("pass", 2)
    finally:
        next_hop.close()


def test_arc_seal_needs_our_results_and_an_rsa_key(world: ZoneServer, arc_key: DkimKey,
                                                   ed_key: DkimKey) -> None:
    message = make_message()
    assert arc.seal(message, arc_key, "mx.goniec.test") == b""  # nothing of ours to seal
    with pytest.raises(arc.SealError):
        arc.seal(message, ed_key, "mx.goniec.test")


def test_arc_key_lookup_failure_is_a_temporary_fail(world: ZoneServer, checker: InboundChecker,
                                                    arc_key: DkimKey) -> None:
    message = make_message()
    got = run_check(checker, message, SENDER_IP, "mail.example.test", "alice@example.test")
    queued = checker.prepare(message, got)
    sealed = arc.seal(queued, arc_key, "mx.goniec.test") + queued
    world.zone[arc_key.record_name] = ["SERVFAIL"]
    view = DnsView(DnsSettings(("127.0.0.1",), world.port, 1.0), cache=False)
    result = asyncio.run(arc.verify(view, sealed))
    assert (result.result, result.temporary) == ("fail", True)
