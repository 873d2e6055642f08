"""AUTH from the client side: PLAIN and LOGIN against the server core, XOAUTH2 and
OAUTHBEARER bytes (RFC 4954, 4616, 7628), and the mechanism choice."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from goniec import replies as r
from goniec.protocol import AuthCredentials, LocalProtocolError
from goniec.protocol.client import AuthDone, HelloDone
from goniec.protocol.client_commands import choose_mechanism, oauthbearer_response

from .client_harness import Pair, Scripted


def auth_pair(**kwargs: Any) -> Pair:
    pair = Pair(auth_requires_tls=False, **kwargs)
    pair.ready()
    assert pair.client.extensions.auth == {"PLAIN", "LOGIN"}
    return pair


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "plain"])
def test_password_mechanisms_against_the_server_core(mech: str) -> None:
    pair = auth_pair()
    pair.client.authenticate(mech, "alice", "correct horse \u00e9")
    [done] = pair.pump()
    assert isinstance(done, AuthDone) and done.reply == r.R235_AUTH_OK
    assert pair.client.authenticated
    creds = next(e for e in pair.server.events if isinstance(e, AuthCredentials))
    assert (creds.username, creds.password) == ("alice", "correct horse \u00e9")
    assert creds.mechanism == mech.upper()


def test_refused_password() -> None:
    pair = auth_pair(answers={AuthCredentials: r.R535_AUTH_FAILED})
    pair.client.authenticate("LOGIN", "alice", "wrong")
    [done] = pair.pump()
    assert isinstance(done, AuthDone) and done.reply == r.R535_AUTH_FAILED
    assert done.server_error is None and not pair.client.authenticated


def test_tls_start_forgets_authentication_and_extensions() -> None:
    pair = Pair(tls_available=True)
    pair.ready()
    assert pair.client.extensions.starttls and not pair.client.extensions.auth
    pair.client.starttls()
    pair.pump()
    pair.client.tls_started()
    pair.client.hello()
    [hello] = pair.pump()
    assert isinstance(hello, HelloDone) and pair.client.tls_active
    assert pair.client.extensions.auth == {"PLAIN", "LOGIN"}
    assert not pair.client.extensions.starttls


def test_xoauth2_success_bytes() -> None:
    s = Scripted()
    s.ehlo("AUTH XOAUTH2 OAUTHBEARER")
    s.client.authenticate("XOAUTH2", "bot@example.org", "tok123")
    line = s.sent()
    assert line.startswith(b"AUTH XOAUTH2 ") and line.endswith(b"\r\n")
    assert base64.b64decode(line[13:-2]) == b"user=bot@example.org\x01auth=Bearer tok123\x01\x01"
    [done] = s.reply(b"235 2.7.0 Accepted\r\n")
    assert isinstance(done, AuthDone) and done.reply.code == 235 and done.server_error is None


def test_xoauth2_refused_token_gives_the_server_error() -> None:
    s = Scripted()
    s.ehlo("AUTH XOAUTH2")
    s.client.authenticate("XOAUTH2", "bot@example.org", "expired")
    s.sent()
    error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.example/"}
    challenge = base64.b64encode(json.dumps(error).encode())
    assert s.reply(b"334 " + challenge + b"\r\n") == []
    assert s.sent() == b"\r\n"  # the empty response that asks for the final reply
    [done] = s.reply(b"535 5.7.8 Username and Password not accepted\r\n")
    assert isinstance(done, AuthDone) and done.reply.code == 535
    assert done.server_error is not None and json.loads(done.server_error) == error


def test_oauthbearer_bytes_and_error_round() -> None:
    s = Scripted()
    s.ehlo("AUTH OAUTHBEARER")
    s.client.authenticate("OAUTHBEARER", "u,=x@example.org", "tok", host="mx.test", port=587)
    line = s.sent()
    assert base64.b64decode(line[len(b"AUTH OAUTHBEARER "):-2]) == (
        b"n,a=u=2C=3Dx@example.org,\x01host=mx.test\x01port=587\x01auth=Bearer tok\x01\x01")
    s.reply(b"334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n")
    assert s.sent() == b"AQ==\r\n"  # RFC 7628 3.2.3: a single %x01
    [done] = s.reply(b"535 5.7.8 nope\r\n")
    assert isinstance(done, AuthDone) and done.server_error == '{"status":"invalid_token"}'
    assert base64.b64decode(oauthbearer_response("u", "t")) == b"n,a=u,\x01auth=Bearer t\x01\x01"


def test_unexpected_challenges_are_cancelled_and_bounded() -> None:
    s = Scripted()
    s.ehlo("AUTH PLAIN")
    s.client.authenticate("PLAIN", "u", "p")
    s.sent()
    assert s.reply(b"334 \r\n") == []
    assert s.sent() == b"*\r\n"  # RFC 4954 4: cancel
    [done] = s.reply(b"501 5.7.0 cancelled\r\n")
    assert isinstance(done, AuthDone) and done.reply.code == 501
    s.client.authenticate("LOGIN", "u", "p")
    s.sent()
    for _ in range(4):
        s.reply(b"334 VXNlcm5hbWU6\r\n")
    events = s.reply(b"334 VXNlcm5hbWU6\r\n")
    assert s.client.closed and events[-1].reason == "endless AUTH exchange"


def test_auth_out_of_turn_and_unknown() -> None:
    s = Scripted()
    with pytest.raises(LocalProtocolError):
        s.client.authenticate("PLAIN", "u", "p")
    s.ehlo("AUTH PLAIN")
    with pytest.raises(LocalProtocolError):
        s.client.authenticate("GSSAPI", "u", "p")


def test_choose_mechanism() -> None:
    offered = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"})
    assert choose_mechanism(offered, ["PLAIN", "LOGIN"]) == "PLAIN"
    assert choose_mechanism(offered, ["login", "plain"]) == "LOGIN"
    assert choose_mechanism(offered, ["OAUTHBEARER", "XOAUTH2"]) == "XOAUTH2"
    assert choose_mechanism(offered, ["CRAM-MD5"]) is None  # offered, not supported
    assert choose_mechanism(frozenset(), ["PLAIN"]) is None
