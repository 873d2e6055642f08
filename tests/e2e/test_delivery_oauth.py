"""Smart host with OAuth2 end to end: the real `goniec serve` gets an access token from a
token endpoint and logs in to its smart host with AUTH XOAUTH2 over verified STARTTLS.

"A" is a goniec with delivery on (see `mailpeers.sender_server`) whose `[delivery]`
names a smart host `[smtp.oauth.test]:<port>` (brackets: no MX lookup; the A record
comes from the loopback DNS server) and the OAuth2 client-credentials settings
(`smart_host_oauth_*`). The token endpoint is `delivery.tokenserver.TokenServer`
(http:// on 127.0.0.1, which the config allows on loopback only). The smart host is
an aiosmtpd server in its own thread: STARTTLS required, with a certificate for
smtp.oauth.test from the test CA (trusted by A through `ca_file`), AUTH only after
TLS, only XOAUTH2 / OAUTHBEARER, accepting only tokens the endpoint issued.
Every wait is bounded; no name or address outside loopback is used.
"""

from __future__ import annotations

import base64
import json
import smtplib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from goniec.queue.api import RecipientStatus
from goniec.testing.dnsserver import ZoneServer
from goniec.testing.process import ServerProcess, free_port

from delivery.helpers import server_context  # isort: skip
from delivery.tokenserver import CLIENT_ID, CLIENT_SECRET, SCOPE, TokenServer  # isort: skip
from mailpeers import logs_of, maildir, sender_server, split_trace, spool, wait_until  # isort: skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SMART_HOST = "smtp.oauth.test"  # the name in the smart host's certificate, and its A record
LOGIN = "bot@sender.test"  # smart_host_username: the mailbox the token is for
ORIGINAL = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: User <user@dest.test>\r\n"
    b"Subject: through the OAuth2 smart host\r\n"
    b"Message-ID: <oauth-1@sender.test>\r\n"
    b"\r\n"
    b"Hello through the smart host.\r\n"
)


def send(port: int, rcpt: str = "user@dest.test", body: bytes = ORIGINAL) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.sender.test")
        assert not client.sendmail("alice@sender.test", [rcpt], body)


# --- the smart host: aiosmtpd checking OAuth2 tokens --------------------------------------

@dataclass(frozen=True)
class AuthAttempt:
    mechanism: str
    user: str
    token: str
    tls: str | None  # the TLS version the AUTH came over (None: plaintext)
    at: float


@dataclass(frozen=True)
class Accepted:
    sender: str
    rcpts: tuple[str, ...]
    data: bytes
    login: Any  # what the successful AUTH returned as auth_data: (user, token)


class OAuthSmartHost:
    """aiosmtpd on 127.0.0.1: accepts the tokens `endpoint` issued (for LOGIN), or none
    (`refuse_all`); a refusal is the RFC 7628 / Google form (334 + base64 JSON, then 535)."""

    def __init__(self, endpoint: TokenServer, ca: trustme.CA) -> None:
        self.endpoint = endpoint
        self.refuse_all = False
        self.lock = threading.Lock()
        self.attempts: list[AuthAttempt] = []
        self.accepted: list[Accepted] = []
        self.port = free_port()
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, server_hostname=SMART_HOST,
            tls_context=server_context(ca, SMART_HOST), require_starttls=True,
            auth_require_tls=True, auth_exclude_mechanism=["LOGIN", "PLAIN"],
            decode_data=False, ready_timeout=10)

    def __enter__(self) -> OAuthSmartHost:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        raw = base64.b64decode(args[1]).decode()  # user=U ^A auth=Bearer T ^A ^A
        fields = dict(p.split("=", 1) for p in raw.split("\x01") if p)
        return await self._check(server, "XOAUTH2", fields["user"], fields["auth"])

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        raw = base64.b64decode(args[1]).decode()  # n,a=U, ^A host=.. ^A auth=Bearer T ^A ^A
        gs2, _, rest = raw.partition("\x01")
        fields = dict(p.split("=", 1) for p in rest.split("\x01") if p)
        return await self._check(server, "OAUTHBEARER", gs2.split(",")[1].removeprefix("a="),
                                 fields["auth"])

    async def _check(self, server: SMTP, mech: str, user: str, auth: str) -> AuthResult:
        token = auth.removeprefix("Bearer ")
        assert server.session is not None
        tls = server.session.ssl
        version = tls["ssl_object"].version() if tls else None
        with self.lock:
            self.attempts.append(AuthAttempt(mech, user, token, version, time.monotonic()))
        if user == LOGIN and self.endpoint.valid(token) and not self.refuse_all:
            return AuthResult(success=True, auth_data=(user, token))
        error = {"status": "401", "schemes": "bearer", "scope": SCOPE}
        await server.challenge_auth(json.dumps(error, separators=(",", ":")))
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope) -> str:
        got = Accepted(str(envelope.mail_from), tuple(envelope.rcpt_tos),
                       bytes(envelope.original_content or b""), session.auth_data)
        with self.lock:
            self.accepted.append(got)
        return "250 2.0.0 OK accepted"

    def tokens_used(self) -> list[str]:
        with self.lock:
            return [a.token for a in self.attempts]

    def received(self) -> list[Accepted]:
        with self.lock:
            return list(self.accepted)


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A's token client honours proxy variables (trust_env): keep its request on loopback.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def endpoint() -> Iterator[TokenServer]:
    server = TokenServer().start()
    yield server
    server.stop()


