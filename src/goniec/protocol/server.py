"""The server side of the SMTP protocol core, h11 style: bytes in, events out.

Owns `ServerConnection`, the public API the shell uses, and the input loop:
command-line framing (RFC 5321 2.3.8, 4.5.3.1.4) and the switch into the DATA
scanner (`data.py`), BDAT chunks and SASL responses; plus the pause/respond
cycle of decision events. The verbs live in `handlers.py`, the session's data
in `session.py`, sequence rules in `state.py`, wording in `replies.py`.

It must not do I/O, read a clock, or decide policy (that is the shell's
answer to each decision event). Peer bytes can only ever raise
`PeerProtocolError` (data after Closing); misuse by the shell raises
`LocalProtocolError`.

Usage: receive_data(bytes) then call next_event() until it returns NEED_DATA
(flush data_to_send() and read more) or PAUSED (answer the last decision with
respond(reply)). Feed the next block only after NEED_DATA: the core then keeps
at most one block plus one command line (12 KB) of input.
"""

from __future__ import annotations

from goniec import replies as r
from goniec.errors import Reply
from goniec.protocol.commands import ehlo_keywords, mail_keywords, rcpt_keywords
from goniec.protocol.data import ChunkReader, DotReader
from goniec.protocol.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Connected,
    DataChunk,
    DataEnd,
    Event,
    Helo,
    MailFrom,
    MessageRejected,
    _Sentinel,
)
from goniec.protocol.exceptions import LocalProtocolError, PeerProtocolError
from goniec.protocol.handlers import CommandHandlers
from goniec.protocol.sasl import MAX_SASL_LINE
from goniec.protocol.session import LOG_LINE, NO_WORDS
from goniec.protocol.state import AFTER_DECISION, AUTH, CLOSED, GREETED, READY, STARTTLS, State

# RFC 5321 4.5.3.1.4: a command line is at most 512 octets with CRLF; MAIL and
# RCPT may grow by the parameters of extensions (RFC 5321 4.5.3.1.4 again, and
# RFC 1870/3461 ask for room), AUTH lines by RFC 4954 4 up to 12288 octets.
MAX_COMMAND_LINE = 512
MAX_MAIL_RCPT_LINE = 2048


def _line_limit(buf: bytes, pos: int) -> int:
    verb = buf[pos : pos + 5].upper()
    if verb == b"MAIL " or verb == b"RCPT ":
        return MAX_MAIL_RCPT_LINE
    if verb == b"AUTH ":
        return MAX_SASL_LINE
    return MAX_COMMAND_LINE


