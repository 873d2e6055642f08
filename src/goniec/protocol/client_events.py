"""Events the client side of the protocol core hands to its shell.

Owns the immutable event types `ClientConnection.next_event()` returns. None
of them needs an answer: the shell reads the event and calls the next
command method (or, after `SendBody`, streams the body). No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from goniec.errors import Reply


class ClientEvent:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Greeting(ClientEvent):
    """The server's greeting (RFC 5321 4.3.1): 220 to go on, else call quit()."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class HelloDone(ClientEvent):
    """EHLO (or HELO after a 5xx to EHLO, RFC 5321 3.2) was answered.

    extended: True when EHLO was accepted; `ClientConnection.extensions` then
    holds what the server offered. A non-2xx reply means no session here.
    """

    reply: Reply
    extended: bool


@dataclass(frozen=True, slots=True)
class StartTlsDone(ClientEvent):
    """STARTTLS was answered. On 220 the shell performs the TLS handshake and
    calls `tls_started()` (then hello() again, RFC 3207 4.2), or closes."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthDone(ClientEvent):
    """The AUTH exchange ended: 235 means authenticated (RFC 4954 6).

    server_error: for XOAUTH2/OAUTHBEARER, the decoded error the server sent
    in its 334 challenge (a JSON text, RFC 7628 3.2.2), else None.
    """

    reply: Reply
    server_error: str | None = None


@dataclass(frozen=True, slots=True)
class SendBody(ClientEvent):
    """MAIL and at least one RCPT were accepted (and DATA got 354, or the body
    goes as BDAT chunks): stream the body with send_body(), then end_body()."""


@dataclass(frozen=True, slots=True)
class TransactionDone(ClientEvent):
    """One mail transaction is over.

    replies[i] is the reply that decides recipient i (in the order given to
    start_transaction): its RCPT refusal, else the MAIL refusal, else the
    DATA refusal, else the reply to the end of data (or the first failed BDAT
    chunk). None means undecided: the connection ended before an answer came
    (`interrupted` says when; after the end of data, the message may have
    been delivered). Indexes in `local` were refused by the core itself
    (address syntax), without asking the server.
    mail: the reply to MAIL (None when it was never answered or never sent).
    final: the reply to the end of data, or None when the body was not sent.
    data_sent: the end of data (or BDAT LAST) was sent; an undecided recipient
        may then have been delivered already.
    dsn: the DSN parameters were passed on (RFC 3461); when False a NOTIFY=SUCCESS
        recipient that the server accepted gets a "relayed" DSN from us.
    """

    replies: tuple[Reply | None, ...]
    mail: Reply | None
    final: Reply | None
    dsn: bool
    local: frozenset[int] = frozenset()
    interrupted: str | None = None
    data_sent: bool = False


@dataclass(frozen=True, slots=True)
class ResetDone(ClientEvent):
    """RSET was answered."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Closed(ClientEvent):
    """The session is over: QUIT answered, a 421, the server closed, a malformed
    reply, or the shell's abort(). Close the socket; the core reads nothing more.

    reason: what happened ("quit", "connection closed by server", ...);
    stage: what we were doing ("waiting for the reply to MAIL FROM", "idle", ...);
    reply: the 221 or 421 reply when there was one.
    """

    reason: str
    stage: str
    reply: Reply | None = None
