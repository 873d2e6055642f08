"""The SMTP command handlers of the server core (RFC 5321 4.1.1 and extensions).

Owns what each verb does once its line is framed: HELO/EHLO, MAIL, RCPT,
DATA, BDAT (RFC 3030), RSET, NOOP, QUIT, VRFY, EXPN, HELP, STARTTLS (RFC 3207)
and AUTH (RFC 4954), plus the end of a BDAT chunk and the SASL steps. Sequence
rules come from `state.py`, argument parsing from `commands.py`. Handlers
answer errors themselves (BadCommand) or queue a decision; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from goniec import replies as r
from goniec.errors import SMTPError
from goniec.protocol.commands import auth_offered, parse_bdat, parse_mail, parse_rcpt
from goniec.protocol.data import ChunkReader, DotReader
from goniec.protocol.events import (
    AuthCredentials,
    DataEnd,
    Helo,
    MailFrom,
    MessageRejected,
    RcptTo,
    StartTls,
)
from goniec.protocol.sasl import Challenge, Credentials, SaslError, SaslExchange
from goniec.protocol.session import SessionCore
from goniec.protocol.state import AUTH, BDAT, DATA, READY, STARTTLS, refusal

# Verbs that check whether their extension is on offer before the state table.
_SELF_CHECKED = frozenset({b"STARTTLS", b"AUTH", b"BDAT"})


class CommandHandlers(SessionCore):
    """One method per verb; `_command` dispatches a framed command line."""

    def _chunk_done(self, chunk: ChunkReader) -> None:
        self._chunk = None
        if chunk.refusal is not None:
            self._reject(chunk.line, chunk.refusal)
        elif chunk.too_big:
            self._write(r.R552_MESSAGE_TOO_BIG)
            self._events.append(MessageRejected(r.R552_MESSAGE_TOO_BIG))
            self._state = READY
        elif chunk.last:
            self._decide(DataEnd())
        else:
            self._write(r.R250_BDAT_RECEIVED.with_text(f"{chunk.size} octets received"))

    def _sasl_line(self, line: bytes) -> None:
        assert self._sasl is not None
        try:
            step = self._sasl.respond(line)
        except SaslError as exc:
            self._line_error(b"*" if line == b"*" else b"***", exc.reply)
            return
        self._sasl_step(step)

    def _sasl_step(self, step: Challenge | Credentials) -> None:
        if isinstance(step, Challenge):
            # RFC 4954 4: "334" SP [base64] CRLF, the space even before an empty text.
            self._out.append(b"334 " + step.text.encode("ascii") + b"\r\n")
            self._state = AUTH
        else:
            self._sasl = None
            self._decide(
                AuthCredentials(step.mechanism, step.username, step.password, step.authzid)
            )

    # --- commands -----------------------------------------------------------------------
    def _command(self, line: bytes) -> None:
        sp = line.find(b" ")
        if sp < 0:
            verb, args = line.upper(), b""
        else:
            verb, args = line[:sp].upper(), line[sp + 1 :]
        handler = _HANDLERS.get(verb)
        if handler is None:
            self._reject(line, r.R500_UNKNOWN_COMMAND)
            return
        if verb not in _SELF_CHECKED:
            refused = refusal(self._state, verb)
            if refused is not None:
                self._reject(line, refused)
                return
        handler(self, line, args)

    def _cmd_helo(self, line: bytes, args: bytes) -> None:
        self._hello(line, args, extended=False)

    def _cmd_ehlo(self, line: bytes, args: bytes) -> None:
        self._hello(line, args, extended=True)

    def _hello(self, line: bytes, args: bytes, *, extended: bool) -> None:
        # Any non-empty name is taken here; how strict to be is policy's decision.
        try:
            name = args.strip(b" ").decode("utf-8")
        except UnicodeDecodeError:
            self._reject(line, r.R501_INVALID_UTF8)
            return
        if not name:
            self._reject(line, r.R501_HELO_NAME_REQUIRED)
            return
        self._reset_transaction()  # RFC 5321 4.1.4: EHLO/HELO later acts as RSET
        self._decide(Helo(name, extended))

    def _cmd_mail(self, line: bytes, args: bytes) -> None:
        try:
            sender, params = parse_mail(args, self._mail_words, self._opts.max_message_size)
        except SMTPError as exc:
            self._reject(line, exc.reply)
            return
        self._decide(MailFrom(sender, params))

    def _cmd_rcpt(self, line: bytes, args: bytes) -> None:
        try:
            recipient = parse_rcpt(args, self._rcpt_words, self._mail_utf8)
        except SMTPError as exc:
            self._reject(line, exc.reply)
            return
        self._decide(RcptTo(recipient))

    def _cmd_data(self, line: bytes, args: bytes) -> None:
        if args:
            self._reject(line, r.R501_NO_ARGUMENTS)
            return
        self._write(r.R354_START_DATA)
        self._state = DATA
        self._dot = DotReader(self._opts.max_message_size, self._opts.max_line_length)

    def _cmd_bdat(self, line: bytes, args: bytes) -> None:
        if not self._opts.chunking:
            self._reject(line, r.R502_NOT_IMPLEMENTED)
            return
        try:
            size, last = parse_bdat(args)
        except SMTPError as exc:
            # The size is unknown, so the octets cannot be skipped: read on as commands.
            self._reject(line, exc.reply)
            return
        refused = refusal(self._state, b"BDAT")
        if refused is None and not self._esmtp:
            refused = r.R503_EHLO_FIRST
        too_big = False
        if refused is None:
            self._state = BDAT
            self._bdat_size += size
            limit = self._opts.max_message_size
            too_big = bool(limit) and self._bdat_size > limit
        # RFC 3030 2: the chunk's octets are read even when the command is refused.
        chunk = ChunkReader(size, last, refused, too_big, line)
        if size:
            self._chunk = chunk
        else:
            self._chunk_done(chunk)

    def _cmd_rset(self, line: bytes, args: bytes) -> None:
        if args:
            self._reject(line, r.R501_NO_ARGUMENTS)
            return
        self._reset_transaction()
        self._write(r.R250_OK)

    def _cmd_noop(self, line: bytes, args: bytes) -> None:
        self._write(r.R250_OK)  # RFC 5321 4.1.1.9: a NOOP argument is ignored

    def _cmd_quit(self, line: bytes, args: bytes) -> None:
        if args:
            self._reject(line, r.R501_NO_ARGUMENTS)
            return
        self._write(r.with_hostname(r.R221_BYE, self._opts.hostname))
        self._terminate("quit")

    def _cmd_vrfy(self, line: bytes, args: bytes) -> None:
        if not args.strip(b" "):
            self._reject(line, r.R501_VRFY_ARGUMENT_REQUIRED)
            return
        self._write(r.R252_CANNOT_VRFY)

    def _cmd_expn(self, line: bytes, args: bytes) -> None:
        self._reject(line, r.R502_NOT_IMPLEMENTED)  # RFC 5321 7.3: lists stay private

    def _cmd_help(self, line: bytes, args: bytes) -> None:
        self._write(r.R214_HELP)

    def _cmd_starttls(self, line: bytes, args: bytes) -> None:
        if self._tls:
            self._reject(line, r.R503_TLS_ACTIVE)
        elif not self._opts.tls_available:
            self._reject(line, r.R502_NOT_IMPLEMENTED)
        elif args:
            self._reject(line, r.R501_NO_ARGUMENTS)  # RFC 3207 4: no parameters
        else:
            self._write(r.R220_READY_TLS)
            # RFC 3207 4.2 and CVE-2011-0411: whatever was pipelined after
            # STARTTLS in plaintext must not be read as a command after it.
            self._buf, self._pos = b"", 0
            self._reset_transaction()
            self._state = STARTTLS
            self._events.append(StartTls())

    def _cmd_auth(self, line: bytes, args: bytes) -> None:
        opts = self._opts
        if not opts.auth_mechanisms:
            self._reject(line, r.R502_NOT_IMPLEMENTED)
            return
        refused = refusal(self._state, b"AUTH")
        if refused is None:
            if not self._esmtp:
                refused = r.R503_EHLO_FIRST
            elif self._user is not None:
                refused = r.R503_ALREADY_AUTHENTICATED
            elif not auth_offered(opts, self._tls):
                refused = r.R538_ENCRYPTION_REQUIRED
        if refused is not None:
            self._reject(line, refused)
            return
        parts = args.split(b" ")
        if len(parts) > 2 or not parts[0]:
            self._reject(line, r.R501_SYNTAX)
            return
        try:
            exchange = SaslExchange(parts[0].decode("ascii", "replace"), opts.auth_mechanisms)
            step = exchange.start(parts[1] if len(parts) == 2 else None)
        except SaslError as exc:
            self._reject(line, exc.reply)
            return
        self._sasl = exchange
        self._sasl_step(step)


_HANDLERS: dict[bytes, Callable[[CommandHandlers, bytes, bytes], None]] = {
    b"HELO": CommandHandlers._cmd_helo,
    b"EHLO": CommandHandlers._cmd_ehlo,
    b"MAIL": CommandHandlers._cmd_mail,
    b"RCPT": CommandHandlers._cmd_rcpt,
    b"DATA": CommandHandlers._cmd_data,
    b"BDAT": CommandHandlers._cmd_bdat,
    b"RSET": CommandHandlers._cmd_rset,
    b"NOOP": CommandHandlers._cmd_noop,
    b"QUIT": CommandHandlers._cmd_quit,
    b"VRFY": CommandHandlers._cmd_vrfy,
    b"EXPN": CommandHandlers._cmd_expn,
    b"HELP": CommandHandlers._cmd_help,
    b"STARTTLS": CommandHandlers._cmd_starttls,
    b"AUTH": CommandHandlers._cmd_auth,
}
