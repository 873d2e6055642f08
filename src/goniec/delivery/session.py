"""One outbound SMTP connection: the asyncio shell around `ClientConnection` (layer 3).

Owns the socket side of a session to one `Target`: connecting (plain or
implicit TLS), the greeting, EHLO/HELO, STARTTLS per the route's `TlsMode`
(a failed opportunistic handshake is retried once on the same host without
TLS), AUTH with a password or an OAuth2 token (a refused token is
invalidated and tried once more, never in a loop), sending transactions with
the body streamed from a file, and QUIT. Every wait has a timeout (RFC 5321
4.5.3.2, `ClientTimeouts`). The protocol rules live in the core; this
module only moves bytes and maps failures to replies.

Raises `SessionError` from `open()` (the reply explains, and says whether
another target may do better); `send()` raises `SMTPError` when the core
refuses the message for this server (SMTPUTF8, SIZE, 8BITMIME), else
returns the core's `TransactionDone` (undecided recipients included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO, TypeVar

from goniec.delivery import outcome
from goniec.delivery.destination import OAuth2Login, Route, Target, TlsMode
from goniec.delivery.oauth import OAuthError
from goniec.delivery.tls import client_context, describe
from goniec.errors import Reply
from goniec.model import Envelope
from goniec.obs.log import log_event
from goniec.protocol.client import (
    NEED_DATA,
    AuthDone,
    ClientConnection,
    ClientEvent,
    ClientOptions,
    Closed,
    Greeting,
    HelloDone,
    SendBody,
    StartTlsDone,
    TransactionDone,
)
from goniec.protocol.client_commands import choose_mechanism

log = logging.getLogger("goniec.delivery")

_E = TypeVar("_E", bound=ClientEvent)

READ_SIZE = 65536
BODY_PIECE = 65536  # octets read from the message file per step


@dataclass(frozen=True)
class ClientTimeouts:
    """Seconds. Defaults: RFC 5321 4.5.3.2 where it gives one, Postfix otherwise."""

    connect: float = 30.0
    greeting: float = 300.0  # 4.5.3.2.1
    helo: float = 300.0
    starttls: float = 300.0  # the reply and the handshake
    auth: float = 120.0
    mail: float = 300.0  # 4.5.3.2.2
    rcpt: float = 300.0  # 4.5.3.2.3
    data_init: float = 120.0  # 4.5.3.2.4
    data_block: float = 180.0  # 4.5.3.2.5: each write of the body
    data_done: float = 600.0  # 4.5.3.2.6: the reply to the end of data
    rset: float = 20.0
    quit: float = 20.0

    def for_reply(self, awaiting: str | None) -> float:
        return {
            "greeting": self.greeting, "EHLO": self.helo, "HELO": self.helo,
            "STARTTLS": self.starttls, "AUTH": self.auth, "RSET": self.rset,
            "MAIL": self.mail, "RCPT": self.rcpt, "DATA": self.data_init,
            "BDAT": self.data_block, "DOT": self.data_done, "QUIT": self.quit,
        }.get(awaiting or "", self.data_block)


@dataclass(frozen=True)
class SessionSettings:
    """What every session shares: the core's options, timeouts and the TLS floor."""

    options: ClientOptions
    timeouts: ClientTimeouts = ClientTimeouts()
    tls_min_version: str = "1.2"


class SessionError(Exception):
    """No session with this target. reply: why (a local reply, 4xx unless the
    cause is certain); next_target: another target of the destination may work."""

    def __init__(self, reply: Reply, *, next_target: bool = True) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.next_target = next_target


class _HandshakeFailed(Exception):
    pass