@pytest.fixture
def smart_host(endpoint: TokenServer, ca: trustme.CA,
               zone: dict[str, Any]) -> Iterator[OAuthSmartHost]:
    zone[SMART_HOST] = {"A": ["127.0.0.1"]}
    with OAuthSmartHost(endpoint, ca) as host:
        yield host


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def oauth_sender(tmp_path: Path, dns: ZoneServer, endpoint: TokenServer,
                 host: OAuthSmartHost, ca_pem: str, **delivery: Any) -> ServerProcess:
    """goniec A, started, with every mail for outside going to the OAuth2 smart host."""
    workdir = tmp_path / "a"
    workdir.mkdir()
    secret = workdir / "oauth-client.secret"
    secret.write_text(CLIENT_SECRET + "\n")
    server = sender_server(
        workdir, dns, free_port(),  # delivery.port: nobody listens; the smart host names its own
        smart_host=f"[{SMART_HOST}]:{host.port}", smart_host_tls="verify",
        smart_host_username=LOGIN, smart_host_oauth_token_url=endpoint.url,
        smart_host_oauth_client_id=CLIENT_ID, smart_host_oauth_client_secret_file=str(secret),
        smart_host_oauth_scope=SCOPE, ca_file=ca_pem, **delivery)
    return server.start()