class ServerConnection(CommandHandlers):
    """One SMTP server session, from the greeting to Closing. See the module docstring.

    ServerConnection(options, *, tls_active=False): tls_active=True for implicit
    TLS (port 465). The first event is Connected().
    """

    # --- read-only facts ----------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def authenticated_user(self) -> str | None:
        return self._user

    @property
    def helo_name(self) -> str | None:
        return self._helo

    @property
    def esmtp(self) -> bool:
        return self._esmtp

    @property
    def in_data(self) -> bool:
        """True while message octets are being read (DATA body or BDAT chunk)."""
        return self._dot is not None or self._chunk is not None

    @property
    def closed(self) -> bool:
        return self._state is CLOSED

    @property
    def buffered(self) -> int:
        """Octets received but not processed yet (pipelined input, a partial line).

        Useful to the shell for pregreet checks (data before the greeting) and
        to watch memory; the core keeps it bounded when fed after NEED_DATA.
        """
        return len(self._buf) - self._pos

    # --- the shell's calls ----------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Hand over bytes read from the peer; b"" means the peer closed its side."""
        if self._state is CLOSED:
            if data:
                raise PeerProtocolError("data received after the connection was closed")
            return
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after end of file")
            return
        if not data:
            self._eof = True
        elif self._state is STARTTLS:
            pass  # RFC 3207 4.2 / CVE-2011-0411: plaintext before the handshake is dropped
        elif self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
        else:
            self._buf, self._pos = self._buf[self._pos :] + data, 0

    def next_event(self) -> Event | _Sentinel:
        """The next event, or PAUSED (a decision awaits respond()), or NEED_DATA."""
        events = self._events
        if not events:
            if self._pending is not None:
                return PAUSED
            while self._step() and not events and self._pending is None:
                pass
            if not events:
                return NEED_DATA
        event = events.popleft()
        if event is self._pending:
            self._handed = True
        return event

    def respond(self, reply: Reply) -> None:
        """Answer the decision event last returned by next_event()."""
        event = self._pending
        if event is None or not self._handed:
            raise LocalProtocolError("respond() called with no decision waiting")
        if not 200 <= reply.code <= 599:
            raise LocalProtocolError(f"a decision needs a 2xx-5xx reply, got {reply.code}")
        self._pending = None
        self._handed = False
        accepted = reply.is_positive
        kind = type(event)
        if isinstance(event, Helo) and accepted:
            self._helo = event.name
            self._esmtp = event.extended
            if event.extended:
                self._mail_words = mail_keywords(self._opts, self._tls)
                self._rcpt_words = rcpt_keywords(self._opts)
                lines = reply.lines() + ehlo_keywords(self._opts, self._tls)
                reply = Reply(reply.code, None, "\n".join(lines))
            else:
                self._mail_words = self._rcpt_words = NO_WORDS
        if (kind is Helo or kind is Connected) and accepted:
            # RFC 2034 3: no enhanced codes in the 220 greeting or the HELO/EHLO reply.
            # A refusal (421/554 at connect, 5xx to HELO) carries one, as Postfix does,
            # so the client's log tells why.
            self._out.append(reply.to_bytes(enhanced=False))
        else:
            self._write(reply)
        if accepted:
            if isinstance(event, AuthCredentials):
                self._user = event.username
            elif isinstance(event, MailFrom):
                self._mail_utf8 = event.params.smtputf8
                self._bdat_size = 0
        after = AFTER_DECISION.get((kind, accepted))
        if after is not None and after is not CLOSED:
            self._state = after
        if after is CLOSED:
            self._terminate("greeting refused")
        elif reply.code == 421:
            self._terminate("421 reply")

    def data_to_send(self) -> bytes:
        """Everything queued for the peer so far; the queue is then empty."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def tls_started(self) -> None:
        """The TLS handshake after StartTls succeeded: RFC 3207 4.2, forget everything."""
        if self._state is not STARTTLS:
            raise LocalProtocolError("tls_started() without a StartTls event")
        self._tls = True
        self._state = GREETED
        self._helo = self._user = None
        self._esmtp = self._mail_utf8 = False
        self._mail_words = self._rcpt_words = NO_WORDS
        self._buf, self._pos = b"", 0

    def close(self, reply: Reply) -> None:
        """Shell-initiated close (timeout, shutdown): queue `reply` and emit Closing."""
        if self._state is CLOSED:
            return
        if self._pending is not None and not self._handed:
            self._events.remove(self._pending)
        self._write(reply)
        self._terminate("closed by server")

    # --- output and bookkeeping -----------------------------------------------------
    # --- input ------------------------------------------------------------------------
    def _step(self) -> bool:
        """Make one unit of progress; False when more input is needed."""
        if self._dot is not None:
            return self._step_dot(self._dot)
        if self._chunk is not None:
            return self._step_chunk(self._chunk)
        if self._state is CLOSED:
            return False
        if self._state is STARTTLS:
            return self._at_end()
        return self._step_line()

    def _at_end(self) -> bool:
        """No complete unit in the buffer: close on EOF, else wait for more."""
        if self._eof:
            self._terminate("peer closed")
            return True
        return False

    def _step_line(self) -> bool:
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos)
        if self._skipping is not None:
            if nl < 0:
                self._buf, self._pos = b"", 0
                return self._at_end()
            self._pos = nl + 1
            head, self._skipping = self._skipping, None
            self._line_error(head, r.R500_LINE_TOO_LONG)
            return True
        limit = MAX_SASL_LINE if self._state is AUTH else _line_limit(buf, pos)
        if nl < 0:
            if len(buf) - pos < limit:
                return self._at_end()
            # Overlong line: keep only its head, skip the rest up to the next LF.
            self._skipping = self._loggable(buf[pos : pos + LOG_LINE])
            self._buf, self._pos = b"", 0
            return True
        self._pos = nl + 1
        if nl - pos >= limit:
            self._line_error(self._loggable(buf[pos : pos + LOG_LINE]), r.R500_LINE_TOO_LONG)
        elif nl == pos or buf[nl - 1] != 13:  # RFC 5321 2.3.8: lines end with CRLF
            self._line_error(self._loggable(buf[pos:nl]), r.R500_BARE_LF)
        elif self._state is AUTH:
            self._sasl_line(buf[pos : nl - 1])
        else:
            self._command(buf[pos : nl - 1])
        return True

    def _step_dot(self, reader: DotReader) -> bool:
        pos = self._pos
        new_pos, chunk, done = reader.feed(self._buf, pos)
        self._pos = new_pos
        if chunk:
            self._events.append(DataChunk(chunk))
        if done:
            self._dot = None
            verdict = reader.verdict()
            if verdict is None:
                self._decide(DataEnd())
            else:
                self._write(verdict)
                self._events.append(MessageRejected(verdict))
                self._state = READY
            return True
        return new_pos != pos or self._at_end()

    def _step_chunk(self, chunk: ChunkReader) -> bool:
        pos = self._pos
        n = min(len(self._buf) - pos, chunk.remaining)
        if n <= 0:
            return self._at_end()
        if not chunk.discard:
            self._events.append(DataChunk(self._buf[pos : pos + n]))
        self._pos = pos + n
        chunk.remaining -= n
        if not chunk.remaining:
            self._chunk_done(chunk)
        return True
