"""MX resolution against a real DNS server on loopback (RFC 5321 5.1, RFC 7505)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from goniec.delivery.destination import SmartHost, Target, parse_smart_host
from goniec.delivery.dns import MxResolver
from goniec.delivery.resolver import LookupFailed

from .dnsserver import ZoneServer

LOOP = {"A": ["127.0.0.1"], "AAAA": ["::1"]}


def resolver(server: ZoneServer, **kwargs: Any) -> MxResolver:
    kwargs.setdefault("timeout", 2.0)
    return MxResolver(["127.0.0.1"], port=server.port, cache=False, **kwargs)


def mx(res: MxResolver, domain: str, port: int = 25) -> list[Target]:
    return asyncio.run(res.mx_targets(domain, port))


def failure(res: MxResolver, domain: str) -> LookupFailed:
    with pytest.raises(LookupFailed) as info:
        mx(res, domain)
    return info.value


def test_mx_by_preference_ipv6_first(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    zone["pref.test"] = {"MX": [(20, "mx2.pref.test"), (10, "mx1.pref.test"),
                                (30, "mx3.pref.test")]}
    zone["mx1.pref.test"] = LOOP
    zone["mx2.pref.test"] = {"A": ["127.0.0.2"]}
    zone["mx3.pref.test"] = {"AAAA": ["::1"], "A": ["127.0.0.1"]}  # same as mx1: skipped
    got = mx(resolver(dns_server), "pref.test", 2525)
    assert got == [Target("mx1.pref.test", "::1", 2525),
                   Target("mx1.pref.test", "127.0.0.1", 2525),
                   Target("mx2.pref.test", "127.0.0.2", 2525)]
    v4 = mx(resolver(dns_server, ipv6=False), "pref.test")
    assert [t.address for t in v4] == ["127.0.0.1", "127.0.0.2"]
    v4_first = mx(resolver(dns_server, prefer_ipv6=False), "PREF.test.")
    assert [t.address for t in v4_first][:2] == ["127.0.0.1", "::1"]


def test_equal_preferences_are_shuffled(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    zone["eq.test"] = {"MX": [(10, "a.eq.test"), (10, "b.eq.test"), (5, "first.eq.test")]}
    zone["a.eq.test"] = {"A": ["127.0.0.11"]}
    zone["b.eq.test"] = {"A": ["127.0.0.12"]}
    zone["first.eq.test"] = {"A": ["127.0.0.10"]}
    orders = set()
    for seed in range(12):
        got = mx(resolver(dns_server, rng=random.Random(seed)), "eq.test")
        assert got[0].host == "first.eq.test"
        orders.add(tuple(t.host for t in got[1:]))
    assert orders == {("a.eq.test", "b.eq.test"), ("b.eq.test", "a.eq.test")}


def test_no_mx_falls_back_to_the_domains_addresses(dns_server: ZoneServer,
                                                   zone: dict[str, Any]) -> None:
    zone["implicit.test"] = {"A": ["127.0.0.1"], "AAAA": ["::1"]}
    assert mx(resolver(dns_server), "implicit.test") == [
        Target("implicit.test", "::1", 25), Target("implicit.test", "127.0.0.1", 25)]
    zone["nothing.test"] = {"TXT": []}  # exists, no MX, no address
    err = failure(resolver(dns_server), "nothing.test")
    assert err.reply.code == 550 and err.reply.enhanced == "5.1.2" and not err.temporary


def test_null_mx_is_permanent(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    zone["nullmx.test"] = {"MX": [(0, ".")], "A": ["127.0.0.1"]}
    err = failure(resolver(dns_server), "nullmx.test")
    assert (err.reply.code, err.reply.enhanced) == (556, "5.1.10")
    assert "does not accept mail" in err.reply.text and not err.temporary


def test_nxdomain_is_permanent(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    err = failure(resolver(dns_server), "no-such-domain.test")
    assert (err.reply.code, err.reply.enhanced) == (550, "5.1.2")
    assert "no-such-domain.test" in err.reply.text


def test_servfail_is_temporary(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    zone["broken.test"] = "SERVFAIL"
    err = failure(resolver(dns_server), "broken.test")
    assert (err.reply.code, err.reply.enhanced) == (451, "4.4.3") and err.temporary


def test_silent_server_times_out_temporarily(silent_dns_port: int) -> None:
    res = MxResolver(["127.0.0.1"], port=silent_dns_port, timeout=0.5)
    started = time.monotonic()
    err = failure(res, "slow.test")
    assert time.monotonic() - started < 2.0
    assert err.reply.enhanced == "4.4.3" and "timeout" in err.reply.text and err.temporary


def test_mx_hosts_partly_or_wholly_unresolvable(dns_server: ZoneServer,
                                                zone: dict[str, Any]) -> None:
    zone["part.test"] = {"MX": [(10, "gone.part.test"), (20, "ok.part.test"),
                                (30, "fail.part.test")]}
    zone["ok.part.test"] = {"A": ["127.0.0.1"]}
    zone["fail.part.test"] = "SERVFAIL"
    assert [t.host for t in mx(resolver(dns_server), "part.test")] == ["ok.part.test"]
    zone["dead.test"] = {"MX": [(10, "gone.dead.test")]}
    err = failure(resolver(dns_server), "dead.test")
    assert err.reply.enhanced == "4.4.4" and err.temporary  # when in doubt, retry
    zone["flaky.test"] = {"MX": [(10, "fail.part.test"), (20, "gone.dead.test")]}
    assert failure(resolver(dns_server), "flaky.test").reply.enhanced == "4.4.3"


def test_cname_to_the_mx_host(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    zone["cn.test"] = {"MX": [(10, "alias.cn.test")]}
    zone["alias.cn.test"] = {"CNAME": "real.cn.test"}
    zone["real.cn.test"] = {"A": ["127.0.0.1"]}
    assert mx(resolver(dns_server), "cn.test") == [Target("alias.cn.test", "127.0.0.1", 25)]


def test_our_own_name_in_the_mx_list(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    # RFC 5321 5.1: drop ourselves and everything at our preference or worse.
    zone["loop.test"] = {"MX": [(10, "me.loop.test"), (20, "backup.loop.test")]}
    zone["backup.test"] = {"MX": [(5, "primary.loop.test"), (10, "me.loop.test"),
                                  (20, "backup.loop.test")]}
    for name in ("me", "backup", "primary"):
        zone[f"{name}.loop.test"] = {"A": ["127.0.0.1"]}
    err = failure(resolver(dns_server, own_names=["ME.loop.test."]), "loop.test")
    assert (err.reply.code, err.reply.enhanced) == (550, "5.4.6")
    got = mx(resolver(dns_server, own_names=["me.loop.test"]), "backup.test")
    assert [t.host for t in got] == ["primary.loop.test"]


def test_address_literals_need_no_dns(dns_server: ZoneServer) -> None:
    res = resolver(dns_server)
    before = len(dns_server.queries)
    assert mx(res, "[127.0.0.1]") == [Target("127.0.0.1", "127.0.0.1", 25)]
    assert mx(res, "[IPv6:::1]", 26) == [Target("::1", "::1", 26)]
    assert len(dns_server.queries) == before
    assert failure(res, "[not.an.ip]").reply.code == 550


def test_smart_host_lookups(dns_server: ZoneServer, zone: dict[str, Any]) -> None:
    zone["relay.test"] = {"MX": [(10, "mx.relay.test")], "A": ["127.0.0.9"]}
    zone["mx.relay.test"] = {"A": ["127.0.0.1"]}
    res = resolver(dns_server)

    def targets(text: str) -> list[Target]:
        return asyncio.run(res.smart_host_targets(parse_smart_host(text), 25))

    # Unbracketed: MX lookup (as Postfix's relayhost and IIS do).
    assert targets("relay.test:587") == [Target("mx.relay.test", "127.0.0.1", 587)]
    # Brackets: the name's own addresses, no MX.
    assert targets("[relay.test]") == [Target("relay.test", "127.0.0.9", 25)]
    assert targets("[127.0.0.1]:2525") == [Target("127.0.0.1", "127.0.0.1", 2525)]
    assert targets("::1") == [Target("::1", "::1", 25)]
    # A wrong smart host is our configuration's fault: temporary, never a bounce.
    for bad in ("[gone.test]", "gone.test"):
        with pytest.raises(LookupFailed) as info:
            targets(bad)
        assert info.value.temporary, bad


def test_no_fallback_to_the_system_resolver() -> None:
    with pytest.raises(ValueError):
        MxResolver([])
    with pytest.raises(AssertionError, match="system resolver"):
        MxResolver.from_system()  # the test guard: resolv.conf is out of bounds here


@pytest.mark.parametrize(("text", "host", "port", "use_mx"), [
    ("smtp.example.test", "smtp.example.test", None, True),
    ("Smtp.Example.Test.:587", "smtp.example.test", 587, True),
    ("[smtp.example.test]", "smtp.example.test", None, False),
    ("[smtp.example.test]:2525", "smtp.example.test", 2525, False),
    ("[192.0.2.1]", "192.0.2.1", None, False),
    ("192.0.2.1:25", "192.0.2.1", 25, False),
    ("[2001:db8::1]:465", "2001:db8::1", 465, False),
    ("[IPv6:2001:DB8::1]", "2001:db8::1", None, False),
    ("2001:db8::1", "2001:db8::1", None, False),
    (" relay.test ", "relay.test", None, True),
])
def test_parse_smart_host(text: str, host: str, port: int | None, use_mx: bool) -> None:
    spec = parse_smart_host(text)
    assert spec == SmartHost(host, port, use_mx)
    assert parse_smart_host(str(spec)) == spec


@pytest.mark.parametrize("text", [
    "", "[", "[relay.test", "[relay.test]x", "relay.test:0", "relay.test:99999",
    "relay.test:abc", "bad_name.test", "-bad.test", "[1.2.3.4]:", "a..b",
])
def test_parse_smart_host_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_smart_host(text)
