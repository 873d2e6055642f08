"""The real `goniec serve`: one message leaves a `received` line in the trail and a
`queued` event that search_log finds in the JSON log."""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

import pytest

from goniec.obs.logsearch import search_log
from goniec.testing.process import make_server

pytestmark = pytest.mark.e2e


def test_received_message_is_in_the_trail_and_the_log(tmp_path: Path) -> None:
    log_file = tmp_path / "goniec.log"
    server = make_server(tmp_path, server={"workers": 2, "log_file": str(log_file)},
                         log={"format": "json"},
                         listeners=[{"name": "smtp", "tls": "none", "auth": "none"}]).start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as s:
            s.ehlo("client.goniec.test")
            s.mail("sender@client.goniec.test")
            s.rcpt("postmaster@goniec.test")
            code, reply = s.data(b"Subject: trail\r\n\r\nhello\r\n")
        assert code == 250
        qid = reply.decode().rsplit(" ", 1)[-1]
    finally:
        assert server.stop() == 0  # a clean stop flushes the trail
    files = sorted((server.data_dir / "trail").glob("trail-*.jsonl"))
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    [received] = [e for e in lines if e["msg"] == qid and e["event"] == "received"]
    assert received["sender"] == "sender@client.goniec.test"
    assert received["recipients"] == ["postmaster@goniec.test"]
    assert received["client"] == "127.0.0.1" and received["size"] > 0
    deadline = time.monotonic() + 5
    while not (found := search_log(log_file, msg=qid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(e["event"] == "queued" for e in found)
