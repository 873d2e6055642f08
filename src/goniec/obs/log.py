"""Logging: one event per line, with stable `key=value` fields.

Owns the line format and where lines go (stderr, or a file reopened after
logrotate moves it: `WatchedFileHandler`). A line looks like
`2026-11-26T16:00:00.123Z info goniec.server event=rcpt session=abc rcpt=a@b result="250 2.1.5"`.
Any record, including plain `logger.info("text")` calls and tracebacks, stays
on one line: newlines are escaped. `[log] format` may ask for JSON lines or the
W3C extended format instead (goniec.obs.formats), and `[log] rotate` for
rotation by size or by day with concurrent-log-handler, which several worker
processes can share (a lock file next to the log). `setup_from_config` and
`trail_from_config` turn the config into these. Raises ValueError for an
unknown level name, format or rotation.

Inside a running event loop, the lines to stderr (or `stream`) and to a
`WatchedFileHandler` file go out once per loop iteration, all together
(`LoopBatchedStream`, `_BatchedWatchedFile`), instead of one write() per line:
a write to a file that shares its file system with the spool can wait for
the journal commit of a concurrent fsync, and cost 0.2 ms of CPU per
accepted message here. Lines are held only until the loop has run the
callbacks that were ready, and written at once outside a loop, at fork and
by `logging.shutdown()`; a SIGKILL can lose the lines of that one iteration.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from goniec.config.schema import Config
    from goniec.obs.trail import Trail

_HANDLER_MARK = "_goniec_handler"

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "@.:/_-+,;[]<>()*!?#$%&'~^|{}"
)
# The same set as one regex: a C-speed check, where a Python loop over the
# characters cost most of a log line (several lines per accepted message).
_SAFE_TEXT = re.compile("[" + re.escape("".join(sorted(_SAFE))) + "]+").fullmatch
# What a record made by `log_event` says for its source: finding the caller
# (a walk up the stack per line) is skipped, no format prints it.
_NO_SOURCE = "(unknown file)"


def format_value(value: object) -> str:
    """A field value, quoted when it holds anything but plain characters."""
    if value is None:
        return "-"
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = value if isinstance(value, str) else str(value)
    if _SAFE_TEXT(text):
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
    it cannot be a field name. The record carries no source location: it is
    made directly, as `Logger.log` would, minus the stack walk (the hot events
    of every message come through here).
    """
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(logger.name, level, _NO_SOURCE, 0,
                                        Event(event, fields), (), None))


class LineFormatter(logging.Formatter):
    """`<UTC time with ms>Z <level> <logger> <fields>` on exactly one line."""

    _second = -1  # the second `_prefix` was made for: strftime once a second, not a line
    _prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        stamp = f"{self._prefix}.{int(record.msecs):03d}Z"
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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopBatchedStream:
    """A handler's text stream that, in a running event loop, writes once per iteration.

    `write` only keeps the text; `flush` (the handler's, after every line)
    schedules one `drain` with `call_soon` in the loop's thread, or drains at
    once anywhere else (another thread, no loop). A failed write drops the
    lines, as logging does with a line it cannot write.
    """

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        _batched.add(self)

    @property
    def name(self) -> str:
        return str(getattr(self.target, "name", ""))

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        loop = _running_loop()
        if loop is None:
            self.drain()
        elif self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self.drain)

    def drain(self) -> None:
        """Write out everything kept, now."""
        with self._lock:
            self._scheduled_on = None
            if not self._parts:
                return
            text = "".join(self._parts)
            self._parts.clear()
            try:
                self.target.write(text)
                self.target.flush()
            except (OSError, ValueError):
                pass


class _BatchedWatchedFile(logging.handlers.WatchedFileHandler):
    """`WatchedFileHandler` whose flush after each line waits, in a running loop, for the
    end of the loop iteration (its file is block-buffered: lines gather there)."""

    _scheduled_on: asyncio.AbstractEventLoop | None = None

    def flush(self) -> None:
        loop = _running_loop()
        if loop is None:
            super().flush()
        elif self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._scheduled_on = None
        super().flush()