class SmtpSession:
    """An open, greeted (and, per the route, encrypted and logged-in) connection."""

    def __init__(self, target: Target, conn: ClientConnection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, settings: SessionSettings) -> None:
        self.target = target
        self.conn = conn
        self._reader = reader
        self._writer = writer
        self._timeouts = settings.timeouts
        self.messages = 0  # transactions sent on this connection
        self.tls: str | None = None  # "TLSv1.3 <cipher>" once encrypted

    # --- opening -----------------------------------------------------------------
    @classmethod
    async def open(cls, target: Target, route: Route, settings: SessionSettings
                   ) -> SmtpSession:
        """Connect and get the session ready for MAIL; raises SessionError."""
        plain_retry = False
        while True:
            session = await cls._connect(target, route, settings, tls_ok=not plain_retry)
            try:
                await session._prepare(route, settings, starttls=not plain_retry)
                return session
            except _HandshakeFailed as exc:
                session.abort()
                if route.tls is TlsMode.OPPORTUNISTIC and not plain_retry:
                    # Postfix "may": a failed handshake is retried once in plaintext.
                    log_event(log, "tls_fallback", relay=target.label, error=str(exc))
                    plain_retry = True
                    continue
                raise SessionError(outcome.tls_failed(target.label, str(exc))) from None
            except BaseException:
                session.abort()
                raise

    @classmethod
    async def _connect(cls, target: Target, route: Route, settings: SessionSettings, *,
                       tls_ok: bool) -> SmtpSession:
        implicit = route.tls is TlsMode.IMPLICIT
        ctx = _context(route, settings) if implicit else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.address, target.port, ssl=ctx,
                    server_hostname=target.host if ctx else None,
                    ssl_handshake_timeout=settings.timeouts.starttls if ctx else None,
                    limit=READ_SIZE * 2),
                settings.timeouts.connect)
        except TimeoutError:
            raise SessionError(outcome.connect_failed(target.label, target.port,
                                                      "Connection timed out")) from None
        except ssl.SSLError as exc:
            raise SessionError(outcome.tls_failed(target.label, _ssl_reason(exc))) from None
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            raise SessionError(outcome.connect_failed(target.label, target.port, why)) from None
        options = settings.options if route.esmtp else replace(settings.options, esmtp=False)
        conn = ClientConnection(options, tls_active=implicit)
        session = cls(target, conn, reader, writer, settings)
        if implicit:
            session.tls = describe(writer.get_extra_info("ssl_object"))
        return session

    async def _prepare(self, route: Route, settings: SessionSettings, *, starttls: bool) -> None:
        greeting = await self._expect(Greeting)
        if not 200 <= greeting.reply.code < 300:
            # RFC 5321 3.1 / Postfix smtp_skip_5xx_greeting: try the next host, defer.
            await self.quit()
            raise SessionError(outcome.soften(outcome.remote_said(
                self.target.label, greeting.reply, "the greeting")))
        await self._hello()
        tls = route.tls
        if not self.conn.tls_active and tls in (TlsMode.OPPORTUNISTIC, TlsMode.REQUIRED):
            if self.conn.extensions.starttls and starttls:
                await self._starttls(route, settings)
            elif tls is TlsMode.REQUIRED:
                await self.quit()
                raise SessionError(outcome.tls_not_offered(self.target.label))
        if route.login is not None:
            await self._login(route)

    async def _hello(self) -> None:
        self.conn.hello()
        hello = await self._expect(HelloDone)
        if not hello.reply.is_positive:
            await self.quit()
            raise SessionError(outcome.soften(outcome.remote_said(
                self.target.label, hello.reply, "EHLO" if hello.extended else "HELO")))

    async def _starttls(self, route: Route, settings: SessionSettings) -> None:
        self.conn.starttls()
        answer = await self._expect(StartTlsDone)
        if answer.reply.code != 220:
            if route.tls is TlsMode.REQUIRED:
                await self.quit()
                raise SessionError(outcome.soften(outcome.remote_said(
                    self.target.label, answer.reply, "STARTTLS")))
            return  # opportunistic: go on in plaintext
        if getattr(self._reader, "_buffer", b""):
            # RFC 3207 4.2: plaintext after the 220 that the core has not even seen
            # yet (still in the stream's buffer) would be read as if it came over
            # TLS: a reply injection (CVE-2011-0411 turned around). Give up.
            raise SessionError(outcome.tls_failed(
                self.target.label, "plaintext data after the 220 to STARTTLS"))
        ctx = _context(route, settings)
        try:
            await self._writer.start_tls(ctx, server_hostname=self.target.host,
                                         ssl_handshake_timeout=settings.timeouts.starttls)
        except ssl.SSLCertVerificationError as exc:
            # A certificate we do not trust: no plaintext fallback for that.
            raise SessionError(outcome.tls_failed(self.target.label, _ssl_reason(exc))
                               ) from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise _HandshakeFailed(_ssl_reason(exc)) from None
        self.tls = describe(self._writer.get_extra_info("ssl_object"))
        self.conn.tls_started()
        await self._hello()

    async def _login(self, route: Route) -> None:
        login = route.login
        assert login is not None
        label = self.target.label
        if not self.conn.tls_active and not route.allow_plaintext_auth:
            await self.quit()
            raise SessionError(outcome.auth_unavailable(
                label, "refusing to send credentials without TLS"))
        offered = self.conn.extensions.auth
        mech = choose_mechanism(offered, login.mechanisms)
        if mech is None:
            await self.quit()
            words = " ".join(sorted(offered)) or "none"
            raise SessionError(outcome.auth_unavailable(
                label, f"no usable AUTH mechanism (server offers: {words})"))
        if not isinstance(login, OAuth2Login):
            done = await self._auth(mech, login.username, login.password)
            if not done.reply.is_positive:
                await self._auth_refused(done)
            return
        for attempt in (1, 2):
            try:
                token = await login.tokens.token()
            except OAuthError as exc:
                await self.quit()
                raise SessionError(outcome.auth_unavailable(label, str(exc)),
                                   next_target=False) from None
            done = await self._auth(mech, login.username, token,
                                    host=self.target.host, port=self.target.port)
            if done.reply.is_positive:
                return
            if attempt == 1 and done.reply.is_permanent:
                login.tokens.invalidate(token)  # maybe expired early: one fresh token
                log_event(log, "oauth_retry", relay=label, reply=str(done.reply))
                continue
            await self._auth_refused(done)

    async def _auth(self, mech: str, username: str, secret: str, *,
                    host: str | None = None, port: int | None = None) -> AuthDone:
        self.conn.authenticate(mech, username, secret, host=host, port=port)
        return await self._expect(AuthDone)

    async def _auth_refused(self, done: AuthDone) -> None:
        detail = f"server said: {done.reply}".replace("\n", " ")
        if done.server_error:
            detail += f" ({done.server_error})"
        await self.quit()
        # The same credentials fail everywhere: no next target, defer (DESIGN 1.5).
        raise SessionError(outcome.auth_failed(self.target.label, detail),
                           next_target=done.reply.is_transient)

    # --- transactions ------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Ready for another transaction."""
        return not self.conn.closed and self.conn.awaiting is None and not self.conn.body_wanted

    async def send(self, envelope: Envelope, open_body: Callable[[], BinaryIO],
                   size: int | None) -> TransactionDone:
        """One transaction. Raises SMTPError (local refusal, nothing sent)."""
        self.conn.start_transaction(envelope, size=size)
        self.messages += 1
        event = await self._event()
        if isinstance(event, SendBody):
            await self._send_body(open_body)
            event = await self._event()
        if not isinstance(event, TransactionDone):  # the core emits it before Closed
            raise AssertionError(f"unexpected {event!r}")
        return event

    async def _send_body(self, open_body: Callable[[], BinaryIO]) -> None:
        conn = self.conn
        try:
            with open_body() as body:
                while conn.body_wanted:
                    piece = body.read(BODY_PIECE)
                    if not piece:
                        break
                    conn.send_body(piece)
                    await self._flush()
                    while conn.window_full:
                        await self._receive()
        except OSError as exc:
            # Never send the end of data for a body we could not read in full.
            conn.abort(f"cannot read the message ({exc})")
            self.abort()
            return
        conn.end_body()

    # --- closing -------------------------------------------------------------------
    async def quit(self) -> None:
        """Polite QUIT (bounded by the quit timeout), then close."""
        conn = self.conn
        try:
            if not conn.closed and conn.awaiting is None and not conn.body_wanted:
                conn.quit()
                while not isinstance(await self._event(), Closed):
                    pass
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.abort()

    def abort(self) -> None:
        """Close the socket at once (no QUIT)."""
        if not self.conn.closed:
            self.conn.abort("closed by us")
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()

    # --- I/O ---------------------------------------------------------------------------
    async def _expect(self, kind: type[_E]) -> _E:
        event = await self._event()
        if isinstance(event, kind):
            return event
        if isinstance(event, Closed):
            self.abort()
            reason = event.reason if event.reply is None else f"{event.reason}: {event.reply}"
            raise SessionError(outcome.conversation_failed(self.target.label,
                                                           f"{reason} while {event.stage}"))
        raise AssertionError(f"expected {kind.__name__}, got {event!r}")

    async def _event(self) -> ClientEvent:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, ClientEvent)
                return event
            if conn.closed:
                return Closed("connection already closed", "idle")
            await self._flush()
            if not conn.closed:
                await self._receive()

    async def _flush(self) -> None:
        data = self.conn.data_to_send()
        if not data:
            return
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self._timeouts.data_block)
        except TimeoutError:
            self.conn.abort("timeout writing to server")
        except (OSError, RuntimeError) as exc:  # RuntimeError: transport closed
            self.conn.abort(f"write error ({type(exc).__name__})")

    async def _receive(self) -> None:
        timeout = self._timeouts.for_reply(self.conn.awaiting)
        try:
            data = await asyncio.wait_for(self._reader.read(READ_SIZE), timeout)
        except TimeoutError:
            self.conn.abort(f"timeout after {timeout:g}s")
            return
        except (OSError, ssl.SSLError) as exc:
            self.conn.abort(f"read error ({type(exc).__name__})")
            return
        self.conn.receive_data(data)


def _context(route: Route, settings: SessionSettings) -> ssl.SSLContext:
    verify = route.verify and route.tls is not TlsMode.OPPORTUNISTIC
    return client_context(verify=verify, ca_file=route.ca_file if verify else None,
                          min_version=settings.tls_min_version)


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__

