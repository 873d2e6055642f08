"""Relay decisions as plain functions: facts in, replies out."""

from __future__ import annotations

import ipaddress

import pytest

from goniec.policy.relay import RelayRules, check_recipient, recipient_domain
from goniec.policy.session import MailFacts, check_mail_from

RULES = RelayRules(
    local_domains=frozenset({"goniec.test", "xn--bcher-kva.test"}),
    networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    authenticated_may_relay=True,
)
OUTSIDE = ipaddress.ip_address("192.0.2.7")
INSIDE = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(
    ("peer", "user", "rcpt", "code"),
    [
        (OUTSIDE, None, "bob@goniec.test", 250),
        (OUTSIDE, None, "bob@GONIEC.TEST", 250),
        (OUTSIDE, None, "bob@bücher.test", 250),  # U-label equals the configured A-label
        (OUTSIDE, None, "Postmaster", 250),  # RFC 5321 4.1.1.3
        (OUTSIDE, None, "victim@remote.example", 550),
        (OUTSIDE, None, "victim@goniec.test.remote.example", 550),
        (OUTSIDE, "alice", "friend@remote.example", 250),
        (INSIDE, None, "friend@remote.example", 250),
        (ipaddress.ip_address("::1"), None, "friend@remote.example", 250),
        (ipaddress.ip_address("::ffff:127.0.0.1"), None, "friend@remote.example", 250),
        (ipaddress.ip_address("2001:db8::1"), None, "friend@remote.example", 550),
    ],
)
def test_check_recipient(peer, user, rcpt, code) -> None:
    reply = check_recipient(RULES, peer_ip=peer, auth_user=user, recipient=rcpt)
    assert reply.code == code
    if code == 550:
        assert reply.enhanced == "5.7.1"
        assert reply.text == f"Unable to relay for <{rcpt}>"


def test_authenticated_relay_can_be_switched_off() -> None:
    rules = RelayRules(RULES.local_domains, RULES.networks, authenticated_may_relay=False)
    reply = check_recipient(rules, peer_ip=OUTSIDE, auth_user="alice", recipient="x@remote.example")
    assert reply.code == 550


def test_recipient_domain() -> None:
    assert recipient_domain("a@B.Test") == "b.test"
    assert recipient_domain("postmaster") == ""
    assert recipient_domain('"a@b"@c.test') == "c.test"


@pytest.mark.parametrize(
    ("required", "user", "storage", "code", "enhanced"),
    [
        (False, None, True, 250, "2.1.0"),
        (True, None, True, 530, "5.7.0"),
        (True, "alice", True, 250, "2.1.0"),
        (False, None, False, 452, "4.3.1"),
    ],
)
def test_check_mail_from(required, user, storage, code, enhanced) -> None:
    reply = check_mail_from(MailFacts(auth_required=required, auth_user=user, storage_ok=storage))
    assert (reply.code, reply.enhanced) == (code, enhanced)
