"""deliver() against scripted servers on loopback: results per recipient, target
order, failures, timeouts, TLS modes, AUTH, masquerade and the message body."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import pytest
import trustme

from goniec import replies as r
from goniec.delivery.destination import PasswordLogin, Route, TlsMode
from goniec.delivery.pool import ConnectionPool
from goniec.delivery.smtp_client import ClientPolicy, OutboundMessage, deliver, masquerade
from goniec.errors import Reply
from goniec.model import Envelope, Recipient
from goniec.protocol import AuthCredentials, Connected, DataEnd, Helo, MailFrom, RcptTo
from goniec.testing.process import free_port

from .conftest import ipv6_loopback
from .coreserver import DROP, STALL, CoreServer
from .helpers import (
    DEFERRED,
    DELIVERED,
    FAILED,
    POLICY,
    destination,
    message,
    server_context,
    statuses,
    with_route,
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def send(msg: OutboundMessage, dest: Any, *, policy: ClientPolicy = POLICY,
               pool: ConnectionPool | None = None) -> list[Any]:
    own = pool is None
    pool = pool or ConnectionPool()
    try:
        return await deliver(msg, dest, pool=pool, policy=policy)
    finally:
        if own:
            await pool.close()


def test_delivered_with_the_servers_reply() -> None:
    async def main() -> None:
        async with CoreServer() as server:
            results = await send(message("bob@dest.test", "carol@dest.test"),
                                 destination(server.port))
            assert statuses(results) == [DELIVERED, DELIVERED]
            first = results[0]
            assert first.reply == r.R250_QUEUED and first.remote
            assert first.remote_host == "mx.core.test[127.0.0.1]" and not first.dsn_relayed
            [got] = server.messages
            assert got.sender == "alice@src.test"
            assert [x.address for x in got.recipients] == ["bob@dest.test", "carol@dest.test"]
            assert got.body == b"Subject: test\r\n\r\nHello from Goniec.\r\n"

    run(main())


def test_each_recipient_gets_its_own_verdict() -> None:
    def rcpt(event: RcptTo) -> Reply:
        local = event.recipient.address.split("@")[0]
        return {"gone": r.R550_UNKNOWN_USER, "full": Reply(452, "4.2.2", "Mailbox full")}.get(
            local, r.R250_RECIPIENT_OK)

    async def main() -> None:
        async with CoreServer(answers={RcptTo: rcpt}) as server:
            results = await send(message("ok@dest.test", "gone@dest.test", "full@dest.test"),
                                 destination(server.port))
            assert statuses(results) == [DELIVERED, FAILED, DEFERRED]
            assert results[1].status_code == "5.1.1" and results[1].remote
            assert results[1].describe() == (
                "host mx.core.test[127.0.0.1] said: 550 5.1.1 User unknown")
            assert results[2].reply.text == "Mailbox full"
            assert [x.address for x in server.messages[0].recipients] == ["ok@dest.test"]

    run(main())


def test_next_target_after_connect_failure_and_refused_greetings() -> None:
    closed_port = free_port()

    async def main() -> None:
        async with CoreServer(answers={Connected: Reply(554, "5.3.2", "not now")}) as no, \
                CoreServer(answers={Connected: r.with_hostname(r.R421_SHUTTING_DOWN, "x")}) \
                as busy, CoreServer() as good:
            results = await send(message(), destination(closed_port, no.port, busy.port,
                                                         good.port))
            assert statuses(results) == [DELIVERED]
            assert (no.connections, busy.connections, good.connections) == (1, 1, 1)
            assert len(good.messages) == 1

    run(main())


def test_all_targets_failing_defers_with_the_last_reason() -> None:
    async def main() -> None:
        async with CoreServer(answers={Connected: Reply(554, "5.7.1", "go away")}) as no:
            results = await send(message(), destination(free_port(), no.port))
            [res] = results
            # A 5xx greeting is the server's problem or ours: defer, do not bounce.
            assert res.status is DEFERRED and res.reply.code == 454
            assert "refused to talk to me: 554 5.7.1 go away" in res.reply.text
            [res] = await send(message(), destination(free_port()))
            assert res.status is DEFERRED and res.status_code == "4.4.1"
            assert "Connection refused" in res.reply.text and not res.remote

    run(main())


def test_4xx_recipients_are_tried_on_the_next_mx() -> None:
    async def main() -> None:
        async with CoreServer(answers={RcptTo: Reply(451, "4.7.1", "greylisted")}) as primary, \
                CoreServer() as backup:
            results = await send(message("a@dest.test", "b@dest.test"),
                                 destination(primary.port, backup.port))
            assert statuses(results) == [DELIVERED, DELIVERED]
            assert not primary.messages and len(backup.messages) == 1
            # With no backup, the 4xx stands: deferred with the server's words.
            [res] = await send(message(), destination(primary.port))
            assert res.status is DEFERRED and res.reply.text == "greylisted" and res.remote

    run(main())


def test_5xx_at_mail_fails_everyone_without_trying_elsewhere() -> None:
    async def main() -> None:
        async with CoreServer(answers={MailFrom: r.R553_SENDER_NOT_OWNED}) as primary, \
                CoreServer() as backup:
            results = await send(message("a@dest.test", "b@dest.test"),
                                 destination(primary.port, backup.port))
            assert statuses(results) == [FAILED, FAILED]
            assert backup.connections == 0

    run(main())


def test_dropped_connection_before_and_after_the_end_of_data() -> None:
    async def main() -> None:
        async with CoreServer(answers={MailFrom: DROP}) as dropper, CoreServer() as backup:
            results = await send(message(), destination(dropper.port, backup.port))
            assert statuses(results) == [DELIVERED] and len(backup.messages) == 1
        async with CoreServer(answers={DataEnd: DROP}) as lost, CoreServer() as backup:
            [res] = await send(message(), destination(lost.port, backup.port))
            # After the end of data the message may already be delivered: defer,
            # and do not send it to another host in the same attempt.
            assert res.status is DEFERRED and res.status_code == "4.4.2"
            assert "may be delivered twice" in res.reply.text
            assert "waiting for the reply to the end of data" in res.reply.text
            assert backup.connections == 0

    run(main())


def test_stalled_servers_time_out() -> None:
    timeouts = POLICY.timeouts
    policy = ClientPolicy("client.goniec.test", timeouts=type(timeouts)(
        **{**vars(timeouts), "greeting": 0.3, "data_done": 0.3, "rcpt": 0.3}))

    async def main() -> None:
        async with CoreServer(answers={Connected: STALL}) as mute, \
                CoreServer(answers={DataEnd: STALL}) as slow:
            started = time.monotonic()
            [res] = await send(message(), destination(mute.port), policy=policy)
            assert res.status is DEFERRED and "timeout after 0.3s" in res.reply.text
            assert "waiting for the greeting" in res.reply.text
            [res] = await send(message(), destination(slow.port), policy=policy)
            assert res.status is DEFERRED and "may be delivered twice" in res.reply.text
            assert time.monotonic() - started < 3

    run(main())


def test_smtputf8_missing_is_a_permanent_failure() -> None:
    async def main() -> None:
        async with CoreServer(options={"smtputf8": False}) as server:
            results = await send(message("j\u00f6rg@dest.test", "bob@dest.test"),
                                 destination(server.port))
            assert statuses(results) == [FAILED, FAILED]
            assert results[0].status_code == "5.6.7" and not results[0].remote
            assert not server.messages

    run(main())


def test_dsn_relayed_when_the_server_lacks_dsn() -> None:
    notify = Recipient("bob@dest.test", frozenset({"SUCCESS"}))

    async def main() -> None:
        async with CoreServer(options={"dsn": False}) as plain, CoreServer() as dsn:
            [res] = await send(message(notify, ret="HDRS"), destination(plain.port))
            assert res.dsn_relayed and res.wants_relayed_dsn
            assert plain.messages[0].recipients[0].notify is None
            [res] = await send(message(notify, ret="HDRS"), destination(dsn.port))
            assert not res.dsn_relayed and not res.wants_relayed_dsn
            assert dsn.messages[0].recipients[0].notify == {"SUCCESS"}
            assert dsn.messages[0].mail_params.ret == "HDRS"

    run(main())


def test_masquerade_rewrites_mail_from_only() -> None:
    assert masquerade("alice@src.test", "corp.test") == "alice@corp.test"
    assert masquerade("", "corp.test") == ""
    assert masquerade("Postmaster", "corp.test") == "Postmaster"
    assert masquerade("a@other.test", "corp.test", frozenset({"SRC.test"})) == "a@other.test"
    assert masquerade("a@src.test", "corp.test", frozenset({"SRC.test"})) == "a@corp.test"
    assert masquerade("a@src.test", None) == "a@src.test"
    policy = ClientPolicy("client.goniec.test", timeouts=POLICY.timeouts,
                          masquerade_domain="corp.test")

    async def main() -> None:
        async with CoreServer() as server:
            await send(message(body=b"From: alice@src.test\r\n\r\nx\r\n"),
                       destination(server.port), policy=policy)
            got = server.messages[0]
            assert got.sender == "alice@corp.test"
            assert got.body.startswith(b"From: alice@src.test")  # headers untouched

    run(main())


def test_body_with_bare_lf_and_leading_dots_arrives_canonical() -> None:
    body = b"Subject: dots\n\n.leading dot\n..two\nlast line without newline"

    async def main() -> None:
        for options in ({"chunking": False}, {"chunking": True}):
            async with CoreServer(options=options) as server:
                [res] = await send(message(body=body), destination(server.port))
                assert res.status is DELIVERED
                assert server.messages[0].body == (
                    b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nlast line without newline\r\n")

    run(main())


def test_unreadable_body_never_ends_the_data() -> None:
    class Broken(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise OSError(5, "Input/output error")
            return super().read(10)

    msg = OutboundMessage(Envelope("a@src.test", (Recipient("b@dest.test"),)),
                          lambda: Broken(b"0123456789" * 100), 1000)

    async def main() -> None:
        async with CoreServer() as server:
            [res] = await send(msg, destination(server.port))
            assert res.status is DEFERRED and "cannot read the message" in res.reply.text
            assert not server.messages

    run(main())


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_target() -> None:
    async def main() -> None:
        async with CoreServer(host="::1") as server:
            [res] = await send(message(), destination(server.port, host="::1"))
            assert res.status is DELIVERED and res.remote_host == "mx.core.test[::1]"

    run(main())


# --- TLS ------------------------------------------------------------------------------

def test_opportunistic_starttls_encrypts_without_checking(ca: trustme.CA) -> None:
    other = trustme.CA()  # a certificate nobody trusts: fine for opportunistic TLS

    async def main() -> None:
        async with CoreServer(tls_context=server_context(other)) as server:
            dest = destination(server.port, route=Route(tls=TlsMode.OPPORTUNISTIC))
            [res] = await send(message(), dest)
            assert res.status is DELIVERED and server.messages[0].tls
        async with CoreServer() as no_tls:  # STARTTLS not offered: plaintext
            [res] = await send(message(), destination(no_tls.port, route=Route()))
            assert res.status is DELIVERED and not no_tls.messages[0].tls

    run(main())


def test_required_tls_checks_the_certificate(ca: trustme.CA, ca_file: str,
                                             other_ca_file: str) -> None:
    async def main() -> None:
        async with CoreServer(tls_context=server_context(ca)) as server:
            good = Route(tls=TlsMode.REQUIRED, ca_file=ca_file)
            [res] = await send(message(), destination(server.port, route=good))
            assert res.status is DELIVERED and server.messages[0].tls
            wrong = Route(tls=TlsMode.REQUIRED, ca_file=other_ca_file)
            [res] = await send(message(), destination(server.port, route=wrong))
            assert res.status is DEFERRED and res.status_code == "4.7.5"
            assert "certificate verify failed" in res.reply.text or \
                "certificate verification failed" in res.reply.text
            unchecked = Route(tls=TlsMode.REQUIRED, verify=False)
            [res] = await send(message(), destination(server.port, route=unchecked))
            assert res.status is DELIVERED
            assert len(server.messages) == 2
        async with CoreServer() as plain:
            [res] = await send(message(), destination(plain.port, route=good))
            assert res.status is DEFERRED and res.status_code == "4.7.4"
            assert not plain.messages

    run(main())


def test_opportunistic_handshake_failure_retries_in_plaintext(ca: trustme.CA) -> None:
    import ssl
    broken = server_context(ca)
    broken.minimum_version = ssl.TLSVersion.TLSv1_3
    policy = ClientPolicy("client.goniec.test", timeouts=POLICY.timeouts,
                          tls_min_version="1.2")

    async def main() -> None:
        # The client caps at TLS 1.2 here, the server wants 1.3: the handshake fails.
        import goniec.delivery.tls as tls_mod
        real = tls_mod.client_context

        def capped(**kwargs: Any) -> ssl.SSLContext:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            return ctx

        import goniec.delivery.session as session_mod
        session_mod.client_context = capped
        try:
            async with CoreServer(tls_context=broken) as server:
                [res] = await send(message(), destination(server.port, route=Route()),
                                   policy=policy)
                assert res.status is DELIVERED and not server.messages[0].tls
                assert server.connections == 2
                required = Route(tls=TlsMode.REQUIRED, verify=False)
                [res] = await send(message(), destination(server.port, route=required),
                                   policy=policy)
                assert res.status is DEFERRED and res.status_code == "4.7.5"
        finally:
            session_mod.client_context = real

    run(main())


def test_implicit_tls(ca: trustme.CA, ca_file: str) -> None:
    async def main() -> None:
        async with CoreServer(tls_context=server_context(ca), implicit_tls=True) as server:
            route = Route(tls=TlsMode.IMPLICIT, ca_file=ca_file)
            [res] = await send(message(), destination(server.port, route=route))
            assert res.status is DELIVERED and server.messages[0].tls

    run(main())


# --- AUTH -------------------------------------------------------------------------------

def test_password_login_over_tls(ca: trustme.CA, ca_file: str) -> None:
    def check(event: AuthCredentials) -> Reply:
        ok = (event.username, event.password) == ("relay-user", "pw")
        return r.R235_AUTH_OK if ok else r.R535_AUTH_FAILED

    async def main() -> None:
        async with CoreServer(tls_context=server_context(ca),
                              answers={AuthCredentials: check}) as server:
            base = destination(server.port, route=Route(tls=TlsMode.REQUIRED, ca_file=ca_file))
            for mechs in (("PLAIN",), ("LOGIN",)):
                login = PasswordLogin("relay-user", "pw", mechs)
                [res] = await send(message(), with_route(base, login=login))
                assert res.status is DELIVERED
                assert server.messages[-1].user == "relay-user"
            assert [a[0] for a in server.auth_attempts] == ["PLAIN", "LOGIN"]
            # A wrong password: deferred once, no retry, no other target.
            [res] = await send(message(), with_route(base, login=PasswordLogin("relay-user",
                                                                              "bad")))
            assert res.status is DEFERRED and res.status_code == "4.7.8"
            assert "535 5.7.8" in res.reply.text and len(server.auth_attempts) == 3

    run(main())


def test_no_credentials_in_plaintext() -> None:
    async def main() -> None:
        async with CoreServer(options={"auth_requires_tls": False}) as server:
            dest = destination(server.port, route=Route(tls=TlsMode.NONE,
                                                        login=PasswordLogin("u", "p")))
            [res] = await send(message(), dest)
            assert res.status is DEFERRED and "without TLS" in res.reply.text
            assert not server.auth_attempts
            [res] = await send(message(), with_route(dest, allow_plaintext_auth=True))
            assert res.status is DELIVERED and server.auth_attempts == [("PLAIN", "u", "p")]

    run(main())


def test_helo_only_route_and_ehlo_fallback() -> None:
    seen: list[bool] = []

    def helo(event: Helo) -> Reply:
        seen.append(event.extended)
        return r.R502_NOT_IMPLEMENTED if event.extended else Reply(250, None, "mx")

    async def main() -> None:
        async with CoreServer(answers={Helo: helo}) as server:
            [res] = await send(message(), destination(server.port))
            assert res.status is DELIVERED and seen == [True, False]
            seen.clear()
            [res] = await send(message(), destination(server.port, route=Route(
                tls=TlsMode.NONE, esmtp=False)))
            assert res.status is DELIVERED and seen == [False]

    run(main())


def test_no_usable_mechanism_and_refused_ehlo() -> None:
    def helo(event: Helo) -> Reply:
        return Reply(421, "4.3.2", "mx.core.test busy")

    async def main() -> None:
        async with CoreServer(options={"auth_requires_tls": False}) as server, \
                CoreServer(answers={Helo: helo}) as busy:
            route = Route(tls=TlsMode.NONE, allow_plaintext_auth=True,
                          login=PasswordLogin("u", "p", ("CRAM-MD5",)))
            [res] = await send(message(), destination(server.port, route=route))
            assert res.status is DEFERRED and res.status_code == "4.7.0"
            assert "no usable AUTH mechanism (server offers: LOGIN PLAIN)" in res.reply.text
            # A 4xx to EHLO: the next target.
            [res] = await send(message(), destination(busy.port, server.port))
            assert res.status is DELIVERED and busy.connections == 1

    run(main())


def test_plaintext_injected_after_the_starttls_220_is_refused() -> None:
    # RFC 3207 4.2: whatever follows the 220 in plaintext must never be read
    # as if it came through TLS. Here it is more than one read can take.
    async def raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.core.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-mx.core.test\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n" + b"250 injected\r\n" * 20000)
        await writer.drain()
        await reader.read()  # until the client gives up
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(raw, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            route = Route(tls=TlsMode.REQUIRED, verify=False)
            [res] = await send(message(), destination(port, route=route))
            assert res.status is DEFERRED and res.status_code == "4.7.5"
            assert "plaintext data after the 220 to STARTTLS" in res.reply.text
        finally:
            server.close()

    run(main())
