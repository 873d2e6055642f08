"""search_log on real output of setup_logging, in the line and JSON formats."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from goniec.obs import logsearch
from goniec.obs.log import log_event, setup_logging
from goniec.obs.logsearch import log_files, parse_line, search_log

log = logging.getLogger("goniec.server")


def _write_story(path: Path, fmt: str, sessions: int = 300, **rotation: object) -> None:
    setup_logging("info", path, format=fmt, **rotation)  # type: ignore[arg-type]
    for i in range(sessions):
        sid = f"s{i:04d}"
        log_event(log, "connect", session=sid, client="192.0.2.1", listener="smtp")
        log_event(log, "queued", session=sid, msg=f"Q{i:04d}", sender=f"User{i}@Sender.test",
                  nrcpt=1, client="192.0.2.1")
        log.info("delivery.local msg=Q%04d rcpt=box%d@goniec.test status=delivered", i, i)
        log_event(log, "disconnect", session=sid, reason="quit \"bye\"\n", messages=1)
    logging.getLogger().handlers[-1].flush()


@pytest.mark.parametrize("fmt", ["line", "json"])
def test_search_by_each_criterion(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "goniec.log"
    _write_story(path, fmt)
    by_session = search_log(path, session="s0042")
    assert [e["event"] for e in by_session] == ["disconnect", "queued", "connect"]  # newest first
    assert by_session[0]["fields"]["reason"] == 'quit "bye"\n'  # unescaped
    assert by_session[0]["level"] == "info" and by_session[0]["logger"] == "goniec.server"
    assert by_session[0]["time"].endswith("Z")
    by_msg = search_log(path, msg="Q0042")
    assert [e["event"] for e in by_msg] == ["", "queued"]
    assert by_msg[0]["fields"]["msg"].startswith("delivery.local msg=Q0042 ")
    assert [e["fields"]["session"] for e in search_log(path, address="user42@sender.TEST")] \
        == ["s0042"]
    assert len(search_log(path, text="BOX7")) == 11  # box7, box70..79
    assert search_log(path, session="s0042", msg="Q0043") == []
    newest = search_log(path, limit=3)
    assert [e["event"] for e in newest] == ["disconnect", "", "queued"]
    assert newest[0]["fields"]["session"] == "s0299"
    assert search_log(None, text="x") == [] and search_log(tmp_path / "none.log") == []


def test_rotated_files_are_searched_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "goniec.log"
    _write_story(path, "line", sessions=400, rotate="size", max_size=10_000, keep=100)
    files = log_files(path)
    assert files[0] == path and len(files) > 5
    found = search_log(path, text="event=queued", limit=1000)
    assert [e["fields"]["msg"] for e in found] == [f"Q{i:04d}" for i in reversed(range(400))]
    (tmp_path / "goniec.log.99.gz").write_bytes(b"\x1f\x8b")  # skipped, never opened
    (tmp_path / ".__goniec.lock").touch()
    assert all(not p.name.endswith(".gz") and not p.name.startswith(".")
               for p in log_files(path))


def test_blocks_and_long_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logsearch, "BLOCK", 64)  # lines cross many block edges
    monkeypatch.setattr(logsearch, "MAX_LINE", 400)
    path = tmp_path / "goniec.log"
    setup_logging("info", path)
    log_event(log, "first", session="a1", pad="p" * 100)
    log_event(log, "huge", session="a1", pad="q" * 2000)  # longer than MAX_LINE: skipped
    log_event(log, "last", session="a1", pad="r" * 100)
    logging.getLogger().handlers[-1].flush()
    assert [e["event"] for e in search_log(path, session="a1")] == ["last", "first"]


def test_parse_line_shapes() -> None:
    e = parse_line('2026-11-26T16:00:00.123Z info goniec.server event=rcpt session=abc '
                   'rcpt=a@b.test result="250 2.1.5 \\x01ok"')
    assert e == {"time": "2026-11-26T16:00:00.123Z", "level": "info",
                 "logger": "goniec.server", "event": "rcpt",
                 "fields": {"session": "abc", "rcpt": "a@b.test", "result": "250 2.1.5 \x01ok"}}
    assert parse_line("2026-11-26 16:00:00.123 192.0.2.1 - mx queued - 250 s Q r info") is None
    assert parse_line("{not json") is None
