"""SIGKILL the real server while several clients send, restart it, lose nothing.

Every message that got a 250 must be in the spool, byte for byte; no message
whose final dot was never sent may be there. (A message whose dot was sent but
whose 250 was lost in the kill may be there or not: the client will retry it,
at worst a duplicate, never a loss.)
"""

from __future__ import annotations

import hashlib
import random
import smtplib
import threading
import time
from pathlib import Path

import pytest

from goniec.testing.process import make_server

pytestmark = pytest.mark.e2e

CLIENTS = 8
KILL_AFTER_ACKS = 300
MAX_SECONDS = 30.0


class Tracker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: dict[str, str] = {}  # subject -> sha256 of the body sent
        self.dot_sent: set[str] = set()
        self.started: set[str] = set()


def make_body(subject: str, rnd: random.Random) -> bytes:
    lines = [f"Subject: {subject}", "From: load@goniec.test", ""]
    lines += [f"{i:05d} " + "x" * rnd.randint(10, 200) for i in range(rnd.randint(5, 120))]
    return ("\r\n".join(lines) + "\r\n").encode()


def client(port: int, n: int, tracker: Tracker, stop: threading.Event) -> None:
    rnd = random.Random(n)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo(f"client{n}.goniec.test")
            for i in range(10_000):
                if stop.is_set():
                    return
                subject = f"crash-{n}-{i}"
                body = make_body(subject, rnd)
                with tracker.lock:
                    tracker.started.add(subject)
                s.mail("load@goniec.test")
                s.rcpt(f"user{n}@goniec.test")
                s.putcmd("data")
                code, _ = s.getreply()
                assert code == 354
                s.send(body + b".\r\n")
                with tracker.lock:
                    tracker.dot_sent.add(subject)
                code, text = s.getreply()
                if code == 250:
                    with tracker.lock:
                        tracker.acked[subject] = hashlib.sha256(body).hexdigest()
    except (OSError, smtplib.SMTPException):
        return  # the server was killed under us


def subject_of(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[9:].decode()
    raise AssertionError("no Subject in stored message")


def original_body(data: bytes) -> bytes:
    # The stored message is our Received: header followed by exactly what was sent.
    return data[data.index(b"Subject: "):]


@pytest.mark.timeout(120)
def test_sigkill_during_load_loses_nothing(tmp_path: Path) -> None:
    server = make_server(tmp_path, listeners=[{"name": "plain", "tls": "none", "auth": "none"}],
                         server={"workers": 2})
    server.start()
    tracker = Tracker()
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(server.port, n, tracker, stop))
               for n in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + MAX_SECONDS
    while len(tracker.acked) < KILL_AFTER_ACKS and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    stop.set()
    for t in threads:
        t.join(15)
    assert len(tracker.acked) >= KILL_AFTER_ACKS, server.log()

    server.start()  # recovery runs at start-up
    try:
        from goniec.queue.fs import FsQueueStore

        store = FsQueueStore(server.data_dir / "spool")
        found: dict[str, str] = {}
        for msg in store.list_messages():
            with store.open_message(msg.id) as fh:
                data = fh.read()
            subject = subject_of(data)
            found[subject] = hashlib.sha256(original_body(data)).hexdigest()
        missing = set(tracker.acked) - set(found)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        for subject, digest in tracker.acked.items():
            assert found[subject] == digest, f"{subject} stored with different bytes"
        unexpected = set(found) - tracker.dot_sent
        assert not unexpected, f"queued without a final dot: {sorted(unexpected)[:5]}"
        assert not list((server.data_dir / "spool" / "incoming").iterdir())
    finally:
        server.stop()
