"""Real peers on loopback: MX lookup through the loopback DNS server to the real
`goniec serve` (plain, STARTTLS + AUTH, implicit TLS, BDAT and DATA), and an
aiosmtpd server that checks XOAUTH2 / OAUTHBEARER tokens from the loopback
token endpoint (refresh after a refused token, a clear deferral, no loop)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope

from goniec.delivery.destination import OAuth2Login, PasswordLogin, Route, TlsMode
from goniec.delivery.dns import MxResolver
from goniec.delivery.oauth import ClientCredentialsTokens
from goniec.delivery.pool import ConnectionPool
from goniec.delivery.smtp_client import ClientPolicy, deliver, mx_destination
from goniec.queue.fs import FsQueueStore
from goniec.testing.process import ServerProcess, free_port

from .dnsserver import ZoneServer
from .helpers import DEFERRED, DELIVERED, POLICY, destination, message, server_context
from .tokenserver import CLIENT_ID, CLIENT_SECRET, SCOPE, TokenServer

MX = "mx.goniec.test"  # the name in the live server's certificate


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stored(server: ServerProcess) -> dict[str, bytes]:
    store = FsQueueStore(server.data_dir / "spool")
    try:
        out = {}
        for qid in server.spool_ids():
            with store.open_message(qid) as fh:
                out[qid] = fh.read()
        return out
    finally:
        store.close()


def new_messages(server: ServerProcess, before: dict[str, bytes]) -> list[bytes]:
    return [v for k, v in stored(server).items() if k not in before]


# --- the real goniec server ------------------------------------------------------------

def test_mx_lookup_then_delivery_to_goniec(live_server: ServerProcess, dns_server: ZoneServer,
                                           zone: dict[str, Any]) -> None:
    # MX -> a name with AAAA ::1 (nothing listens there: refused) and A 127.0.0.1.
    zone["goniec.test"] = {"MX": [(10, "mx.goniec.test")]}
    zone["mx.goniec.test"] = {"AAAA": ["::1"], "A": ["127.0.0.1"]}
    policy = ClientPolicy("client.goniec.test", port=live_server.ports["plain"],
                          timeouts=POLICY.timeouts)
    resolver = MxResolver(["127.0.0.1"], port=dns_server.port, timeout=2)
    before = stored(live_server)
    body = b"Subject: via MX\n\n.dot line\nbare LF body\n"

    async def main() -> list[Any]:
        pool = ConnectionPool()
        dest = await mx_destination("goniec.test", resolver, policy)
        assert [t.address for t in dest.targets] == ["::1", "127.0.0.1"]
        results = []
        for chunking in (True, False):
            p = ClientPolicy("client.goniec.test", port=policy.port, timeouts=policy.timeouts,
                             chunking=chunking)
            results += await deliver(message("bob@goniec.test", "carol@goniec.test", body=body),
                                     dest, pool=pool, policy=p)
        await pool.close()
        return results

    results = run(main())
    assert [r.status for r in results] == [DELIVERED] * 4
    assert results[0].remote_host == "mx.goniec.test[127.0.0.1]"
    assert results[0].reply.text.startswith("Ok: queued")
    got = new_messages(live_server, before)
    assert len(got) == 2
    for data in got:
        assert data.endswith(b"Subject: via MX\r\n\r\n.dot line\r\nbare LF body\r\n")
        assert b"client.goniec.test" in data  # our HELO name in its Received: header


def test_starttls_required_and_auth_to_goniec(live_server: ServerProcess, ca_file: str) -> None:
    before = stored(live_server)

    async def main() -> list[Any]:
        pool = ConnectionPool()
        route = Route(tls=TlsMode.REQUIRED, ca_file=ca_file,
                      login=PasswordLogin("alice", "correct horse"))
        # Not a local domain: the server relays only for the authenticated alice.
        out = await deliver(message("carol@elsewhere.test"),
                            destination(live_server.ports["submission"], route=route,
                                            tls_name=MX),
                            pool=pool, policy=POLICY)
        implicit = Route(tls=TlsMode.IMPLICIT, ca_file=ca_file,
                         login=PasswordLogin("alice", "correct horse", ("LOGIN",)))
        out += await deliver(message("dave@elsewhere.test"),
                             destination(live_server.ports["smtps"], route=implicit,
                                             tls_name=MX),
                             pool=pool, policy=POLICY)
        wrong = Route(tls=TlsMode.REQUIRED, ca_file=ca_file,
                      login=PasswordLogin("alice", "wrong"))
        out += await deliver(message("erin@elsewhere.test"),
                             destination(live_server.ports["submission"], route=wrong,
                                             tls_name=MX),
                             pool=pool, policy=POLICY)
        await pool.close()
        return out

    ok, ok_implicit, refused = run(main())
    assert ok.status is DELIVERED and ok_implicit.status is DELIVERED
    assert refused.status is DEFERRED and refused.status_code == "4.7.8"
    assert "535" in refused.reply.text
    got = new_messages(live_server, before)
    assert len(got) == 2 and all(b"ESMTPSA" in data for data in got)


# --- OAuth2 against aiosmtpd --------------------------------------------------------------

class OAuthHandler:
    """Accepts XOAUTH2 / OAUTHBEARER tokens the token endpoint issued and did not revoke."""

    def __init__(self, endpoint: TokenServer, user: str) -> None:
        self.endpoint = endpoint
        self.user = user
        self.attempts: list[tuple[str, str]] = []
        self.messages: list[Envelope] = []
        self.refuse_all = False

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        raw = base64.b64decode(args[1]).decode()
        fields = dict(p.split("=", 1) for p in raw.split("\x01") if p)
        return await self._check(server, "XOAUTH2", fields["user"], fields["auth"])

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        raw = base64.b64decode(args[1]).decode()
        gs2, _, rest = raw.partition("\x01")
        fields = dict(p.split("=", 1) for p in rest.split("\x01") if p)
        user = gs2.split(",")[1].removeprefix("a=")
        return await self._check(server, "OAUTHBEARER", user, fields["auth"])

    async def _check(self, server: SMTP, mech: str, user: str, auth: str) -> AuthResult:
        token = auth.removeprefix("Bearer ")
        self.attempts.append((mech, token))
        if user == self.user and self.endpoint.valid(token) and not self.refuse_all:
            return AuthResult(success=True, auth_data=user)
        # Google / RFC 7628 3.2.2: a 334 with the error as base64 JSON, then 5xx.
        error = {"status": "invalid_token" if mech == "OAUTHBEARER" else "401",
                 "schemes": "bearer", "scope": SCOPE}
        await server.challenge_auth(json.dumps(error, separators=(",", ":")))
        return AuthResult(success=False, handled=False)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Any, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 OK accepted"


@pytest.fixture
def endpoint() -> Iterator[TokenServer]:
    server = TokenServer().start()
    yield server
    server.stop()


@pytest.fixture
def oauth_smtp(endpoint: TokenServer, ca: trustme.CA) -> Iterator[tuple[OAuthHandler, int]]:
    handler = OAuthHandler(endpoint, "bot@src.test")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            tls_context=server_context(ca), require_starttls=True,
                            auth_require_tls=True, auth_exclude_mechanism=["LOGIN", "PLAIN"])
    controller.start()
    yield handler, port
    controller.stop()


def oauth_route(endpoint: TokenServer, ca_file: str, mechanisms: tuple[str, ...],
                secret: str = CLIENT_SECRET) -> tuple[Route, ClientCredentialsTokens]:
    tokens = ClientCredentialsTokens(endpoint.url, CLIENT_ID, secret, SCOPE, trust_env=False)
    login = OAuth2Login("bot@src.test", tokens, mechanisms)
    return Route(tls=TlsMode.REQUIRED, ca_file=ca_file, login=login), tokens


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_oauth2_token_refreshed_after_refusal(endpoint: TokenServer, ca_file: str,
                                              oauth_smtp: tuple[OAuthHandler, int],
                                              mech: str) -> None:
    handler, port = oauth_smtp
    route, tokens = oauth_route(endpoint, ca_file, (mech,))

    async def main() -> list[Any]:
        pool = ConnectionPool(max_messages_per_connection=1)  # one AUTH per message
        dest = destination(port, route=route)
        out = await deliver(message(), dest, pool=pool, policy=POLICY)
        endpoint.revoked.add("tok-1")  # the server stops accepting the cached token
        out += await deliver(message(), dest, pool=pool, policy=POLICY)
        await pool.close()
        await tokens.aclose()
        return out

    first, second = run(main())
    assert first.status is DELIVERED and second.status is DELIVERED
    assert handler.attempts == [(mech, "tok-1"), (mech, "tok-1"), (mech, "tok-2")]
    assert tokens.fetches == 2 and len(handler.messages) == 2


def test_oauth2_refused_token_is_a_clear_deferral(endpoint: TokenServer, ca_file: str,
                                                  oauth_smtp: tuple[OAuthHandler, int]) -> None:
    handler, port = oauth_smtp
    handler.refuse_all = True
    route, tokens = oauth_route(endpoint, ca_file, ("XOAUTH2", "OAUTHBEARER"))

    async def main() -> Any:
        pool = ConnectionPool()
        [res] = await deliver(message(), destination(port, port, route=route), pool=pool,
                              policy=POLICY)
        await pool.close()
        await tokens.aclose()
        return res

    res = run(main())
    assert res.status is DEFERRED and res.status_code == "4.7.8"
    assert "535" in res.reply.text and '"status":"401"' in res.reply.text
    # One retry with a fresh token, and no other target with the same credentials.
    assert [t for _, t in handler.attempts] == ["tok-1", "tok-2"]
    assert tokens.fetches == 2 and not handler.messages


def test_oauth2_token_endpoint_refusal_is_a_clear_deferral(
        endpoint: TokenServer, ca_file: str, oauth_smtp: tuple[OAuthHandler, int]) -> None:
    handler, port = oauth_smtp
    route, tokens = oauth_route(endpoint, ca_file, ("XOAUTH2",), secret="wrong")

    async def main() -> Any:
        pool = ConnectionPool()
        [res] = await deliver(message(), destination(port, route=route), pool=pool,
                              policy=POLICY)
        await pool.close()
        await tokens.aclose()
        return res

    res = run(main())
    assert res.status is DEFERRED and res.status_code == "4.7.0"
    assert "HTTP 400 invalid_client" in res.reply.text
    assert not handler.attempts

