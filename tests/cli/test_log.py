"""goniec.obs.log: one event per line, stable keys, quoting, file output, cheap when off."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from goniec.obs.log import Event, format_value, log_event, setup_logging

LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (\S+) (.*)")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = setup_logging("info", stream=out)
    yield out
    logging.getLogger().removeHandler(handler)


def test_event_line(stream: io.StringIO) -> None:
    log_event(logging.getLogger("goniec.server"), "rcpt", session="abc", rcpt="a@b",
              result="250 2.1.5")
    m = LINE.fullmatch(stream.getvalue().rstrip("\n"))
    assert m, stream.getvalue()
    assert m.groups() == ("info", "goniec.server", 'event=rcpt session=abc rcpt=a@b result="250 2.1.5"')


@pytest.mark.parametrize(
    ("value", "text"),
    [("plain", "plain"), ("", '""'), ("a b", '"a b"'), ('say "x"', '"say \\"x\\""'),
     ("a\nb\r\n", '"a\\nb\\r\\n"'), ("k=v", '"k=v"'), ("\x00\x1b", '"\\x00\\x1b"'),
     ("back\\slash", '"back\\\\slash"'), (None, "-"), (True, "true"), (False, "false"),
     (42, "42"), (1.5, "1.5"), ("<a@b>", "<a@b>"), ("zażółć", '"zażółć"')],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_every_record_is_one_line(stream: io.StringIO) -> None:
    log = logging.getLogger("goniec.test")
    log.warning("two\nlines %s", "and\nargs")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith('warning goniec.test msg="two\\nlines and\\nargs"')
    assert ' error goniec.test msg=failed exc="Traceback' in lines[1]
    assert "ValueError: boom" in lines[1]


def test_disabled_level_renders_nothing(stream: io.StringIO) -> None:
    class Boom:
        def __str__(self) -> str:
            raise AssertionError("rendered although debug is off")

    log_event(logging.getLogger("goniec.server"), "noise", level=logging.DEBUG, x=Boom())
    assert stream.getvalue() == ""
    assert str(Event("e", {"a": 1})) == "event=e a=1"


def test_level_and_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "goniec.log"
    handler = setup_logging("warning", path)
    try:
        log = logging.getLogger("goniec.x")
        log_event(log, "hidden")
        log_event(log, "shown", level=logging.ERROR, n=1)
        path.rename(tmp_path / "logs" / "goniec.log.1")  # logrotate moves the file
        log_event(log, "after_rotate", level=logging.WARNING)
        assert path.read_text().endswith(" warning goniec.x event=after_rotate\n")
        assert " error goniec.x event=shown n=1\n" in (tmp_path / "logs" / "goniec.log.1").read_text()
        again = setup_logging("debug", path)  # replaces, never duplicates
        assert sum(h is again for h in logging.getLogger().handlers) == 1
        assert handler not in logging.getLogger().handlers
        handler = again
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_bad_level() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("loud")
