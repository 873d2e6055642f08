"""Policy building blocks as plain functions: addresses, networks, hops, rules from config."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goniec.config import load_config
from goniec.errors import ConfigError
from goniec.policy.addresses import (
    has_routing_syntax,
    in_domains,
    literal_address,
    local_key,
    normalize_domain,
    recipient_domain,
    split_address,
)
from goniec.policy.build import build_rules
from goniec.policy.hops import ReceivedCounter
from goniec.policy.login import client_key
from goniec.policy.netset import NetSet
from goniec.policy.relay import may_relay
from goniec.policy.rules import ReverseDns, Rules
from goniec.policy.transaction import RcptFacts, check_rcpt


def test_normalize_domain() -> None:
    assert normalize_domain("Goniec.TEST.") == "goniec.test"
    assert normalize_domain("bücher.test") == "xn--bcher-kva.test"
    assert normalize_domain("BÜCHER.test") == "xn--bcher-kva.test"
    assert normalize_domain("[IPv6:2001:DB8::1]") == "[ipv6:2001:db8::1]"
    bad = "a" * 70 + "ü.test"  # a label IDNA refuses: kept, matches nothing configured
    assert normalize_domain(bad) == bad


def test_split_and_keys() -> None:
    assert split_address('"a@b"@C.test') == ('"a@b"', "C.test")
    assert split_address("Postmaster") == ("Postmaster", "")
    assert recipient_domain('"a@b"@C.Test') == "c.test"
    assert local_key('"John\\ Smith"') == "john smith"
    assert local_key("ALICE") == "alice"
    for routed in ("a%b", "b!a", '"a@b"', '"a\\@b"', '"a%b"'):
        assert has_routing_syntax(routed), routed
    for plain in ("alice", '"john smith"', "a+tag", "o'brien"):
        assert not has_routing_syntax(plain), plain


def test_literals_and_domain_lists() -> None:
    assert literal_address("[192.0.2.1]") == ipaddress.ip_address("192.0.2.1")
    assert literal_address("[IPv6:::ffff:192.0.2.1]") == ipaddress.ip_address("192.0.2.1")
    assert literal_address("[nonsense]") is None and literal_address("a.test") is None
    domains = frozenset({"example.test"})
    assert in_domains("Mail.Example.Test.", domains) and in_domains("example.test", domains)
    assert not in_domains("badexample.test", domains) and not in_domains("", domains)


nets = st.one_of(
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.integers(0, 2**32 - 1), st.integers(8, 32)),
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.integers(0, 2**128 - 1), st.integers(16, 128)),
)
addrs = st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                  st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))


@given(st.lists(nets, max_size=12), st.lists(addrs, max_size=20))
def test_netset_equals_naive_membership(networks: list, ips: list) -> None:
    ns = NetSet(networks)
    for ip in ips:
        naive = any(ip in n for n in networks if n.version == ip.version)
        mapped = getattr(ip, "ipv4_mapped", None)
        naive = naive or (mapped is not None and any(mapped in n for n in networks
                                                      if n.version == 4))
        assert (ip in ns) == naive


@given(st.lists(nets, min_size=1, max_size=12))
def test_netset_contains_its_networks_edges(networks: list) -> None:
    ns = NetSet(networks)
    for n in networks:
        assert n.network_address in ns and n.broadcast_address in ns


def test_netset_mapped_and_strings() -> None:
    ns = NetSet(["192.0.2.0/24"])
    assert "::ffff:192.0.2.1" in ns and "192.0.2.255" in ns and "192.0.3.0" not in ns
    assert "not an ip" not in ns and not NetSet() and len(ns) == 1


# --------------------------------------------------------------------------- hops

HEADER = (b"Received: from a\r\n\tby b; x\r\nRECEIVED : from c\r\nX-Received: no\r\n"
          b"Subject: received: no\r\n received: a folded line, no\r\nReceived:from d\r\n"
          b"\r\nReceived: in the body, not counted\r\n")


def test_received_counter_counts_header_fields_only() -> None:
    c = ReceivedCounter()
    c.feed(HEADER)
    assert (c.count, c.done) == (3, True)


@given(st.lists(st.integers(1, len(HEADER)), max_size=10))
def test_received_counter_any_chunking(cuts: list[int]) -> None:
    c = ReceivedCounter()
    pos = 0
    for cut in sorted(set(cuts)):
        c.feed(HEADER[pos:cut])
        pos = cut
    c.feed(HEADER[pos:])
    assert c.count == 3


def test_received_counter_byte_at_a_time_and_long_lines() -> None:
    data = b"Subject: " + b"x" * 5000 + b"\r\n" + b"Received: y\r\n" * 40 + b"\r\nbody\r\n"
    one = ReceivedCounter()
    for i in range(len(data)):
        one.feed(data[i : i + 1])
    assert one.count == 40 and one.done
    stop = ReceivedCounter(stop_after=5)
    stop.feed(data)
    assert stop.count > 5 and stop.done


def test_received_counter_empty_header_and_bare_lf() -> None:
    c = ReceivedCounter()
    c.feed(b"\r\nReceived: body\r\n")
    assert (c.count, c.done) == (0, True)
    c = ReceivedCounter()
    c.feed(b"Received: a\nReceived: b\n\nReceived: body\n")
    assert c.count == 2


# --------------------------------------------------------------------------- rules


def rules_of(tmp_path: Path, text: str) -> Rules:
    path = tmp_path / "g.toml"
    path.write_text(text, encoding="utf-8")
    return build_rules(load_config(path))


def test_client_key_groups_ipv6_networks() -> None:
    assert client_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"
    assert client_key(ipaddress.ip_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert client_key(ipaddress.ip_address("2001:db8:1:2:3::4")) == "2001:db8:1:2::/64"
    assert client_key(ipaddress.ip_address("2001:db8::4"), 128) == "2001:db8::4"


def test_defaults_are_a_closed_relay(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, "")
    outside = ipaddress.ip_address("198.51.100.1")
    assert may_relay(rules, ip=outside) is False
    assert may_relay(rules, ip=outside, auth_user="alice") is True
    assert may_relay(rules, ip=ipaddress.ip_address("127.0.0.1")) is True
    assert not rules.needs_reverse_dns
    reply = check_rcpt(rules, RcptFacts("x@remote.example", outside))
    assert str(reply) == "550 5.7.1 Unable to relay for <x@remote.example>"


def test_domain_entries_need_reverse_dns(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, '[relay]\ndomains = ["trusted.example"]\n')
    assert rules.needs_reverse_dns
    ip = ipaddress.ip_address("198.51.100.1")
    assert may_relay(rules, ip=ip, reverse=ReverseDns("ok", "a.trusted.example")) is True
    assert may_relay(rules, ip=ip, reverse=ReverseDns("tempfail")) is None


@pytest.mark.parametrize(("text", "message"), [
    ('[domains]\nlocal = ["a.test"]\n[recipients."b.test"]\nmailboxes = ["x"]\n',
     'recipients."b.test": "b.test" is not in domains.local'),
    ('[domains]\nlocal = ["a.test"]\naliases = { "c.test" = "a.test" }\n'
     '[recipients."c.test"]\nmailboxes = ["x"]\n', 'recipients."c.test": "c.test" is an alias'),
    ('[domains]\nlocal = ["a.test"]\naliases = { "a.test" = "a.test" }\n',
     'domains.aliases."a.test": "a.test" is a local domain already'),
    ('[domains]\nlocal = ["a.test"]\naliases = { "c.test" = "d.test" }\n',
     'domains.aliases."c.test": "d.test" is not in domains.local'),
    ('[domains]\nlocal = ["a.test"]\n[recipients."a.test"]\nmailboxes = ["x"]\n'
     'aliases = { x = "y" }\n', '"x" is a mailbox and an alias'),
    ('[domains]\nlocal = ["a.test"]\n[recipients."a.test"]\nmailboxes = ["x@y"]\n',
     "recipients.\"a.test\".mailboxes[0]: must be a local part"),
    ('[domains]\nlocal = ["a.test"]\n[recipients."a.test"]\nmailboxes = ["x"]\n'
     'aliases = { y = "z" }\n', "target 'z@a.test' is not a mailbox, alias or forward"),
    ('[domains]\nlocal = ["a.test"]\n[recipients."a.test"]\naliases = { y = "z", z = "y" }\n',
     "expands to no mailbox or forward (an alias loop?)"),
    ('[domains]\nlocal = ["a.test"]\n[remote_domains."a.test"]\nrelay = true\n',
     'remote_domains."a.test": "a.test" is a local domain'),
    ('[remote_domains."x.test"]\nusername = "u"\n',
     'remote_domains."x.test".password_file: username and password_file go together'),
    ('[remote_domains."x.test"]\nusername = "u"\npassword_file = "p"\n',
     'remote_domains."x.test".tls: a login needs tls = "required", "verify" or "implicit"'),
    ('[remote_domains."x.test"]\nsmart_host = "[999.1.1.1]"\n', "is not an address literal"),
    ('[limits]\nmessage_size = "10MB"\nsession_size = "5MB"\n',
     "limits.session_size: must be 0 (unlimited) or at least message_size"),
    ('[access]\nmode = "some"\n', 'access.mode: must be one of "only", "all_except"'),
    ('[access]\nnetworks = ["10.0.0.1/8"]\n', 'has host bits set; did you mean "10.0.0.0/8"?'),
    ('[peers]\nhelo = "paranoid"\n', 'peers.helo: must be one of "off", "syntax", "fqdn", "strict"'),
    ('[dns]\nnameservers = ["dns.example"]\n', 'dns.nameservers[0]: "dns.example" is not an IP'),
    ('[auth]\nsenders = { alice = ["nobody"] }\n', 'auth.senders.alice: must be an address'),
    ("[rates]\nipv6_prefix = 8\n", "rates.ipv6_prefix: must be >= 32"),
    ("[rates]\nlockout = 0\n", "rates.lockout: must be more than 0 seconds"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
