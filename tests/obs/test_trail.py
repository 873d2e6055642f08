"""The per-message trail: real files, several processes, retention, search."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from goniec.obs import trail as trailmod
from goniec.obs.trail import NullTrail, Trail


def _lines(directory: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted(directory.glob("trail-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def _writer(directory: str, tag: str, count: int, in_loop: bool) -> None:
    t = Trail(Path(directory), 30, flush_interval=0.01)
    pad = "x" * 300  # long enough that interleaved writes would show

    async def run() -> None:
        for i in range(count):
            t.record(f"{tag}{i}", "received", sender=f"{tag}@a.test", note=pad)
            if i % 50 == 0:
                await asyncio.sleep(0)
        t.flush()

    if in_loop:
        asyncio.run(run())
    else:
        for i in range(count):
            t.record(f"{tag}{i}", "received", sender=f"{tag}@a.test", note=pad)
    t.close()


def test_two_processes_append_whole_lines(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), "a", 400, True)),
             ctx.Process(target=_writer, args=(str(tmp_path), "b", 400, False))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = _lines(tmp_path)  # json.loads fails on a torn or mixed line
    assert len(lines) == 800
    assert {line["msg"] for line in lines} == {f"{t}{i}" for t in "ab" for i in range(400)}
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert (tmp_path / f"trail-{day}.jsonl").exists()


def test_line_shape(tmp_path: Path) -> None:
    t = Trail(tmp_path, 30)
    t.record("Q1", "received", sender="a@b.test", recipients=["c@d.test"], size=10,
             client="127.0.0.1", session="s1", odd=Path("/x"))
    [line] = _lines(tmp_path)
    assert line["msg"] == "Q1" and line["event"] == "received"
    assert line["recipients"] == ["c@d.test"] and line["odd"] == "/x"
    assert str(line["time"]).endswith("Z") and "T" in str(line["time"])


def test_in_a_loop_lines_wait_for_the_timer_and_shutdown_flushes(tmp_path: Path) -> None:
    t = Trail(tmp_path, 30, flush_interval=0.2)

    async def run() -> int:
        t.record("Q1", "received")
        t.record("Q1", "attempt", host="mx.b.test", reply="250 ok")
        written = len(_lines(tmp_path))
        await asyncio.sleep(0.4)
        assert len(_lines(tmp_path)) == 2
        t.record("Q1", "delivered")  # still buffered when the loop ends
        return written

    assert asyncio.run(run()) == 0  # nothing written on the message's path
    assert len(_lines(tmp_path)) == 2
    import logging
    logging.shutdown()  # what a worker does before os._exit
    assert [x["event"] for x in _lines(tmp_path)] == ["received", "attempt", "delivered"]


def test_retention_removes_old_days(tmp_path: Path) -> None:
    now = time.time()
    day = 86400
    for back in (0, 1, 3, 4, 40):
        name = time.strftime("%Y-%m-%d", time.gmtime(now - back * day))
        (tmp_path / f"trail-{name}.jsonl").write_text("{}\n")
    (tmp_path / "unrelated.txt").write_text("keep")
    t = Trail(tmp_path, 3)
    t.record("Q1", "received")  # the first write looks at old files
    names = sorted(p.name for p in tmp_path.iterdir())
    kept_days = [n for n in names if n.startswith("trail-")]
    assert len(kept_days) == 3  # today, yesterday, three days ago
    assert "unrelated.txt" in names
    assert t.prune(now + 10 * day) == 3


def test_search_newest_files_first_stops_at_received(tmp_path: Path) -> None:
    old = tmp_path / "trail-2000-01-01.jsonl"
    old.write_text(json.dumps({"time": "2000-01-01T00:00:00.000Z", "msg": "Q7",
                               "event": "attempt"}) + "\n")
    t = Trail(tmp_path, 36500)
    t.record("Q7", "received", sender="a@b.test")
    t.record("Q77", "received")  # a longer id that starts the same: not a match
    t.record("Q8", "received", report="Q7")  # mentions Q7, but is not about it
    for i in range(5):
        t.record("Q7", "deferred", reason=f"try {i}")
    found = t.search("Q7")
    assert [e["event"] for e in found] == ["received"] + ["deferred"] * 5
    assert [e["reason"] for e in t.search("Q7", limit=2)] == ["try 3", "try 4"]
    assert t.search("nothing") == []


def test_search_reads_large_files_in_blocks(tmp_path: Path) -> None:
    t = Trail(tmp_path, 30)
    for i in range(6000):  # ~2.4 MB: several blocks, lines across block edges
        t.record(f"M{i}", "attempt", reply="x" * 350)
    t.record("M17", "delivered")
    found = t.search("M17")
    assert [e["event"] for e in found] == ["attempt", "delivered"]


def test_current_is_a_no_op_when_off(tmp_path: Path) -> None:
    trailmod.set_current(None)
    assert isinstance(trailmod.current(), NullTrail)
    trailmod.current().record("Q1", "received")  # nothing happens, nothing raised
    assert trailmod.current().search("Q1") == []
    t = Trail(tmp_path, 30)
    trailmod.set_current(t)
    try:
        trailmod.current().record("Q1", "held", reason="operator")
        assert trailmod.current().search("Q1")[0]["reason"] == "operator"
    finally:
        trailmod.set_current(None)


def test_unwritable_directory_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    t = Trail(blocker / "trail", 30)  # a directory below a file: cannot exist
    t.record("Q1", "received")
    t.flush()


def _fork_child(directory: str) -> None:
    trailmod.current().record("C1", "received")
    trailmod.current().flush()
    os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_fork_flushes_before_and_child_writes_its_own(tmp_path: Path) -> None:
    t = Trail(tmp_path, 30)
    trailmod.set_current(t)
    try:
        async def run() -> None:
            t.record("P1", "received")  # buffered: the loop is running
            pid = os.fork()
            if pid == 0:
                _fork_child(str(tmp_path))
            os.waitpid(pid, 0)

        asyncio.run(run())
        t.flush()
        msgs = sorted(str(x["msg"]) for x in _lines(tmp_path))
        assert msgs == ["C1", "P1"]  # once each: the child did not write the parent's
    finally:
        trailmod.set_current(None)


def test_a_loop_that_ended_before_its_timer_does_not_block_later_writes(tmp_path: Path) -> None:
    t = Trail(tmp_path, 30, flush_interval=60)

    async def one(event: str) -> None:
        t.record("Q1", event)

    asyncio.run(one("received"))  # buffered; the loop closes before the timer
    t.record("Q1", "released")  # no loop now: written at once, with what was waiting
    assert [x["event"] for x in _lines(tmp_path)] == ["received", "released"]
    asyncio.run(one("retried"))
    asyncio.run(one("deleted"))  # a new loop arms its own timer
    t.flush()
    assert [x["event"] for x in _lines(tmp_path)][2:] == ["retried", "deleted"]
