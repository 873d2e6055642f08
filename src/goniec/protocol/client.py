"""The client side of the SMTP protocol core, h11 style: commands in, bytes out.

Owns `ClientConnection`, which the delivery shell drives, and the sequence
rules of an outbound session: the greeting, EHLO with the fall back to HELO
after a 5xx (RFC 5321 3.2), STARTTLS (RFC 3207, buffered plaintext dropped at
the 220), AUTH exchanges (RFC 4954: PLAIN, LOGIN, XOAUTH2, OAUTHBEARER),
mail transactions with PIPELINING (RFC 2920: RSET+MAIL+RCPTs+DATA in one
write), DATA or BDAT (RFC 3030, when CHUNKING is offered), RSET and QUIT, and
matching every reply to the command it answers. The state and bookkeeping
live in `client_core.py`, the mail transaction in `client_txn.py`, command
lines, parameters and refusals made locally in `client_commands.py`, body
encoding in `client_body.py`, reply parsing in `client_reply.py`, events in
`client_events.py`; import them all from here.

It must not do I/O, read a clock or decide routing. Peer bytes never raise:
garbage, an unexpected reply, a 421 or the end of the stream all end in a
`Closed` event. Calling a method out of turn raises `LocalProtocolError`;
`start_transaction` raises `SMTPError` (5xx, made locally) when the server
cannot take the message at all (SMTPUTF8 missing, too big, bad sender).

Usage: feed receive_data(bytes) and pull next_event() until it returns
NEED_DATA; send data_to_send() after every call. Per event: Greeting ->
hello(); HelloDone -> starttls() / authenticate() / start_transaction();
SendBody -> send_body()* then end_body(); TransactionDone -> the next
start_transaction() or quit(); Closed -> close the socket.
"""

from __future__ import annotations

import base64
import binascii

from goniec.errors import Reply
from goniec.protocol.client_commands import (
    SUPPORTED_MECHANISMS,
    b64,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)
from goniec.protocol.client_core import (
    AUTH,
    BODY,
    CLOSED,
    GREETED,
    HELLO,
    MAX_SASL_ROUNDS,
    QUIT,
    READY,
    RESET,
    STARTTLS,
    TLS_HANDSHAKE,
    ClientOptions,
    SaslRecord,
)
from goniec.protocol.client_events import (
    AuthDone,
    ClientEvent,
    Closed,
    Greeting,
    HelloDone,
    ResetDone,
    SendBody,
    StartTlsDone,
    TransactionDone,
)
from goniec.protocol.client_reply import NO_EXTENSIONS, Extensions, ReplySyntaxError
from goniec.protocol.client_txn import TransactionHandlers
from goniec.protocol.events import NEED_DATA, _Sentinel
from goniec.protocol.exceptions import LocalProtocolError


