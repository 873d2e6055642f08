"""The client core: session sequence, pipelining, parameters and local refusals."""

from __future__ import annotations

import pytest

from goniec import replies as r
from goniec.errors import Reply, SMTPError
from goniec.model import Envelope, MailParams, Recipient
from goniec.protocol import DataChunk, Helo, LocalProtocolError, MailFrom, RcptTo
from goniec.protocol.client import (
    Closed,
    Greeting,
    HelloDone,
    ResetDone,
    SendBody,
    StartTlsDone,
    TransactionDone,
)

from .client_harness import CLIENT, Pair, Scripted
from .harness import HELLO, body_of


def env(*rcpts: str, sender: str = "a@example.org", **params: object) -> Envelope:
    return Envelope(sender, tuple(Recipient(x) for x in rcpts or ("b@example.net",)),
                    MailParams(**params))


def send(pair: Pair, envelope: Envelope, body: bytes, *, size: int | None = None
         ) -> TransactionDone:
    pair.client.start_transaction(envelope, size=size)
    new = pair.pump()
    if any(isinstance(e, SendBody) for e in new):
        pair.client.send_body(body)
        pair.client.end_body()
        new = pair.pump()
    done = [e for e in new if isinstance(e, TransactionDone)]
    assert len(done) == 1, new
    return done[0]


def test_session_against_the_server_core() -> None:
    pair = Pair()
    [greeting] = pair.pump()
    assert isinstance(greeting, Greeting) and greeting.reply.code == 220
    pair.client.hello()
    [hello] = pair.pump()
    assert isinstance(hello, HelloDone) and hello.extended
    ext = pair.client.extensions
    assert ext.pipelining and ext.chunking and ext.dsn and ext.smtputf8 and ext.eightbitmime
    assert ext.size == 10 * 1024 * 1024 and ext.enhanced_status_codes
    assert not ext.starttls and ext.auth == frozenset()
    done = send(pair, env("b@example.net", "c@example.net"), b"Subject: hi\r\n\r\nbody\r\n")
    assert [x.code if x else None for x in done.replies] == [250, 250]
    assert done.final == r.R250_QUEUED and done.dsn and done.interrupted is None
    assert body_of(pair.server.events) == b"Subject: hi\r\n\r\nbody\r\n"
    pair.client.quit()
    [closed] = pair.pump()
    assert isinstance(closed, Closed) and closed.reason == "quit" and closed.reply is not None
    assert closed.reply.code == 221 and pair.client.closed


def test_ehlo_refused_with_5xx_falls_back_to_helo() -> None:
    # RFC 5321 3.2
    pair = Pair(answers={Helo: lambda e: r.R502_NOT_IMPLEMENTED if e.extended else HELLO})
    pair.ready()
    hello = pair.events[-1]
    assert isinstance(hello, HelloDone) and not hello.extended and hello.reply.code == 250
    assert pair.wire == f"EHLO {CLIENT}\r\nHELO {CLIENT}\r\n".encode()
    assert not pair.client.esmtp and pair.client.extensions.keywords == {}
    # Without extensions: no parameters at all, DATA (no BDAT), one command at a time.
    done = send(pair, env(ret="HDRS", envid="x", body="8BITMIME"), b"x\r\n", size=3)
    assert done.replies[0] == r.R250_QUEUED and not done.dsn
    assert b"MAIL FROM:<a@example.org>\r\n" in pair.wire and b"BDAT" not in pair.wire


def test_ehlo_4xx_is_no_fallback() -> None:
    s = Scripted()
    s.reply(b"220 mx.test\r\n")
    s.client.hello()
    s.sent()
    [hello] = s.reply(b"451 4.3.0 try later\r\n")
    assert isinstance(hello, HelloDone) and hello.reply.code == 451 and s.sent() == b""


def test_helo_only_option_sends_helo() -> None:
    pair = Pair({"esmtp": False})
    pair.ready()
    assert pair.wire == f"HELO {CLIENT}\r\n".encode()
    assert isinstance(pair.events[-1], HelloDone)


