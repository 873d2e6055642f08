"""Events the server-side protocol core hands to its shell.

Owns the immutable event types. Events marked "decision" pause the core: the
shell must answer with `ServerConnection.respond(reply)` before the core goes
on; a positive reply (2xx/3xx) accepts, anything else refuses. Events marked
"info" need no answer. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from goniec.errors import Reply
from goniec.model import MailParams, Recipient


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
"""next_event(): the core has consumed all input; flush data_to_send() and read more."""
PAUSED = _Sentinel("PAUSED")
"""next_event(): a decision event is waiting for respond()."""


class Event:
    __slots__ = ()
    needs_decision = False


class Decision(Event):
    __slots__ = ()
    needs_decision = True


@dataclass(frozen=True, slots=True)
class Connected(Decision):
    """decision: a client connected; respond with the 220 greeting or 421/554 to refuse."""


@dataclass(frozen=True, slots=True)
class Helo(Decision):
    """decision: HELO (extended=False) or EHLO (extended=True) with the client's name.

    On a 250 the core writes the reply itself: for EHLO the shell's text is the
    first line and the core appends the extension keywords it advertises.
    """

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class AuthCredentials(Decision):
    """decision: the client finished a SASL exchange; check the password.

    235 accepts (the session is then authenticated as `username`), 535 refuses,
    454 is a temporary failure.
    """

    mechanism: str
    username: str
    password: str
    authzid: str = ""


@dataclass(frozen=True, slots=True)
class MailFrom(Decision):
    """decision: MAIL FROM:<sender> with its parsed parameters ("" = null sender)."""

    sender: str
    params: MailParams


@dataclass(frozen=True, slots=True)
class RcptTo(Decision):
    """decision: RCPT TO with its parsed parameters."""

    recipient: Recipient


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """info: a piece of the message body, dot-unstuffed (DATA) or as sent (BDAT).

    Chunks arrive in order and carry CRLF line endings exactly as received.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class DataEnd(Decision):
    """decision: the body is complete (final dot, or BDAT LAST); respond 250 once stored."""


@dataclass(frozen=True, slots=True)
class MessageRejected(Event):
    """info: the core refused the body itself (bare CR/LF, overlong line, too big,
    bad BDAT); the reply is already queued. The shell discards what it stored."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class TransactionReset(Event):
    """info: a transaction that had an accepted MAIL was abandoned (RSET, HELO/EHLO,
    STARTTLS, AUTH reset, or the connection closing); discard stored data."""


@dataclass(frozen=True, slots=True)
class StartTls(Event):
    """info: the core has queued 220 to STARTTLS and dropped all buffered plaintext.

    The shell sends data_to_send(), performs the TLS handshake, then calls
    `tls_started()`; on handshake failure it closes the connection.
    """


@dataclass(frozen=True, slots=True)
class BadCommand(Event):
    """info: the core answered a command with an error itself (for logging)."""

    line: bytes
    reply: Reply


@dataclass(frozen=True, slots=True)
class Closing(Event):
    """info: the final reply (221 or 421) is queued; flush data_to_send() and close."""

    reason: str
