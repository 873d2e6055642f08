"""SIGKILL the real `goniec serve` while it delivers a few hundred messages to a slow peer.

goniec A (two worker processes, each running a queue runner) first accepts
300 messages over SMTP with delivery switched off, so they wait in its spool;
then it is restarted with delivery on: it looks the destination up through
the loopback DNS server and delivers to a slow SMTP peer on loopback. When a
quarter has arrived the whole process group is SIGKILLed, and A is started
again on the same spool: every message must reach the peer at least once (a
message whose attempt was cut short may arrive twice, never zero times), and
A's spool must end empty.
"""

from __future__ import annotations

import email
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from goniec.testing.dnsserver import ZoneServer

from mailpeers import Sink, logs_of, maildir, sender_server, spool, wait_until  # isort: skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MESSAGES = 300
CLIENTS = 4
WORKERS = 2
PARALLEL = 20  # messages in delivery at once per worker's runner
CONNECTIONS = 8  # to the destination, shared out among the workers


def fill(port: int) -> set[str]:
    """Queue MESSAGES messages in A over SMTP; their Message-IDs."""
    ids: list[set[str]] = [set() for _ in range(CLIENTS)]

    def client(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo(f"client{n}.sender.test")
            for i in range(n, MESSAGES, CLIENTS):
                mid = f"<crash-{i}@sender.test>"
                body = (f"From: load@sender.test\r\nTo: user{i}@crash.test\r\n"
                        f"Subject: crash {i}\r\nMessage-ID: {mid}\r\n\r\nmessage {i}\r\n")
                assert not s.sendmail("load@sender.test", [f"user{i}@crash.test"],
                                      body.encode())
                ids[n].add(mid)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return set().union(*ids)


def message_id(data: bytes) -> str:
    return str(email.message_from_bytes(data)["Message-ID"])


def message_ids(sink: Sink) -> list[str]:
    return [message_id(g.data) for g in sink.received()]


def test_sigkill_during_delivery_loses_nothing(tmp_path: Path, dns: ZoneServer,
                                               zone: dict[str, Any]) -> None:
    zone["crash.test"] = {"MX": [(10, "mx.crash.test")]}
    zone["mx.crash.test"] = {"A": ["127.0.0.1"]}
    with Sink(delay=0.05) as sink:  # 8 connections x 20 messages a second: ~2 s for all
        (tmp_path / "a").mkdir()
        a = sender_server(tmp_path / "a", dns, sink.port, workers=WORKERS, enabled=False,
                          parallel=PARALLEL, connections_per_destination=CONNECTIONS)
        a.start()
        try:
            sent = fill(a.port)
            assert len(sent) == MESSAGES
            assert len(a.spool_ids()) == MESSAGES and sink.count() == 0
            a.stop()
            a.config["delivery"]["enabled"] = True
            a.start()
            wait_until(lambda: sink.count() >= MESSAGES // 4, "the first deliveries",
                       timeout=20, logs=logs_of(a))
            a.kill()  # SIGKILL the server and both workers, in the middle of delivering
            time.sleep(0.2)  # what the dead workers had sent lands at the peer now
            before = message_ids(sink)
            left = [message_id(m.data) for m in spool(a)]
            assert 0 < len(before) < MESSAGES, "killed too late to test anything"
            a.start()  # recovery, then both runners pick up the rest
            wait_until(lambda: not a.spool_ids(), "A's spool to empty", timeout=30,
                       logs=logs_of(a))
        finally:
            a.stop()
        got = message_ids(sink)
    assert set(got) == sent, f"lost: {sorted(sent - set(got))[:10]}"
    # After the restart exactly what was still queued went out, each message once;
    # nothing recorded as delivered before the kill was sent again.
    assert sorted(got[len(before):]) == sorted(left)
    # The duplicates are the attempts cut short by the kill: the peer had the message,
    # A had not heard the 250. At most what the two runners had in delivery.
    duplicates = sum(n - 1 for n in Counter(got).values())
    assert duplicates == len(set(before) & set(left))
    assert duplicates <= WORKERS * PARALLEL
    print(f"delivered before the kill: {len(before)}, left in the spool: {len(left)}, "
          f"duplicates: {duplicates}")
    assert not maildir(a, "sender.test", "load")  # nothing bounced or reported
    assert "Traceback" not in a.log()
