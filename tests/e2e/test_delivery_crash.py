"""SIGKILL the queue runner while it delivers a few hundred messages to a slow peer.

The runner runs in a child process (this file run as a script: the delivery
service of `goniec serve`, over a real spool, with the real SMTP client and a
static resolver pointing at the peer). After the kill a new child takes over
the same spool: every message must reach the peer at least once (a message
whose attempt was cut short may arrive twice, never zero times), and the
spool must end empty.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
MESSAGES = 300


def _child(spool: str, port: int) -> None:
    sys.path.insert(0, str(TESTS))
    from delivery.runner_support import StaticResolver
    from goniec.config.delivery import DeliverySection
    from goniec.delivery.service import build_service
    from goniec.policy.recipients import Directory
    from goniec.queue.fs import FsQueueStore

    async def main() -> None:
        store = FsQueueStore(spool, min_free_space=0)
        await store.recover()
        d = DeliverySection.model_validate({"mx_tls": "none", "connect_timeout": 5,
                                            "command_timeout": 5, "scan_interval": 0.2,
                                            "parallel": 50, "connections_per_destination": 20})
        service = build_service(d, store=store, resolver=StaticResolver({"dest.test": port}),
                                hostname="mx.goniec.test", data_dir=Path(spool).parent,
                                directory=Directory())
        await service.run(asyncio.Event())  # until killed

    asyncio.run(main())


class SlowSink:
    """An aiosmtpd peer that takes 20 ms per message and records the subjects."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        from goniec.testing.process import free_port

        self.lock = threading.Lock()
        self.subjects: list[str] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                     decode_data=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.02)
        data = bytes(envelope.original_content)
        subject = data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
        with self.lock:
            self.subjects.extend([subject] * len(envelope.rcpt_tos))
        return "250 2.0.0 ok"

    def count(self) -> int:
        with self.lock:
            return len(self.subjects)


def _fill(spool: Path) -> list[str]:
    from goniec.model import Envelope, Recipient
    from goniec.queue.api import SubmissionInfo
    from goniec.queue.fs import FsQueueStore
    from goniec.queue.submit import submit

    async def main() -> list[str]:
        store = FsQueueStore(spool, min_free_space=0)
        subjects = []
        try:
            for i in range(MESSAGES):
                subject = f"crash-{i}"
                body = f"Subject: {subject}\r\nFrom: a@sender.test\r\n\r\nmessage {i}\r\n"
                env = Envelope("a@sender.test", (Recipient(f"user{i}@dest.test"),))
                await submit(store, [body.encode()], env, SubmissionInfo("fill"))
                subjects.append(subject)
        finally:
            store.close()
        return subjects

    return asyncio.run(main())


def _start(spool: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, __file__, str(spool), str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _queue_empty(spool: Path) -> bool:
    return not any(n.endswith(".msg") for n in os.listdir(spool / "queue"))


def test_kill_during_delivery_loses_nothing(tmp_path: Path) -> None:
    sink = SlowSink()
    sink.controller.start()
    spool = tmp_path / "spool"
    child = None
    try:
        subjects = _fill(spool)
        child = _start(spool, sink.port, tmp_path / "runner.log")
        deadline = time.monotonic() + 30
        while sink.count() < MESSAGES // 4:
            assert child.poll() is None, (tmp_path / "runner.log").read_text()
            assert time.monotonic() < deadline, "the runner delivers nothing"
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)  # in the middle of delivering
        child.wait(10)
        before = sink.count()
        assert before < MESSAGES, "killed too late to test anything"
        child = _start(spool, sink.port, tmp_path / "runner.log")
        deadline = time.monotonic() + 60
        while not _queue_empty(spool):
            assert child.poll() is None, (tmp_path / "runner.log").read_text()
            assert time.monotonic() < deadline, "the restarted runner did not finish"
            time.sleep(0.05)
        got = set(sink.subjects)
        assert got == set(subjects), f"lost: {sorted(set(subjects) - got)[:10]}"
        duplicates = len(sink.subjects) - len(got)
        print(f"delivered before the kill: {before}, duplicates after restart: {duplicates}")
        assert duplicates <= 60  # at most the attempts under way at the kill
    finally:
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        sink.controller.stop()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