class ClientConnection(TransactionHandlers):
    """One outbound SMTP session, from the greeting to Closed (module docstring).

    ClientConnection(options, *, tls_active=False): tls_active=True for
    implicit TLS (port 465). The first event is Greeting.
    """

    # --- input and output --------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes read from the server; b"" means the server closed the connection."""
        if self._state is CLOSED:
            return
        if not data:
            self._close("connection closed by server")
            return
        if self._state is TLS_HANDSHAKE:
            return  # RFC 3207 4.2: nothing read before the handshake may count
        self._parser.feed(data)
        try:
            while self._state is not CLOSED and self._state is not TLS_HANDSHAKE:
                reply = self._parser.next_reply()
                if reply is None:
                    break
                self._on_reply(reply)
        except ReplySyntaxError as exc:
            self._close(f"malformed reply from server ({exc})")

    def next_event(self) -> ClientEvent | _Sentinel:
        """The next event, or NEED_DATA when more input is needed."""
        return self._events.popleft() if self._events else NEED_DATA

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def abort(self, reason: str) -> None:
        """The shell gave up (a timeout, a write error): like the end of the stream."""
        self._close(reason)

    # --- commands ----------------------------------------------------------------
    def hello(self) -> None:
        """EHLO (or HELO when options.esmtp is False); answered by HelloDone."""
        self._require(GREETED, "hello")
        verb = "EHLO" if self._opts.esmtp else "HELO"
        self._send(f"{verb} {self._opts.helo_name}\r\n".encode(), verb)
        self._state = HELLO

    def starttls(self) -> None:
        """RFC 3207: answered by StartTlsDone."""
        self._require(READY, "starttls")
        if self._tls:
            raise LocalProtocolError("TLS is already active")
        self._send(b"STARTTLS\r\n", "STARTTLS")
        self._state = STARTTLS

    def tls_started(self) -> None:
        """The handshake after a 220 to STARTTLS succeeded: RFC 3207 4.2, start over."""
        self._require(TLS_HANDSHAKE, "tls_started")
        self._tls = True
        self._ext = NO_EXTENSIONS
        self._esmtp = self._authenticated = False
        self._parser.clear()
        self._state = GREETED

    def authenticate(self, mechanism: str, username: str, secret: str, *,
                     host: str | None = None, port: int | None = None) -> None:
        """RFC 4954 AUTH; `secret` is the password (PLAIN, LOGIN) or the OAuth2
        access token (XOAUTH2, OAUTHBEARER; host and port go into OAUTHBEARER's
        kvpairs, RFC 7628 3.1). Answered by AuthDone."""
        self._require(READY, "authenticate")
        mech = mechanism.upper()
        if mech not in SUPPORTED_MECHANISMS:
            raise LocalProtocolError(f"unsupported SASL mechanism {mechanism!r}")
        steps: list[bytes] = []
        if mech == "PLAIN":
            line = b"AUTH PLAIN " + plain_response(username, secret)
        elif mech == "LOGIN":
            line = b"AUTH LOGIN"
            steps = [b64(username.encode()), b64(secret.encode())]
        elif mech == "XOAUTH2":
            line = b"AUTH XOAUTH2 " + xoauth2_response(username, secret)
        else:
            line = b"AUTH OAUTHBEARER " + oauthbearer_response(username, secret, host, port)
        self._sasl = SaslRecord(mech, steps)
        self._send(line + b"\r\n", "AUTH")
        self._state = AUTH

    def reset(self) -> None:
        """RSET (RFC 5321 4.1.1.5); answered by ResetDone."""
        self._require(READY, "reset")
        self._send(b"RSET\r\n", "RSET")
        self._state = RESET

    def quit(self) -> None:
        """QUIT (RFC 5321 4.1.1.10); Closed follows. Allowed whenever no reply is awaited."""
        if self._state is CLOSED:
            return
        if self._pending or self._state in (BODY, TLS_HANDSHAKE):
            raise LocalProtocolError(f"quit() in state {self._state}")
        self._send(b"QUIT\r\n", "QUIT")
        self._state = QUIT

    # --- replies -------------------------------------------------------------------
    def _on_reply(self, reply: Reply) -> None:
        if not self._pending:
            self._close("unexpected reply from server", reply)
            return
        kind, index = self._pending.popleft()
        handler = _HANDLERS[kind]
        handler(self, reply, index)
        if reply.code == 421 and self._state is not CLOSED:
            # RFC 5321 3.8: 421 means the server is closing the connection.
            self._close("server closing the connection", reply)

    def _on_greeting(self, reply: Reply, _: int) -> None:
        if 200 <= reply.code < 300:
            self._state = GREETED
        self._events.append(Greeting(reply))

    def _on_ehlo(self, reply: Reply, _: int) -> None:
        if reply.is_positive:
            self._ext = Extensions.from_ehlo(reply)
            self._esmtp = True
            self._state = READY
        elif reply.is_permanent:
            # RFC 5321 3.2: a server that does not know EHLO answers 5xx; use HELO.
            self._send(f"HELO {self._opts.helo_name}\r\n".encode(), "HELO")
            return
        else:
            self._state = GREETED
        self._events.append(HelloDone(reply, True))

    def _on_helo(self, reply: Reply, _: int) -> None:
        self._ext = NO_EXTENSIONS
        self._esmtp = False
        self._state = READY if reply.is_positive else GREETED
        self._events.append(HelloDone(reply, False))

    def _on_starttls(self, reply: Reply, _: int) -> None:
        if reply.code == 220:
            self._state = TLS_HANDSHAKE
            self._parser.clear()  # RFC 3207 4.2 / CVE-2011-0411 (reply injection)
        else:
            self._state = READY
        self._events.append(StartTlsDone(reply))

    def _on_auth(self, reply: Reply, _: int) -> None:
        sasl = self._sasl
        assert sasl is not None
        if reply.code == 334:
            sasl.rounds += 1
            if sasl.rounds > MAX_SASL_ROUNDS:
                self._close("endless AUTH exchange", reply)
            elif sasl.mechanism == "LOGIN" and sasl.steps:
                self._send(sasl.steps.pop(0) + b"\r\n", "AUTH")
            elif sasl.mechanism in ("XOAUTH2", "OAUTHBEARER") and sasl.error is None:
                # The challenge carries the error as base64 JSON; the client must
                # answer (XOAUTH2: an empty line; RFC 7628 3.2.3: ^A) to get the 5xx.
                sasl.error = _decode_challenge(reply.text)
                self._send(b"\r\n" if sasl.mechanism == "XOAUTH2" else b"AQ==\r\n", "AUTH")
            else:
                self._send(b"*\r\n", "AUTH")  # RFC 4954 4: cancel an unexpected round
            return
        self._sasl = None
        self._authenticated = reply.is_positive
        self._state = READY
        self._events.append(AuthDone(reply, sasl.error))

    def _on_reset(self, reply: Reply, _: int) -> None:
        if reply.is_positive:
            self._needs_reset = False
        self._state = READY
        self._events.append(ResetDone(reply))

    def _on_quit(self, reply: Reply, _: int) -> None:
        self._state = CLOSED
        self._events.append(Closed("quit", "waiting for the reply to QUIT", reply))


def _decode_challenge(text: str) -> str:
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return text


_HANDLERS = {
    "greeting": ClientConnection._on_greeting,
    "EHLO": ClientConnection._on_ehlo,
    "HELO": ClientConnection._on_helo,
    "STARTTLS": ClientConnection._on_starttls,
    "AUTH": ClientConnection._on_auth,
    "RSET": ClientConnection._on_reset,
    "QUIT": ClientConnection._on_quit,
    "RSET-TXN": ClientConnection._on_txn_reset,
    "MAIL": ClientConnection._on_mail,
    "RCPT": ClientConnection._on_rcpt,
    "DATA": ClientConnection._on_data,
    "BDAT": ClientConnection._on_bdat,
    "DOT": ClientConnection._on_dot,
    "DOT-DISCARD": ClientConnection._on_dot_discard,
}

__all__ = [
    "AuthDone", "ClientConnection", "ClientEvent", "ClientOptions", "Closed", "Extensions",
    "Greeting", "HelloDone", "NEED_DATA", "ResetDone", "SendBody", "StartTlsDone",
    "TransactionDone",
]
