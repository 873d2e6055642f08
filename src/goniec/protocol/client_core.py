"""Client side of the protocol core: the session state shared by the command modules.

Owns the client states, `ClientOptions`, the record of a transaction in
progress (`TxnRecord`, which decides each recipient's reply) and
`ClientCore`, the base class holding a connection's state and the
bookkeeping every command needs (queue a line and the reply it expects,
finish a transaction, close). `client.py` builds the public
`ClientConnection` on it; `client_txn.py` adds the mail transaction. No I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from goniec.errors import Reply
from goniec.protocol.client_body import BdatFramer, DotStuffer
from goniec.protocol.client_events import ClientEvent, Closed, SendBody, TransactionDone
from goniec.protocol.client_reply import NO_EXTENSIONS, Extensions, ReplyParser
from goniec.protocol.exceptions import LocalProtocolError
from goniec.protocol.state import State

# --- states ------------------------------------------------------------------------
CONNECTING = State("CONNECTING")  # waiting for the greeting (or it was refused)
GREETED = State("GREETED")  # 220 received; hello() next (also after TLS starts)
HELLO = State("HELLO")  # EHLO/HELO sent
READY = State("READY")  # hello accepted, no transaction
STARTTLS = State("STARTTLS")  # STARTTLS sent
TLS_HANDSHAKE = State("TLS_HANDSHAKE")  # 220 to STARTTLS: the shell does the handshake
AUTH = State("AUTH")  # SASL exchange running
RESET = State("RESET")  # explicit RSET sent
TRANSACTION = State("TRANSACTION")  # MAIL/RCPT/DATA replies awaited
BODY = State("BODY")  # the shell streams the body
BODY_END = State("BODY_END")  # the body is complete; final replies awaited
QUIT = State("QUIT")  # QUIT sent
CLOSED = State("CLOSED")

# RFC 2920 does not bound a pipeline; BDAT chunks in flight are bounded so that
# the server's replies (one per chunk) cannot fill its send buffer while we write.
DEFAULT_BDAT_WINDOW = 8
MAX_SASL_ROUNDS = 4

_PUBLIC_KIND = {"RSET-TXN": "RSET", "DOT-DISCARD": "DOT"}
_STAGES = {
    "greeting": "waiting for the greeting",
    "EHLO": "waiting for the reply to EHLO",
    "HELO": "waiting for the reply to HELO",
    "STARTTLS": "waiting for the reply to STARTTLS",
    "AUTH": "waiting for the reply to AUTH",
    "RSET": "waiting for the reply to RSET",
    "MAIL": "waiting for the reply to MAIL FROM",
    "RCPT": "waiting for the reply to RCPT TO",
    "DATA": "waiting for the reply to DATA",
    "BDAT": "waiting for the reply to BDAT",
    "DOT": "waiting for the reply to the end of data",
    "QUIT": "waiting for the reply to QUIT",
}


@dataclass(frozen=True)
class ClientOptions:
    """How the client side talks; a frozen value the shell builds from config.

    helo_name: our name in EHLO/HELO (IIS "Fully-qualified domain name").
    esmtp: False sends HELO only (IIS "Send HELO instead of EHLO" per domain).
    pipelining / chunking: use PIPELINING / CHUNKING (BDAT) when offered.
    strict_8bitmime: refuse (554 5.6.3) a BODY=8BITMIME message to a server
        without 8BITMIME instead of sending it as is (the Postfix default).
    bdat_window: BDAT chunks in flight before waiting for their replies.
    """

    helo_name: str
    esmtp: bool = True
    pipelining: bool = True
    chunking: bool = True
    strict_8bitmime: bool = False
    bdat_window: int = DEFAULT_BDAT_WINDOW

    def __post_init__(self) -> None:
        if not self.helo_name or not self.helo_name.isascii() or any(
            c.isspace() for c in self.helo_name
        ):
            raise ValueError(f"helo_name must be a non-empty ASCII word, got {self.helo_name!r}")
        if self.bdat_window < 1:
            raise ValueError("bdat_window must be >= 1")


class TxnRecord:
    """The transaction in progress: what was sent and what came back."""

    __slots__ = ("slots", "n", "local", "local_replies", "dsn", "mail_line", "rcpt_lines",
                 "next_rcpt", "mail", "rcpt", "data", "final", "bdat", "body_ended",
                 "bdat_failed", "end_sent")

    def __init__(self, n: int, local: dict[int, Reply], mail_line: bytes,
                 rcpt_lines: tuple[bytes, ...], dsn: bool, bdat: bool) -> None:
        self.n = n
        self.mail_line = mail_line
        self.local = frozenset(local)
        self.local_replies = local
        self.slots = [i for i in range(n) if i not in local]  # RCPT slot -> recipient index
        self.rcpt_lines = rcpt_lines
        self.next_rcpt = 0
        self.dsn = dsn
        self.bdat = bdat
        self.mail: Reply | None = None
        self.rcpt: list[Reply | None] = [None] * len(self.slots)
        self.data: Reply | None = None
        self.final: Reply | None = None
        self.body_ended = False
        self.end_sent = False
        self.bdat_failed: Reply | None = None

    @property
    def mail_ok(self) -> bool:
        return self.mail is not None and self.mail.is_positive

    @property
    def any_accepted(self) -> bool:
        return any(r is not None and r.is_positive for r in self.rcpt)

    def result(self, interrupted: str | None, abort: Reply | None) -> TransactionDone:
        replies: list[Reply | None] = [None] * self.n
        body_reply = self.bdat_failed or self.final
        if self.data is not None and self.data.code != 354:
            body_reply = self.data
        for slot, i in enumerate(self.slots):
            rcpt = self.rcpt[slot]
            reply: Reply | None
            if self.mail is not None and not self.mail.is_positive:
                reply = self.mail
            elif rcpt is not None and not rcpt.is_positive:
                reply = rcpt
            elif rcpt is not None and body_reply is not None:
                reply = body_reply
            else:
                reply = abort
            replies[i] = reply
        for i, local in self.local_replies.items():
            replies[i] = local
        return TransactionDone(tuple(replies), self.mail, self.final, self.dsn,
                               self.local, interrupted, self.end_sent)


class SaslRecord:
    __slots__ = ("mechanism", "steps", "error", "rounds")

    def __init__(self, mechanism: str, steps: list[bytes]) -> None:
        self.mechanism = mechanism
        self.steps = steps  # responses still to send, one per 334 (LOGIN)
        self.error: str | None = None
        self.rounds = 0


class ClientCore:
    """State of one client connection; see `goniec.protocol.client.ClientConnection`."""

    def __init__(self, options: ClientOptions, *, tls_active: bool = False) -> None:
        self._opts = options
        self._parser = ReplyParser()
        self._out: list[bytes] = []
        self._events: deque[ClientEvent] = deque()
        self._pending: deque[tuple[str, int]] = deque([("greeting", 0)])
        self._state = CONNECTING
        self._ext = NO_EXTENSIONS
        self._esmtp = False
        self._tls = tls_active
        self._authenticated = False
        self._needs_reset = False
        self._txn: TxnRecord | None = None
        self._body: DotStuffer | BdatFramer | None = None
        self._sasl: SaslRecord | None = None
        self._transactions = 0

    # --- read-only facts ---------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def extensions(self) -> Extensions:
        """What the last accepted EHLO offered (empty after HELO or before hello)."""
        return self._ext

    @property
    def esmtp(self) -> bool:
        return self._esmtp

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def closed(self) -> bool:
        return self._state is CLOSED

    @property
    def transactions(self) -> int:
        """Transactions started on this connection (for the messages-per-connection limit)."""
        return self._transactions

    @property
    def awaiting(self) -> str | None:
        """The command whose reply comes next, for the shell's timeout (RFC 5321
        4.5.3.2): "greeting", "EHLO", "HELO", "STARTTLS", "AUTH", "RSET", "MAIL",
        "RCPT", "DATA", "BDAT", "DOT" (end of data, also BDAT LAST), "QUIT"; or None."""
        if not self._pending:
            return None
        kind = self._pending[0][0]
        return _PUBLIC_KIND.get(kind, kind)

    @property
    def stage(self) -> str:
        if self._state is BODY:
            return "sending message data"
        if self._pending:
            kind = self._pending[0][0]
            return _STAGES[_PUBLIC_KIND.get(kind, kind)]
        return "idle"

    # --- bookkeeping -------------------------------------------------------------
    def _require(self, state: State, what: str) -> None:
        if self._state is not state:
            raise LocalProtocolError(f"{what}() in state {self._state}")

    def _send(self, line: bytes, kind: str, index: int = 0) -> None:
        self._out.append(line)
        self._pending.append((kind, index))

    def _start_body(self, body: DotStuffer | BdatFramer) -> None:
        self._body = body
        self._state = BODY
        self._events.append(SendBody())

    def _finish(self, interrupted: str | None = None, abort: Reply | None = None) -> None:
        txn = self._txn
        assert txn is not None
        self._txn = None
        self._body = None
        if self._state is not CLOSED:
            self._state = READY
        self._events.append(txn.result(interrupted, abort))

    def _close(self, reason: str, reply: Reply | None = None) -> None:
        if self._state is CLOSED:
            return
        stage = self.stage
        self._state = CLOSED
        if self._txn is not None:
            interrupted = f"{reason} while {stage}"
            self._finish(interrupted, reply if reply is not None and reply.code == 421 else None)
        self._pending.clear()
        self._out.clear()
        self._events.append(Closed(reason, stage, reply))