def test_pipelining_sends_mail_rcpts_and_data_in_one_write() -> None:
    s = Scripted(chunking=False)
    s.ehlo("PIPELINING", "SIZE 1000", "DSN", "8BITMIME")
    s.client.start_transaction(env("b@x.example", "c@x.example"), size=12)
    assert s.sent() == (
        b"MAIL FROM:<a@example.org> SIZE=12\r\n"
        b"RCPT TO:<b@x.example>\r\nRCPT TO:<c@x.example>\r\nDATA\r\n"
    )
    assert s.client.awaiting == "MAIL"
    assert s.reply(b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n") == []
    [ev] = s.reply(b"354 go\r\n")
    assert isinstance(ev, SendBody)
    s.client.send_body(b"hello\n")
    s.client.end_body()
    assert s.sent() == b"hello\r\n.\r\n"
    assert s.client.awaiting == "DOT"
    [done] = s.reply(b"250 2.0.0 queued as X\r\n")
    assert isinstance(done, TransactionDone)
    assert done.replies[0] == Reply(250, "2.0.0", "queued as X")
    assert done.replies[1] == Reply(550, "5.1.1", "no such user")


def test_without_pipelining_one_command_per_round_trip() -> None:
    s = Scripted()
    s.ehlo("SIZE")
    s.client.start_transaction(env("b@x.example", "c@x.example"))
    assert s.sent() == b"MAIL FROM:<a@example.org>\r\n"
    s.reply(b"250 ok\r\n")
    assert s.sent() == b"RCPT TO:<b@x.example>\r\n"
    s.reply(b"250 ok\r\n")
    assert s.sent() == b"RCPT TO:<c@x.example>\r\n"
    s.reply(b"250 ok\r\n")
    assert s.sent() == b"DATA\r\n"
    assert isinstance(s.reply(b"354 go\r\n")[0], SendBody)


def test_mail_refused_decides_every_recipient() -> None:
    pair = Pair(answers={MailFrom: r.R553_SENDER_NOT_OWNED})
    pair.ready()
    done = send(pair, env("b@x.example", "c@x.example"), b"x\r\n")
    assert done.replies == (r.R553_SENDER_NOT_OWNED, r.R553_SENDER_NOT_OWNED)
    assert done.final is None
    # The server transaction never opened, so no RSET before the next MAIL.
    pair.server.answers[MailFrom] = r.R250_SENDER_OK
    n = len(pair.wire)
    send(pair, env(), b"x\r\n")
    assert not pair.wire[n:].startswith(b"RSET")


def test_all_recipients_refused_then_rset_before_next_transaction() -> None:
    pair = Pair(answers={RcptTo: r.R550_UNKNOWN_USER})
    pair.ready()
    done = send(pair, env("b@x.example"), b"x\r\n")
    assert done.replies == (r.R550_UNKNOWN_USER,)
    pair.server.answers[RcptTo] = r.R250_RECIPIENT_OK
    n = len(pair.wire)
    done = send(pair, env("c@x.example"), b"second\r\n")
    assert pair.wire[n:].startswith(b"RSET\r\nMAIL FROM:")
    assert done.replies == (r.R250_QUEUED,)
    assert body_of(pair.server.events).endswith(b"second\r\n")


def test_all_refused_without_pipelining_sends_no_data() -> None:
    s = Scripted()
    s.ehlo()
    s.client.start_transaction(env())
    s.sent()
    s.reply(b"250 ok\r\n")
    s.sent()
    [done] = s.reply(b"550 5.1.1 unknown\r\n")
    assert isinstance(done, TransactionDone) and done.replies[0].code == 550
    assert s.sent() == b""
    s.client.start_transaction(env())
    assert s.sent() == b"RSET\r\n"
    s.reply(b"250 ok\r\n")
    assert s.sent().startswith(b"MAIL FROM:")


def test_data_354_with_no_valid_recipient_gets_an_empty_end_of_data() -> None:
    # RFC 2920 3.1: a server that answers DATA with 354 anyway gets "." at once.
    s = Scripted(chunking=False)
    s.ehlo("PIPELINING")
    s.client.start_transaction(env())
    s.sent()
    assert s.reply(b"250 ok\r\n550 no\r\n354 go\r\n") == []
    assert s.sent() == b".\r\n"
    [done] = s.reply(b"554 no valid recipients\r\n")
    assert isinstance(done, TransactionDone) and done.replies[0].code == 550


def test_data_refused_decides_the_accepted_recipients() -> None:
    s = Scripted(chunking=False)
    s.ehlo("PIPELINING")
    s.client.start_transaction(env("b@x.example", "c@x.example"))
    s.sent()
    [done] = s.reply(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n451 4.3.0 later\r\n")
    assert isinstance(done, TransactionDone)
    assert [x.code for x in done.replies if x] == [451, 550]


def test_dsn_parameters_passed_on_when_offered() -> None:
    pair = Pair()
    pair.ready()
    rcpt = Recipient("b@x.example", frozenset({"SUCCESS", "FAILURE"}), "rfc822;b+x@x.example")
    envelope = Envelope("a@example.org", (rcpt,), MailParams(ret="HDRS", envid="id 1+2"))
    done = send(pair, envelope, b"x\r\n", size=3)
    assert done.dsn
    assert b"MAIL FROM:<a@example.org> SIZE=3 RET=HDRS ENVID=id+201+2B2\r\n" in pair.wire
    assert b"RCPT TO:<b@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@x.example\r\n" \
        in pair.wire
    mail = next(e for e in pair.server.events if isinstance(e, MailFrom))
    assert mail.params.envid == "id 1+2" and mail.params.ret == "HDRS"
    got = next(e for e in pair.server.events if isinstance(e, RcptTo)).recipient
    assert got == rcpt


def test_dsn_parameters_dropped_without_dsn() -> None:
    pair = Pair(dsn=False)
    pair.ready()
    rcpt = Recipient("b@x.example", frozenset({"SUCCESS"}), "rfc822;b@x.example")
    done = send(pair, Envelope("a@example.org", (rcpt,), MailParams(ret="FULL", envid="e")),
                b"x\r\n")
    assert not done.dsn and done.replies[0] == r.R250_QUEUED
    assert b"NOTIFY" not in pair.wire and b"RET=" not in pair.wire and b"ENVID" not in pair.wire


def test_notify_never_stands_alone() -> None:
    s = Scripted()
    s.ehlo("DSN", "PIPELINING")
    s.client.start_transaction(Envelope("a@x.example", (
        Recipient("b@x.example", frozenset({"NEVER"})),
        Recipient("c@x.example", frozenset({"DELAY", "FAILURE", "SUCCESS"})))))
    wire = s.sent()
    assert b"RCPT TO:<b@x.example> NOTIFY=NEVER\r\n" in wire
    assert b"RCPT TO:<c@x.example> NOTIFY=SUCCESS,FAILURE,DELAY\r\n" in wire


def test_smtputf8_needed_and_not_offered_is_refused_locally() -> None:
    pair = Pair(smtputf8=False)
    pair.ready()
    n = len(pair.wire)
    for envelope in (env(sender="ü@example.org"), env("ß@x.example"), env(smtputf8=True)):
        with pytest.raises(SMTPError) as info:
            pair.client.start_transaction(envelope)
        assert info.value.reply.code == 553 and info.value.reply.enhanced == "5.6.7"
    assert len(pair.wire) == n and pair.client.data_to_send() == b""


def test_smtputf8_sent_when_needed_and_offered() -> None:
    pair = Pair()
    pair.ready()
    done = send(pair, env("ß@x.example"), b"x\r\n")
    assert done.replies[0] == r.R250_QUEUED
    assert b"MAIL FROM:<a@example.org> SMTPUTF8\r\n" in pair.wire
    assert "RCPT TO:<ß@x.example>".encode() in pair.wire
    # ASCII envelope without SMTPUTF8 in MAIL: no SMTPUTF8 parameter.
    n = len(pair.wire)
    send(pair, env(), b"x\r\n")
    assert b"SMTPUTF8" not in pair.wire[n:]


def test_size_over_the_servers_limit_is_refused_locally() -> None:
    pair = Pair(max_message_size=100)
    pair.ready()
    with pytest.raises(SMTPError) as info:
        pair.client.start_transaction(env(), size=101)
    assert info.value.reply.code == 552 and info.value.reply.enhanced == "5.3.4"
    assert "101" in info.value.reply.text and "100" in info.value.reply.text


def test_8bitmime_to_a_server_without_it() -> None:
    pair = Pair(eightbitmime=False)
    pair.ready()
    done = send(pair, env(body="8BITMIME"), "caf\u00e9\r\n".encode())
    assert done.replies[0] == r.R250_QUEUED and b"BODY=" not in pair.wire
    strict = Pair({"strict_8bitmime": True}, eightbitmime=False)
    strict.ready()
    with pytest.raises(SMTPError) as info:
        strict.client.start_transaction(env(body="8BITMIME"))
    assert info.value.reply.enhanced == "5.6.3"
    body = Pair()
    body.ready()
    send(body, env(body="8BITMIME"), b"x\r\n")
    assert b"BODY=8BITMIME" in body.wire


def test_bad_addresses() -> None:
    pair = Pair()
    pair.ready()
    with pytest.raises(SMTPError) as info:
        pair.client.start_transaction(env(sender="a b@x.example"))
    assert info.value.reply.enhanced == "5.1.7"
    done = send(pair, env("ok@x.example", "bad\r\nRSET@x.example", "c@x.example"), b"x\r\n")
    assert done.local == frozenset({1})
    assert [x.enhanced for x in done.replies if x] == ["2.0.0", "5.1.3", "2.0.0"]
    assert b"RSET@" not in pair.wire
    only_bad = send(pair, env("<x>@y"), b"x\r\n")
    assert only_bad.replies[0] is not None and only_bad.replies[0].code == 553
    assert only_bad.mail is None


def test_421_mid_transaction_defers_everything_and_closes() -> None:
    s = Scripted(chunking=False)
    s.ehlo("PIPELINING")
    s.client.start_transaction(env("b@x.example", "c@x.example"))
    s.sent()
    done, closed = s.reply(b"250 ok\r\n250 ok\r\n421 4.4.2 mx.test timeout\r\n")
    assert isinstance(done, TransactionDone) and isinstance(closed, Closed)
    assert [x.code for x in done.replies if x] == [421, 421]
    assert closed.reply is not None and closed.reply.code == 421 and s.client.closed
    assert done.interrupted == "server closing the connection while waiting for the reply to DATA"


def test_connection_lost_mid_transaction_leaves_recipients_undecided() -> None:
    s = Scripted(chunking=False)
    s.ehlo("PIPELINING")
    s.client.start_transaction(env("b@x.example", "c@x.example"))
    s.sent()
    s.reply(b"250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n")
    s.client.send_body(b"x")
    s.client.end_body()
    done, closed = s.reply(b"")
    assert isinstance(done, TransactionDone) and isinstance(closed, Closed)
    assert done.replies[0] is not None and done.replies[0].code == 550
    assert done.replies[1] is None
    assert done.interrupted == (
        "connection closed by server while waiting for the reply to the end of data")
    assert done.data_sent
    # Nothing more is accepted or sent.
    s.client.send_body(b"more")
    assert s.sent() == b"" and s.reply(b"250 ok\r\n") == []


def test_shell_abort_during_body() -> None:
    s = Scripted(chunking=False)
    s.ehlo("PIPELINING")
    s.client.start_transaction(env())
    s.sent()
    s.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    s.client.send_body(b"x\r\n")
    s.client.abort("timeout")
    done, closed = (s.client.next_event(), s.client.next_event())
    assert isinstance(done, TransactionDone) and done.replies == (None,)
    assert done.interrupted == "timeout while sending message data" and not done.data_sent
    assert isinstance(closed, Closed) and closed.stage == "sending message data"


def test_greeting_refused_then_quit() -> None:
    s = Scripted()
    [ev] = s.reply(b"554 5.7.1 go away\r\n")
    assert isinstance(ev, Greeting) and ev.reply == Reply(554, "5.7.1", "go away")
    with pytest.raises(LocalProtocolError):
        s.client.hello()
    s.client.quit()
    assert s.sent() == b"QUIT\r\n"
    [closed] = s.reply(b"221 bye\r\n")
    assert isinstance(closed, Closed) and closed.reason == "quit"


def test_unexpected_and_malformed_replies_close() -> None:
    s = Scripted()
    s.ehlo()
    [closed] = s.reply(b"250 surprise\r\n")
    assert isinstance(closed, Closed) and closed.reason == "unexpected reply from server"
    s = Scripted()
    [closed] = s.reply(b"hello there\r\n")
    assert isinstance(closed, Closed) and closed.reason.startswith("malformed reply")
    s = Scripted()
    s.reply(b"220 ok\r\n")
    s.client.hello()
    [closed] = s.reply(b"250-a\r\n251 b\r\n")
    assert isinstance(closed, Closed) and "different codes" in closed.reason


def test_rset_and_out_of_turn_calls() -> None:
    s = Scripted()
    with pytest.raises(LocalProtocolError):
        s.client.start_transaction(env())
    s.ehlo()
    s.client.reset()
    assert s.sent() == b"RSET\r\n"
    with pytest.raises(LocalProtocolError):
        s.client.quit()  # a reply is awaited
    [ev] = s.reply(b"250 2.0.0 ok\r\n")
    assert isinstance(ev, ResetDone) and ev.reply.code == 250
    with pytest.raises(LocalProtocolError):
        s.client.start_transaction(Envelope("a@x.example", ()))
    with pytest.raises(LocalProtocolError):
        s.client.send_body(b"x")
    with pytest.raises(LocalProtocolError):
        s.client.end_body()
    with pytest.raises(LocalProtocolError):
        s.client.authenticate("CRAM-MD5", "u", "p")


def test_starttls_drops_injected_plaintext() -> None:
    # RFC 3207 4.2, CVE-2011-0411 (client side): a reply injected after the 220
    # in the same read must not be taken as the answer to the next EHLO.
    s = Scripted()
    s.ehlo("STARTTLS", "PIPELINING")
    s.client.starttls()
    assert s.sent() == b"STARTTLS\r\n"
    [ev] = s.reply(b"220 go ahead\r\n250-evil\r\n250 AUTH PLAIN\r\n")
    assert isinstance(ev, StartTlsDone) and ev.reply.code == 220
    assert s.reply(b"250 more injection\r\n") == []
    s.client.tls_started()
    assert s.client.tls_active and s.client.extensions.keywords == {}
    s.client.hello()
    assert s.sent() == f"EHLO {CLIENT}\r\n".encode()
    [hello] = s.reply(b"250-mx.test\r\n250 SIZE 5\r\n")
    assert isinstance(hello, HelloDone) and s.client.extensions.size == 5


def test_starttls_refused() -> None:
    s = Scripted()
    s.ehlo("STARTTLS")
    s.client.starttls()
    [ev] = s.reply(b"454 4.7.0 TLS not available\r\n")
    assert isinstance(ev, StartTlsDone) and ev.reply.code == 454
    with pytest.raises(LocalProtocolError):
        s.client.tls_started()


def test_server_core_sees_the_same_chunks_over_several_transactions() -> None:
    pair = Pair()
    pair.ready()
    for i in range(3):
        done = send(pair, env(f"r{i}@x.example"), f"message {i}\r\n".encode())
        assert done.replies == (r.R250_QUEUED,)
    bodies = [e.data for e in pair.server.events if isinstance(e, DataChunk)]
    assert bodies == [b"message 0\r\n", b"message 1\r\n", b"message 2\r\n"]
    assert pair.client.transactions == 3
