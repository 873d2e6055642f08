"""Shared state and primitive operations of one server session.

Owns the fields every part of the server core reads (state, buffer, pending
decision, output queue, HELO/AUTH/TLS facts) and the small operations that
keep them consistent: writing a reply, queueing a decision, answering an
error of the core's own (and counting it), resetting a transaction, and
terminating. `handlers.py` builds the commands on top, `server.py` the public
API. No I/O.
"""

from __future__ import annotations

from collections import deque

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol.data import ChunkReader, DotReader
from goniec.protocol.events import (
    BadCommand,
    Closing,
    Connected,
    Decision,
    Event,
    TransactionReset,
)
from goniec.protocol.options import ServerOptions
from goniec.protocol.sasl import SaslExchange
from goniec.protocol.state import AUTH, CLOSED, CONNECTING, READY, TRANSACTION_STATES, State

LOG_LINE = 200  # BadCommand.line keeps at most this many octets
NO_WORDS: frozenset[str] = frozenset()

# The catalog's replies, already encoded, with and without enhanced codes.
_CATALOG = [v for v in vars(r).values() if isinstance(v, Reply)]
_ENCODED = {
    enhanced: {reply: reply.to_bytes(enhanced=enhanced) for reply in _CATALOG}
    for enhanced in (False, True)
}


class SessionCore:
    """The session's data and primitives; see `ServerConnection` for the API."""

    def __init__(self, options: ServerOptions, *, tls_active: bool = False) -> None:
        self._opts = options
        self._enhanced = options.enhanced_status_codes
        self._encoded = _ENCODED[self._enhanced]
        self._tls = tls_active
        self._state: State = CONNECTING
        self._buf = b""  # unread input is self._buf[self._pos:]
        self._pos = 0
        self._eof = False
        self._out: list[bytes] = []
        greeting = Connected()
        self._events: deque[Event] = deque([greeting])
        self._pending: Decision | None = greeting  # waiting for respond()
        self._handed = False  # the pending decision has left next_event()
        self._helo: str | None = None
        self._esmtp = False
        self._user: str | None = None
        self._bad = 0
        self._skipping: bytes | None = None  # head of an overlong line being skipped
        self._sasl: SaslExchange | None = None
        self._dot: DotReader | None = None
        self._chunk: ChunkReader | None = None
        self._mail_words = NO_WORDS  # MAIL/RCPT parameters on offer
        self._rcpt_words = NO_WORDS
        self._mail_utf8 = False  # the accepted MAIL had SMTPUTF8
        self._bdat_size = 0  # BDAT octets announced in this transaction

    # --- output and bookkeeping -----------------------------------------------------
    def _write(self, reply: Reply) -> None:
        raw = self._encoded.get(reply)
        self._out.append(raw if raw is not None else reply.to_bytes(enhanced=self._enhanced))

    def _decide(self, event: Decision) -> None:
        self._events.append(event)
        self._pending = event

    def _error(self, logged: bytes, reply: Reply) -> None:
        """Answer a command with an error of the core's own; count it."""
        self._write(reply)
        self._events.append(BadCommand(logged, reply))
        self._bad += 1
        limit = self._opts.max_bad_commands
        if limit and self._bad >= limit:
            self._write(r.with_hostname(r.R421_TOO_MANY_ERRORS, self._opts.hostname))
            self._terminate("too many errors")

    def _reject(self, line: bytes, reply: Reply) -> None:
        self._error(self._loggable(line), reply)

    def _loggable(self, raw: bytes) -> bytes:
        """The line as BadCommand shows it: cut short, SASL secrets hidden."""
        if self._state is AUTH:
            return b"***"
        if raw[:5].upper() == b"AUTH ":
            parts = raw.split(b" ", 2)
            if len(parts) == 3:
                raw = parts[0] + b" " + parts[1] + b" ***"
        return raw[:LOG_LINE]

    def _reset_transaction(self) -> None:
        if self._state in TRANSACTION_STATES:
            self._events.append(TransactionReset())
            self._state = READY

    def _terminate(self, reason: str) -> None:
        if self._state in TRANSACTION_STATES:
            self._events.append(TransactionReset())
        self._state = CLOSED
        self._events.append(Closing(reason))
        self._buf, self._pos = b"", 0
        self._pending = None
        self._skipping = None
        self._sasl = self._dot = self._chunk = None

    def _line_error(self, logged: bytes, reply: Reply) -> None:
        if self._state is AUTH:  # a broken SASL response ends the exchange
            self._sasl = None
            self._state = READY
        self._error(logged, reply)
