"""States of a server connection and its transition tables, as data.

Owns the state sentinels, which commands each state accepts (anything else
gets the 503/554 refusal listed here, RFC 5321 4.1.4 and 3.3), and the state
a decision moves to once the shell has answered it. The server core reads these
tables; it must not hard-code sequence rules elsewhere. No I/O.
"""

from __future__ import annotations

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol.events import (
    AuthCredentials,
    Connected,
    DataEnd,
    Decision,
    Helo,
    MailFrom,
    RcptTo,
)


class State:
    """A connection state; compare by identity (`conn.state is READY`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CONNECTING = State("CONNECTING")
"""Connected() is waiting for the shell's greeting; no command is read yet."""
GREETED = State("GREETED")
"""220 sent; no HELO/EHLO accepted yet (also right after the TLS handshake)."""
READY = State("READY")
"""HELO/EHLO accepted, no mail transaction."""
MAIL = State("MAIL")
"""MAIL accepted, no recipient accepted yet."""
RCPT = State("RCPT")
"""At least one RCPT accepted."""
BDAT = State("BDAT")
"""At least one BDAT chunk started (RFC 3030): only BDAT may continue the body."""
DATA = State("DATA")
"""354 sent: reading the dot-terminated body, then waiting for the DataEnd answer."""
AUTH = State("AUTH")
"""A SASL exchange is running (RFC 4954): lines are responses, not commands."""
STARTTLS = State("STARTTLS")
"""220 to STARTTLS queued; waiting for the shell's tls_started()."""
CLOSED = State("CLOSED")
"""Closing was emitted; nothing more is read."""

TRANSACTION_STATES = frozenset({MAIL, RCPT, BDAT, DATA})
"""States in which an accepted MAIL is open (leaving them early is a TransactionReset)."""

# --- commands per state -------------------------------------------------------
# Commands valid in every state where commands are read. STARTTLS, AUTH and
# BDAT check whether they are offered at all before looking at this table.
_ANYTIME = frozenset(
    {b"HELO", b"EHLO", b"NOOP", b"RSET", b"QUIT", b"VRFY", b"EXPN", b"HELP", b"STARTTLS"}
)

ALLOWED: dict[State, frozenset[bytes]] = {
    GREETED: _ANYTIME,
    READY: _ANYTIME | {b"MAIL", b"AUTH"},
    MAIL: _ANYTIME | {b"RCPT"},
    RCPT: _ANYTIME | {b"RCPT", b"DATA", b"BDAT"},
    BDAT: _ANYTIME | {b"BDAT"},
}
"""Which verbs each command-reading state accepts."""

REFUSALS: dict[tuple[State, bytes], Reply] = {
    (GREETED, b"MAIL"): r.R503_HELO_FIRST,
    (GREETED, b"AUTH"): r.R503_HELO_FIRST,
    (GREETED, b"RCPT"): r.R503_MAIL_FIRST,
    (GREETED, b"DATA"): r.R503_MAIL_FIRST,
    (GREETED, b"BDAT"): r.R503_MAIL_FIRST,
    (READY, b"RCPT"): r.R503_MAIL_FIRST,
    (READY, b"DATA"): r.R503_MAIL_FIRST,
    (READY, b"BDAT"): r.R503_MAIL_FIRST,
    (MAIL, b"MAIL"): r.R503_NESTED_MAIL,
    (MAIL, b"AUTH"): r.R503_AUTH_IN_TRANSACTION,
    # RFC 5321 3.3: DATA with no accepted recipient may get 503 or 554.
    (MAIL, b"DATA"): r.R554_NO_VALID_RECIPIENTS,
    (MAIL, b"BDAT"): r.R554_NO_VALID_RECIPIENTS,
    (RCPT, b"MAIL"): r.R503_NESTED_MAIL,
    (RCPT, b"AUTH"): r.R503_AUTH_IN_TRANSACTION,
    (BDAT, b"MAIL"): r.R503_NESTED_MAIL,
    (BDAT, b"AUTH"): r.R503_AUTH_IN_TRANSACTION,
    (BDAT, b"DATA"): r.R503_DATA_AFTER_BDAT,
}
"""The reply for a verb its state does not accept; default R503_BAD_SEQUENCE."""


def refusal(state: State, verb: bytes) -> Reply | None:
    """None if `verb` is acceptable in `state`, else the reply that refuses it."""
    if verb in ALLOWED.get(state, frozenset()):
        return None
    return REFUSALS.get((state, verb), r.R503_BAD_SEQUENCE)


# --- decisions ------------------------------------------------------------------
# (decision type, accepted?) -> next state. A missing entry means "stay".
# A 421 answer closes the connection whatever this table says.
AFTER_DECISION: dict[tuple[type[Decision], bool], State] = {
    (Connected, True): GREETED,
    (Connected, False): CLOSED,  # 421/554 greeting: the shell closes
    (Helo, True): READY,
    (AuthCredentials, True): READY,
    (AuthCredentials, False): READY,
    (MailFrom, True): MAIL,
    (RcptTo, True): RCPT,
    (DataEnd, True): READY,  # RFC 5321 4.1.1.4: the transaction ends
    (DataEnd, False): READY,  # whatever the answer
}
