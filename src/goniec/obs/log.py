"""Logging: one event per line, with stable `key=value` fields.

Owns the line format and where lines go (stderr, or a file reopened after
logrotate moves it: `WatchedFileHandler`). A line looks like
`2026-11-26T16:00:00.123Z info goniec.server event=rcpt session=abc rcpt=a@b result="250 2.1.5"`.
Any record, including plain `logger.info("text")` calls and tracebacks, stays
on one line: newlines are escaped. Raises ValueError for an unknown level name.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import TextIO

_HANDLER_MARK = "_goniec_handler"

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "@.:/_-+,;[]<>()*!?#$%&'~^|{}"
)


def format_value(value: object) -> str:
    """A field value, quoted when it holds anything but plain characters."""
    if value is None:
        return "-"
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = value if isinstance(value, str) else str(value)
    if text and all(c in _SAFE for c in text):
        return text
    out = []
    for c in text:
        esc = _ESCAPES.get(c)
        if esc is not None:
            out.append(esc)
        elif c < " " or c == "\x7f":
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class Event:
    """A log message rendered only when a handler formats it (see `log_event`)."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str, fields: dict[str, object]) -> None:
        self.name = name
        self.fields = fields

    def __str__(self) -> str:
        parts = [f"event={format_value(self.name)}"]
        parts += [f"{k}={format_value(v)}" for k, v in self.fields.items()]
        return " ".join(parts)


def log_event(
    logger: logging.Logger, event: str, /, level: int = logging.INFO, **fields: object
) -> None:
    """Log one event with `key=value` fields, e.g. log_event(log, "rcpt", session=sid, rcpt=a).

    Costs one level check when the level is disabled; fields are only turned
    into text when a handler writes the line. `level` is the logging level, so
    it cannot be a field name.
    """
    if logger.isEnabledFor(level):
        logger.log(level, Event(event, fields))


class LineFormatter(logging.Formatter):
    """`<UTC time with ms>Z <level> <logger> <fields>` on exactly one line."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        stamp = f"{time.strftime('%Y-%m-%dT%H:%M:%S', t)}.{int(record.msecs):03d}Z"
        msg = record.msg
        if isinstance(msg, Event) and not record.args:
            body = str(msg)
        else:
            body = f"msg={format_value(record.getMessage())}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            body += f" exc={format_value(record.exc_text)}"
        if record.stack_info:
            body += f" stack={format_value(record.stack_info)}"
        return f"{stamp} {record.levelname.lower()} {record.name} {body}"


def parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def setup_logging(
    level: str | int = "info", log_file: Path | None = None, *, stream: TextIO | None = None
) -> logging.Handler:
    """Send all logging to stderr (or `stream`), or to `log_file` when given.

    Installs one handler on the root logger with `LineFormatter`; calling it
    again replaces the handler it installed before, so it is safe to call twice.
    Creates the log file's directory. Returns the handler.
    """
    numeric = parse_level(level)
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LineFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
