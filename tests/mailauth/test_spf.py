"""SPF through Goniec's resolver: identities, RFC 7208 4.6.4 limits, timeouts, no blocking."""

from __future__ import annotations

import asyncio
import time

import pytest

from goniec.mailauth import spf
from goniec.mailauth.dnsview import DnsSettings, DnsView

from .dnsserver import ZoneServer

IP = "192.0.2.10"


@pytest.fixture
def zone(dns_server: ZoneServer) -> ZoneServer:
    dns_server.add("example.test", "TXT", "v=spf1 ip4:192.0.2.0/28 include:_spf.example.test -all")
    dns_server.add("_spf.example.test", "TXT", "v=spf1 a:out.example.test ~all")
    dns_server.add("out.example.test", "A", "198.51.100.7")
    dns_server.add("mail.example.test", "TXT", "v=spf1 a -all")
    dns_server.add("mail.example.test", "A", IP)
    dns_server.add("soft.test", "TXT", "v=spf1 ?all")
    dns_server.add("explained.test", "TXT", "v=spf1 -all exp=why.explained.test")
    dns_server.add("why.explained.test", "TXT", "%{i} may not send for %{d}")
    return dns_server


def check(view: DnsView, ip: str, sender: str, helo: str = "mail.example.test"
          ) -> spf.SpfResult:
    return spf.check_host(ip, sender, helo, view.spf_lookup)


def test_results_for_the_mail_from_identity(zone: ZoneServer, view: DnsView) -> None:
    assert check(view, IP, "alice@example.test").result == "pass"
    assert check(view, "198.51.100.7", "alice@example.test").result == "pass"  # via include
    assert check(view, "203.0.113.5", "alice@example.test").result == "fail"
    assert check(view, "203.0.113.5", "x@soft.test").result == "neutral"
    assert check(view, IP, "x@nothing.test").result == "none"
    got = check(view, "203.0.113.5", "x@explained.test")
    assert (got.result, got.explanation) == ("fail", "203.0.113.5 may not send for explained.test")
    assert (got.identity, got.domain, got.sender) == ("mailfrom", "explained.test",
                                                      "x@explained.test")


def test_helo_identity_and_the_null_sender(zone: ZoneServer, view: DnsView) -> None:
    helo = spf.check_host(IP, "alice@soft.test", "mail.example.test", view.spf_lookup,
                          identity="helo")
    assert (helo.result, helo.identity, helo.sender) == (
        "pass", "helo", "postmaster@mail.example.test")
    # RFC 7208 2.4: a null reverse-path is checked as postmaster@HELO
    bounce = check(view, "203.0.113.5", "")
    assert (bounce.result, bounce.identity, bounce.domain) == ("fail", "helo",
                                                               "mail.example.test")
    assert check(view, IP, "", helo="").result == "none"


def test_more_than_ten_dns_mechanisms_is_permerror(dns_server: ZoneServer,
                                                   view: DnsView) -> None:
    # RFC 7208 4.6.4: at most 10 mechanisms and modifiers that cause DNS lookups.
    includes = " ".join(f"include:i{n}.limit.test" for n in range(11))
    dns_server.add("limit.test", "TXT", f"v=spf1 {includes} -all")
    for n in range(11):
        dns_server.add(f"i{n}.limit.test", "TXT", "v=spf1 ?ip4:203.0.113.99")
    got = check(view, IP, "a@limit.test")
    assert got.result == "permerror" and "DNS lookups" in got.explanation
    dns_server.zone["limit.test"] = [("TXT", "v=spf1 " + " ".join(includes.split()[:10])
                                      + " -all")]
    view = DnsView(view.settings, cache=False)
    assert check(view, IP, "a@limit.test").result == "fail"  # exactly 10 is fine


def test_more_than_two_void_lookups_is_permerror(dns_server: ZoneServer,
                                                 view: DnsView) -> None:
    # RFC 7208 4.6.4: at most 2 lookups that return no records or NXDOMAIN.
    dns_server.add("void.test", "TXT", "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test"
                                       " -all")
    got = check(view, IP, "a@void.test")
    assert got.result == "permerror" and "Void lookup" in got.explanation
    dns_server.add("two.test", "TXT", "v=spf1 a:n1.void.test a:n2.void.test -all")
    assert check(view, IP, "a@two.test").result == "fail"


def test_server_failure_is_temperror(dns_server: ZoneServer, view: DnsView) -> None:
    dns_server.zone["broken.test"] = ["SERVFAIL"]
    got = check(view, IP, "a@broken.test")
    assert got.result == "temperror" and "server failure" in got.explanation


def test_a_dead_name_server_gives_temperror_within_the_timeout(silent_port: int) -> None:
    view = DnsView(DnsSettings(("127.0.0.1",), silent_port, 0.5))
    started = time.monotonic()
    got = check(view, IP, "alice@example.test")
    assert got.result == "temperror" and "timeout" in got.explanation
    assert time.monotonic() - started < 1.5


def test_the_time_limit_bounds_a_slow_chain(dns_server: ZoneServer) -> None:
    # Each lookup answers just inside the resolver timeout, the chain is long:
    # the whole check stops at time_limit.
    view = DnsView(DnsSettings(("127.0.0.1",), dns_server.port, 0.4))
    dns_server.add("chain.test", "TXT", "v=spf1 include:slow.chain.test -all")
    dns_server.zone["slow.chain.test"] = ["DROP"]
    started = time.monotonic()
    got = spf.check_host(IP, "a@chain.test", "h.test", view.spf_lookup, time_limit=0.2)
    assert got.result == "temperror"
    assert time.monotonic() - started < 0.6


def test_async_checks_run_off_the_event_loop(silent_port: int) -> None:
    """While SPF waits on a dead name server the loop keeps running other work."""
    view = DnsView(DnsSettings(("127.0.0.1",), silent_port, 0.6))

    async def main() -> tuple[spf.SpfResult, spf.SpfResult, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        mail, helo = await asyncio.gather(
            spf.check_mail_from(view, IP, "alice@example.test", "mail.example.test"),
            spf.check_helo(view, IP, "mail.example.test"))
        task.cancel()
        return mail, helo, ticks

    started = time.monotonic()
    mail, helo, ticks = asyncio.run(main())
    assert mail.result == helo.result == "temperror"
    assert time.monotonic() - started < 1.5
    assert ticks >= 30  # ~0.6 s of 10 ms ticks: the loop was never blocked


def test_other_pyspf_users_keep_pyspf_s_own_resolver() -> None:
    import spf as pyspf

    assert pyspf.DNSLookup is spf._dispatch
    assert spf._original_lookup is not spf._dispatch
