"""Log lines written in a running event loop go out once per loop iteration."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest

from goniec.obs.log import LoopBatchedStream, log_event, setup_logging


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("goniec.test.batching")


def test_lines_in_one_loop_iteration_are_one_write(log: logging.Logger) -> None:
    out = CountingStream()
    handler = setup_logging("info", stream=out)

    async def main() -> None:
        for i in range(5):
            log_event(log, "queued", msg=f"Q{i}")
        assert out.getvalue() == ""  # kept until the iteration's callbacks ran
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert out.writes == 1
        assert [line.split()[-1] for line in out.getvalue().splitlines()] == [
            f"msg=Q{i}" for i in range(5)]

    try:
        asyncio.run(main())
    finally:
        logging.getLogger().removeHandler(handler)


def test_outside_a_loop_every_line_is_written_at_once(log: logging.Logger) -> None:
    out = CountingStream()
    handler = setup_logging("info", stream=out)
    try:
        log_event(log, "started", pid=1)
        assert "event=started pid=1" in out.getvalue() and out.writes == 1
    finally:
        logging.getLogger().removeHandler(handler)


def test_lines_kept_when_the_loop_ends_are_written_by_shutdown_flush(
        log: logging.Logger) -> None:
    out = CountingStream()
    handler = setup_logging("info", stream=out)

    async def main() -> None:
        log_event(log, "last", n=1)

    loop = asyncio.new_event_loop()
    try:
        # The loop stops before it runs the drain it scheduled.
        loop.run_until_complete(main())
    finally:
        loop.close()
    try:
        handler.flush()  # as logging.shutdown() does
        assert "event=last n=1" in out.getvalue()
        handler.flush()  # nothing left: no empty write
        assert out.writes == 1
    finally:
        logging.getLogger().removeHandler(handler)


def test_a_failing_target_loses_the_lines_quietly() -> None:
    target = io.StringIO()
    stream = LoopBatchedStream(target)
    target.close()
    stream.write("x\n")
    stream.flush()  # ValueError from the closed target is not raised
    assert stream.name == ""


def test_file_lines_in_one_iteration_are_flushed_once(tmp_path: Path,
                                                      log: logging.Logger) -> None:
    path = tmp_path / "goniec.log"
    handler = setup_logging("info", path)
    flushes = []
    real_flush = handler.stream.flush  # type: ignore[attr-defined]

    def counting_flush() -> None:
        flushes.append(1)
        real_flush()

    handler.stream.flush = counting_flush  # type: ignore[attr-defined]

    async def main() -> None:
        for i in range(3):
            log_event(log, "queued", msg=f"Q{i}")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    try:
        asyncio.run(main())
        assert len(flushes) == 1
        assert path.read_text().count("event=queued") == 3
        log_event(log, "outside")  # no loop: flushed at once
        assert "event=outside" in path.read_text()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
