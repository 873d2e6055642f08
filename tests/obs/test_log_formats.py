"""Log formats (line, JSON, W3C) and rotation shared by several processes."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
from pathlib import Path

import pytest

from goniec.config.schema import Config
from goniec.obs import trail as trailmod
from goniec.obs.formats import W3C_FIELDS
from goniec.obs.log import log_event, setup_from_config, setup_logging, trail_from_config

log = logging.getLogger("goniec.server")


def _emit_some() -> None:
    log_event(log, "queued", session="s1", msg="Q1", sender="a b@x.test", client="192.0.2.7",
              rcpt="c@goniec.test", reply="250 2.0.0 Ok: queued as Q1", nrcpt=1)
    log_event(log, "auth", level=logging.WARNING, user="bob", result="failed", time="clash")
    log.info("plain %s with\nnewline", "text")
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("it broke")


def test_positional_signature_still_works(tmp_path: Path) -> None:
    handler = setup_logging("debug", tmp_path / "sub" / "goniec.log")
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    _emit_some()
    handler.flush()
    lines = (tmp_path / "sub" / "goniec.log").read_text().splitlines()
    assert len(lines) == 4 and " event=queued session=s1 msg=Q1 " in lines[0]


def test_json_lines_parse_back(tmp_path: Path) -> None:
    path = tmp_path / "goniec.log"
    setup_logging("info", path, format="json").flush()
    _emit_some()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 4
    q = rows[0]
    assert q["level"] == "info" and q["logger"] == "goniec.server" and q["event"] == "queued"
    assert q["msg"] == "Q1" and q["sender"] == "a b@x.test" and q["nrcpt"] == 1
    assert q["time"].endswith("Z")
    assert rows[1]["time_"] == "clash" and rows[1]["level"] == "warning"  # no field overwrites
    assert rows[2] == {**rows[2], "msg": "plain text with\nnewline"} and "event" not in rows[2]
    assert "ValueError: broken" in rows[3]["exc"] and rows[3]["msg"] == "it broke"


def test_w3c_header_and_field_count(tmp_path: Path) -> None:
    path = tmp_path / "goniec.log"
    setup_logging("info", path, format="w3c", hostname="mx.goniec.test")
    _emit_some()
    text = path.read_text().splitlines()
    assert text[0].startswith("#Software: Goniec ")
    assert text[1] == "#Version: 1.0" and text[2].startswith("#Date: ")
    assert text[3] == "#Fields: " + " ".join(W3C_FIELDS)
    rows = [line.split(" ") for line in text[4:]]
    assert len(rows) == 4 and all(len(row) == len(W3C_FIELDS) for row in rows)
    q = dict(zip(W3C_FIELDS, rows[0], strict=True))
    assert q["c-ip"] == "192.0.2.7" and q["cs-method"] == "queued" and q["sc-status"] == "250"
    assert q["x-session"] == "s1" and q["x-msg"] == "Q1" and q["x-rcpt"] == "c@goniec.test"
    assert q["s-computername"] == "mx.goniec.test" and q["cs-username"] == "-"
    assert "sender=a+b@x.test" in q["cs-uri-query"]
    plain = dict(zip(W3C_FIELDS, rows[2], strict=True))
    assert plain["x-msg"] == "-" and plain["cs-uri-query"].startswith("msg=plain+text+with%0A")


def test_w3c_to_a_stream_starts_with_the_header() -> None:
    out = io.StringIO()
    setup_logging("info", None, stream=out, format="w3c")
    _emit_some()
    lines = out.getvalue().splitlines()
    assert lines[3].startswith("#Fields: ") and len(lines) == 8


def test_unknown_format_or_rotation() -> None:
    with pytest.raises(ValueError):
        setup_logging("info", None, format="xml")
    with pytest.raises(ValueError):
        setup_logging("info", None, rotate="weekly")


def _spam(path: str, fmt: str, tag: str, count: int) -> None:
    setup_logging("info", Path(path), format=fmt, rotate="size", max_size=20_000, keep=50)
    for i in range(count):
        log_event(log, "rcpt", session=tag, msg=f"{tag}{i}", pad="y" * 150)
    logging.shutdown()


@pytest.mark.parametrize("fmt", ["line", "w3c"])
def test_size_rotation_with_two_processes(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "goniec.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spam, args=(str(path), fmt, tag, 600)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
        assert p.exitcode == 0
    files = [path, *sorted(tmp_path.glob("goniec.log.*"))]
    assert len(files) > 5  # ~250 kB in 20 kB files
    seen: set[str] = set()
    for f in files:
        assert f.stat().st_size < 40_000
        lines = f.read_text().splitlines()
        if fmt == "w3c":
            assert lines[0].startswith("#Software: ") and lines[3].startswith("#Fields: ")
            assert sum(line.startswith("#Fields:") for line in lines) == 1
            lines = lines[4:]
        for line in lines:
            assert line.count("y" * 150) == 1  # whole lines, never two mixed
            token = "msg=" if fmt == "line" else " "
            seen.add(line.split(token)[1].split(" ")[0] if fmt == "line" else line.split(" ")[9])
    assert seen == {f"{t}{i}" for t in "ab" for i in range(600)}


def test_daily_rotation_handler(tmp_path: Path) -> None:
    from concurrent_log_handler import ConcurrentTimedRotatingFileHandler

    handler = setup_logging("info", tmp_path / "goniec.log", format="w3c", rotate="daily",
                            keep=3)
    assert isinstance(handler, ConcurrentTimedRotatingFileHandler)
    _emit_some()
    lines = (tmp_path / "goniec.log").read_text().splitlines()
    assert lines[0].startswith("#Software: ") and len(lines) == 8


def _config(tmp_path: Path, **log: object) -> Config:
    return Config.model_validate({"server": {"data_dir": str(tmp_path / "data"),
                                             "log_file": str(tmp_path / "goniec.log"),
                                             "hostname": "mx.goniec.test"},
                                  "log": log})


def test_setup_from_config_and_trail_from_config(tmp_path: Path) -> None:
    config = _config(tmp_path, format="json", rotate="size", max_size="1MB", keep=2)
    setup_from_config(config)
    log_event(log, "hello", who="x")
    assert json.loads((tmp_path / "goniec.log").read_text())["event"] == "hello"
    try:
        made = trail_from_config(config)
        assert made is not None and made.directory == tmp_path / "data" / "trail"
        assert trailmod.current() is made and trail_from_config(config) is made
        assert trail_from_config(_config(tmp_path, trail=False)) is None
        assert isinstance(trailmod.current(), trailmod.NullTrail)
    finally:
        trailmod.set_current(None)
