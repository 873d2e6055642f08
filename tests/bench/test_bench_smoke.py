"""Smoke test for the hand-run acceptance benchmark in bench/ (not the benchmark).

Keeps the harness from rotting: one tiny load round with the built-in load
generator against the aiosmtpd baseline on 127.0.0.1, checked against the
server's own count, and the table rendered from it. A few seconds at most.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("aiosmtpd")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # scripts, not a package

import report  # noqa: E402
import scenarios  # noqa: E402
from servers import Aiosmtpd  # noqa: E402


def test_message_is_about_the_asked_size() -> None:
    msg = scenarios.loadgen.build_message(100 * 1024)
    assert msg.endswith(b"\r\n")
    assert 100 * 1024 <= len(msg) < 100 * 1024 + 200
    assert max(len(line) for line in msg.split(b"\r\n")) < 998


def test_one_round_against_aiosmtpd(tmp_path: Path) -> None:
    server = Aiosmtpd()
    server.start(tmp_path)
    try:
        sc = scenarios.Scenario("1KB/s2/reuse", "load", sessions=2, size=1024, count=10, reuse=True)
        row = scenarios.run_scenario(server, sc, "loadgen", timeout=30, rounds=1)
    finally:
        server.stop()
    assert row["ok"], row
    assert row["server_count"] == 10
    row.update(scenario=sc.name, server=server.name, kind=sc.kind, status="ran", target="")
    assert "msg/s" in report.table([row])