_batched: weakref.WeakSet[LoopBatchedStream] = weakref.WeakSet()


def _drain_all() -> None:
    for stream in list(_batched):
        stream.drain()


os.register_at_fork(before=_drain_all)  # a child must not write its parent's lines again


def parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


DEFAULT_MAX_SIZE = 100 * 1000 * 1000
DEFAULT_KEEP = 14


def setup_logging(
    level: str | int = "info", log_file: Path | None = None, *, stream: TextIO | None = None,
    format: str = "line", rotate: str = "none", max_size: int = DEFAULT_MAX_SIZE,
    keep: int = DEFAULT_KEEP, hostname: str = "",
) -> logging.Handler:
    """Send all logging to stderr (or `stream`), or to `log_file` when given.

    format: "line" (`LineFormatter`), "json" or "w3c" (goniec.obs.formats; the
    W3C header starts every new file, after rotation too). rotate (files only):
    "none" (`WatchedFileHandler`: logrotate moves the file, we reopen it),
    "size" (at `max_size` bytes) or "daily" (at UTC midnight), keeping `keep`
    rotated files. hostname: the W3C s-computername (default: the node name).
    Installs one handler on the root logger; calling it again replaces the
    handler it installed before, so it is safe to call twice. Creates the log
    file's directory. Returns the handler.
    """
    from goniec.obs import formats

    numeric = parse_level(level)
    if format not in ("line", "json", "w3c"):
        raise ValueError(f"unknown log format {format!r}")
    if rotate not in ("none", "size", "daily"):
        raise ValueError(f"unknown log rotation {rotate!r}")
    formatter: logging.Formatter
    if format == "json":
        formatter = formats.JsonFormatter()
    elif format == "w3c":
        formatter = formats.W3CFormatter(hostname)
    else:
        formatter = LineFormatter()
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = _file_handler(log_file, rotate, max_size, keep)
        if isinstance(formatter, formats.W3CFormatter):
            formats.add_header(handler, formatter.header)
    else:
        out = stream if stream is not None else sys.stderr
        if isinstance(formatter, formats.W3CFormatter):
            out.write(formatter.header() + "\n")
        handler = logging.StreamHandler(LoopBatchedStream(out))  # type: ignore[arg-type]
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler


def _file_handler(path: Path, rotate: str, max_size: int, keep: int) -> logging.Handler:
    if rotate == "none":
        return _BatchedWatchedFile(path, encoding="utf-8")
    from concurrent_log_handler import (
        ConcurrentRotatingFileHandler,
        ConcurrentTimedRotatingFileHandler,
    )

    if rotate == "size":
        return ConcurrentRotatingFileHandler(str(path), maxBytes=max_size, backupCount=keep,
                                             encoding="utf-8")
    # Daily at UTC midnight (the lines' times are UTC too): goniec.log.YYYY-MM-DD.
    handler: logging.Handler = ConcurrentTimedRotatingFileHandler(
        str(path), when="midnight", utc=True, backupCount=keep, encoding="utf-8")
    return handler


def setup_from_config(config: Config, *, stream: TextIO | None = None) -> logging.Handler:
    """`setup_logging` from server.log_level, server.log_file and the [log] section."""
    section = config.log
    return setup_logging(config.server.log_level, config.log_path, stream=stream,
                         format=section.format, rotate=section.rotate,
                         max_size=section.max_size, keep=section.keep,
                         hostname=config.server.hostname)


def trail_from_config(config: Config) -> Trail | None:
    """The per-message trail in data_dir/trail, made this process's `trail.current()`;
    None (and the trail off) when `[log] trail = false`. Calling it again with the
    same settings returns the trail already in place."""
    from goniec.obs import trail

    if not config.log.trail:
        trail.set_current(None)
        return None
    directory, days = config.data_path / "trail", config.log.trail_days
    now = trail.current()
    if isinstance(now, trail.Trail) and now.directory == directory and now.days == days:
        return now
    made = trail.Trail(directory, days)
    trail.set_current(made)
    return made