TOKEN_REQUEST = {"grant_type": "client_credentials", "scope": SCOPE,
                 "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


# --- the cases ------------------------------------------------------------------------------

def test_delivered_through_the_smart_host_with_xoauth2(
        tmp_path: Path, dns: ZoneServer, endpoint: TokenServer, smart_host: OAuthSmartHost,
        ca_pem: str) -> None:
    a = oauth_sender(tmp_path, dns, endpoint, smart_host, ca_pem)
    try:
        send(a.port)
        wait_until(lambda: len(smart_host.received()) == 1 and not a.spool_ids(),
                   "delivery through the OAuth2 smart host", timeout=10, logs=logs_of(a))
    finally:
        a.stop()
    # The token endpoint saw the client-credentials grant with the configured id,
    # secret (read from the file, newline stripped) and scope, once.
    assert endpoint.requests == [TOKEN_REQUEST]
    assert endpoint.client_auth == ["post"]
    assert endpoint.issued == ["tok-1"]
    # One AUTH, with that token, for smart_host_username, after STARTTLS.
    [attempt] = smart_host.attempts
    assert (attempt.mechanism, attempt.user, attempt.token) == ("XOAUTH2", LOGIN, "tok-1")
    assert attempt.tls is not None and attempt.tls.startswith("TLSv1."), attempt
    [got] = smart_host.received()
    assert got.login == (LOGIN, "tok-1")
    assert (got.sender, got.rcpts) == ("alice@sender.test", ("user@dest.test",))
    trace, rest = split_trace(got.data)
    assert rest == ORIGINAL
    assert len(trace) == 1 and b"by mx-a.sender.test (Goniec)" in trace[0], trace
    # The smart host's address came from its A record (brackets: no MX lookup).
    assert (SMART_HOST, "A") in dns.queries
    assert not [q for q in dns.queries if q[1] == "MX"]
    log = a.log()
    assert f"relay={SMART_HOST}[127.0.0.1]" in log and "status=delivered" in log, log
    assert CLIENT_SECRET not in log and "tok-1" not in log  # no secret in the log
    assert not maildir(a, "sender.test", "alice")  # no report


def test_expired_token_is_fetched_again(tmp_path: Path, dns: ZoneServer, endpoint: TokenServer,
                                        smart_host: OAuthSmartHost, ca_pem: str) -> None:
    # A refreshes a token 60 s before it expires, but never more than half its
    # lifetime early, so expires_in = 6 leaves it usable for 3 s. One connection per
    # message: each one logs in again and asks A's token cache.
    endpoint.expires_in = 6
    usable = 3.0
    a = oauth_sender(tmp_path, dns, endpoint, smart_host, ca_pem, messages_per_connection=1)
    try:
        def delivered(n: int) -> None:
            wait_until(lambda: len(smart_host.received()) == n and not a.spool_ids(),
                       f"message {n} through the smart host", timeout=10, logs=logs_of(a))

        sent_first = time.monotonic()  # A asks for the token after this
        send(a.port, "one@dest.test")
        delivered(1)
        send(a.port, "two@dest.test")  # well within the 3 s: the cached token
        delivered(2)
        second_auth = smart_host.attempts[1].at
        assert second_auth - sent_first < usable, "too slow to test the cache"
        first_done = time.monotonic()  # A asked for the token before this
        time.sleep(max(0.0, first_done + usable + 0.1 - time.monotonic()))
        send(a.port, "three@dest.test")  # the token is past A's refresh point now
        delivered(3)
    finally:
        a.stop()
    assert smart_host.tokens_used() == ["tok-1", "tok-1", "tok-2"]
    assert endpoint.requests == [TOKEN_REQUEST, TOKEN_REQUEST]  # hit exactly twice
    assert [g.rcpts for g in smart_host.received()] == [
        ("one@dest.test",), ("two@dest.test",), ("three@dest.test",)]
    assert [g.login[1] for g in smart_host.received()] == ["tok-1", "tok-1", "tok-2"]
    assert "oauth_retry" not in a.log()  # refreshed ahead of time, never refused


def test_refused_token_is_deferred_with_the_reason(
        tmp_path: Path, dns: ZoneServer, endpoint: TokenServer, smart_host: OAuthSmartHost,
        ca_pem: str) -> None:
    smart_host.refuse_all = True
    a = oauth_sender(tmp_path, dns, endpoint, smart_host, ca_pem, retry=["1m"])
    try:
        send(a.port)

        def deferred() -> bool:
            states = [s for m in spool(a) for s in m.record.recipients]
            return bool(states) and all(s.status is RecipientStatus.DEFERRED for s in states)
        wait_until(deferred, "a deferral", timeout=10, logs=logs_of(a))
        deferred_at = time.time()
        time.sleep(2.0)  # a retry loop would show here: A scans its spool every 0.1 s
        [queued] = spool(a)
        requests, tokens = len(endpoint.requests), smart_host.tokens_used()
        log = a.log()
    finally:
        a.stop()
    # One fresh token after the refusal (it may have expired early), then give up.
    assert requests == 2 and tokens == ["tok-1", "tok-2"], (requests, tokens, log)
    assert endpoint.requests == [TOKEN_REQUEST, TOKEN_REQUEST]
    assert not smart_host.received()
    [state] = queued.record.recipients
    assert state.status is RecipientStatus.DEFERRED and state.attempts == 1, state
    assert 50 < state.next_attempt - deferred_at <= 61, state  # retry = ["1m"]
    reason = state.last_reply
    assert "4.7.8" in reason and "SASL authentication failed" in reason, reason
    assert f"{SMART_HOST}[127.0.0.1]" in reason and "535" in reason, reason
    assert '"status":"401"' in reason, reason  # the server's base64 JSON error, decoded
    assert "oauth_retry" in log and "status=deferred" in log, log
    assert "SASL authentication failed" in log, log
    assert CLIENT_SECRET not in log and "tok-1" not in log and "tok-2" not in log
    assert not maildir(a, "sender.test", "alice")  # a deferral, not a bounce
