"""Client side of the protocol core: the mail transaction (RFC 5321 3.3).

Owns `TransactionHandlers`, the part of `ClientConnection` that sends MAIL,
the RCPTs and DATA (all in one write with PIPELINING, RFC 2920 3.1; one
command per reply without), takes the body in pieces (DATA with
dot-stuffing, or BDAT chunks when CHUNKING is offered, RFC 3030, with a
bounded number in flight), sends RSET before the next MAIL when a failed
transaction left one open, and handles each reply of the transaction.
Raises `SMTPError` from `start_transaction` (a local refusal, nothing sent)
and `LocalProtocolError` for calls out of turn. No I/O.
"""

from __future__ import annotations

from goniec.errors import Reply
from goniec.model import Envelope
from goniec.protocol.client_body import BdatFramer, DotStuffer
from goniec.protocol.client_commands import bad_recipients, check_message, plan_transaction
from goniec.protocol.client_core import (
    BODY,
    BODY_END,
    CLOSED,
    READY,
    TRANSACTION,
    ClientCore,
    TxnRecord,
)
from goniec.protocol.exceptions import LocalProtocolError


class TransactionHandlers(ClientCore):
    """start_transaction(), send_body(), end_body() and the replies they get."""

    @property
    def body_wanted(self) -> bool:
        """True while send_body() should get more of the body (False after a
        refused BDAT chunk or once the connection is gone)."""
        return self._state is BODY and (self._txn is None or self._txn.bdat_failed is None)

    @property
    def window_full(self) -> bool:
        """BDAT chunks in flight reached the window: read replies before sending more."""
        if self._state is not BODY or not isinstance(self._body, BdatFramer):
            return False
        window = self._opts.bdat_window if self._ext.pipelining and self._opts.pipelining else 1
        return sum(1 for kind, _ in self._pending if kind == "BDAT") >= window

    @property
    def body_size(self) -> int:
        """Octets of the body sent so far (CRLF-normalised, before dot-stuffing)."""
        return self._body.size if self._body is not None else 0

    def start_transaction(self, envelope: Envelope, *, size: int | None = None) -> None:
        """Send MAIL, the RCPTs and (pipelined, not CHUNKING) DATA.

        size: the message's octets as it will be sent, for SIZE= (RFC 1870).
        Raises SMTPError, with nothing sent, when the server cannot take the
        message (see check_message). Answered by SendBody or TransactionDone.
        """
        self._require(READY, "start_transaction")
        if not envelope.recipients:
            raise LocalProtocolError("a transaction needs at least one recipient")
        check_message(envelope, self._ext, size=size,
                      strict_8bitmime=self._opts.strict_8bitmime)
        local = bad_recipients(envelope)
        plan = plan_transaction(envelope, self._ext, size=size)
        rcpt_lines = tuple(line for i, line in enumerate(plan.rcpts) if i not in local)
        use_bdat = self._opts.chunking and self._ext.chunking
        txn = TxnRecord(len(envelope.recipients), local, plan.mail, rcpt_lines, plan.dsn, use_bdat)
        self._transactions += 1
        self._txn = txn
        self._state = TRANSACTION
        if not txn.slots:
            self._finish()
            return
        pipelined = self._opts.pipelining and self._ext.pipelining
        if self._needs_reset:
            self._needs_reset = False
            self._send(b"RSET\r\n", "RSET-TXN")
            if not pipelined:
                return  # MAIL goes once RSET is answered
        self._send_mail(txn, pipelined)

    def send_body(self, data: bytes) -> None:
        """A piece of the message (any size, any line endings): queued for sending,
        normalised to CRLF and dot-stuffed (DATA) or framed (BDAT)."""
        if self._state is not BODY:
            if self._state is CLOSED:
                return  # the session ended under the shell's feet: nothing to send
            raise LocalProtocolError(f"send_body() in state {self._state}")
        if not self.body_wanted or not data:
            return
        assert self._body is not None
        out = self._body.feed(data)
        if out:
            if isinstance(self._body, BdatFramer):
                self._pending.append(("BDAT", 0))
            self._out.append(out)

    def end_body(self) -> None:
        """The body is complete: send the end of data or the BDAT LAST chunk."""
        if self._state is not BODY:
            if self._state is CLOSED:
                return
            raise LocalProtocolError(f"end_body() in state {self._state}")
        txn, body = self._txn, self._body
        assert txn is not None and body is not None
        txn.body_ended = True
        self._state = BODY_END
        if txn.bdat_failed is not None:
            if not any(kind == "BDAT" for kind, _ in self._pending):
                self._finish()
            return
        self._out.append(body.finish())
        self._pending.append(("DOT", 0))
        txn.end_sent = True

    def _send_mail(self, txn: TxnRecord, pipelined: bool) -> None:
        self._send(txn.mail_line, "MAIL")
        if pipelined:
            # RFC 2920 3.1: MAIL, the RCPTs and DATA go in one group; DATA is last.
            for slot, line in enumerate(txn.rcpt_lines):
                self._send(line, "RCPT", slot)
            txn.next_rcpt = len(txn.rcpt_lines)
            if not txn.bdat:
                self._send(b"DATA\r\n", "DATA")

    # --- transaction replies -----------------------------------------------------------
    def _on_txn_reset(self, reply: Reply, _: int) -> None:
        txn = self._txn
        if txn is not None and txn.mail is None and not any(k == "MAIL" for k, _ in self._pending):
            self._send_mail(txn, False)

    def _on_mail(self, reply: Reply, _: int) -> None:
        txn = self._txn
        assert txn is not None
        txn.mail = reply
        if txn.next_rcpt == 0:  # not pipelined
            if reply.is_positive:
                self._send(txn.rcpt_lines[0], "RCPT", 0)
                txn.next_rcpt = 1
            else:
                self._finish()

    def _on_rcpt(self, reply: Reply, slot: int) -> None:
        txn = self._txn
        assert txn is not None
        txn.rcpt[slot] = reply
        if slot + 1 < len(txn.rcpt_lines):
            if txn.next_rcpt == slot + 1:  # not pipelined: the next one now
                self._send(txn.rcpt_lines[slot + 1], "RCPT", slot + 1)
                txn.next_rcpt += 1
            return
        # The last RCPT is answered.
        if txn.bdat:
            if txn.mail_ok and txn.any_accepted:
                self._start_body(BdatFramer())
            else:
                self._needs_reset = txn.mail_ok
                self._finish()
        elif not any(k == "DATA" for k, _ in self._pending):  # not pipelined
            if txn.mail_ok and txn.any_accepted:
                self._send(b"DATA\r\n", "DATA")
            else:
                self._needs_reset = txn.mail_ok
                self._finish()

    def _on_data(self, reply: Reply, _: int) -> None:
        txn = self._txn
        assert txn is not None
        txn.data = reply
        if reply.code == 354:
            if txn.mail_ok and txn.any_accepted:
                self._start_body(DotStuffer())
            else:
                # RFC 2920 3.1: DATA was accepted though no recipient was: send an
                # empty message's end so that the server ends the transaction.
                self._send(b".\r\n", "DOT-DISCARD")
        else:
            self._needs_reset = txn.mail_ok
            self._finish()

    def _on_bdat(self, reply: Reply, _: int) -> None:
        txn = self._txn
        assert txn is not None
        if not reply.is_positive and txn.bdat_failed is None:
            # RFC 3030 2: a refused chunk fails the transaction; send no more, RSET.
            txn.bdat_failed = reply
            self._needs_reset = True
        if txn.body_ended and not any(k in ("BDAT", "DOT") for k, _ in self._pending):
            self._finish()

    def _on_dot(self, reply: Reply, _: int) -> None:
        txn = self._txn
        assert txn is not None
        txn.final = reply
        if txn.bdat and txn.bdat_failed is not None:
            self._needs_reset = True
        if not any(k == "BDAT" for k, _ in self._pending):
            self._finish()

    def _on_dot_discard(self, reply: Reply, _: int) -> None:
        self._finish()

