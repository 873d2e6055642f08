"""The other shapes of an event line: JSON, and the W3C extended format IIS uses.

Owns `JsonFormatter` (one JSON object per line: time, level, logger, event and
the fields; a plain message as "msg", a traceback as "exc") and
`W3CFormatter` with its header (`#Software`, `#Version`, `#Date`, `#Fields`),
plus `add_header`, which makes a file handler write that header at the start
of every new file: when the server starts on an empty file and after each
rotation (the handler holds its lock across processes while it writes, so
only one process writes a new file's header). No I/O of its own; raises nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

from goniec.obs.log import Event, LineFormatter

JSON_KEYS = ("time", "level", "logger", "event")
# The IIS SMTP log's fields where ours map to them; x- fields are ours (W3C allows them).
W3C_FIELDS = ("date", "time", "c-ip", "cs-username", "s-computername", "cs-method",
              "cs-uri-query", "sc-status", "x-session", "x-msg", "x-rcpt", "x-level")
# Event fields that have a column of their own (the rest go to cs-uri-query).
_COLUMNS = {"client": "c-ip", "user": "cs-username", "session": "x-session",
            "msg": "x-msg", "rcpt": "x-rcpt"}
_SAFE = "@:/<>[]().,;!*'~$-_"


def _stamp(record: logging.LogRecord) -> tuple[str, str]:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%d", t), f"{time.strftime('%H:%M:%S', t)}.{int(record.msecs):03d}"


def _fields_and_text(formatter: logging.Formatter, record: logging.LogRecord
                     ) -> tuple[str, dict[str, object]]:
    """(event name or "", fields); a plain message becomes the field msg, a traceback exc."""
    msg = record.msg
    if isinstance(msg, Event) and not record.args:
        event, fields = msg.name, dict(msg.fields)
    else:
        event, fields = "", {"msg": record.getMessage()}
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        fields["exc"] = record.exc_text
    if record.stack_info:
        fields["stack"] = record.stack_info
    return event, fields


def _json_value(value: object) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the time as in the line format (UTC, ms, Z)."""

    def format(self, record: logging.LogRecord) -> str:
        day, clock = _stamp(record)
        event, fields = _fields_and_text(self, record)
        out: dict[str, Any] = {"time": f"{day}T{clock}Z", "level": record.levelname.lower(),
                               "logger": record.name}
        if event:
            out["event"] = event
        for key, value in fields.items():
            out[key + "_" if key in JSON_KEYS else key] = _json_value(value)
        return json.dumps(out, ensure_ascii=False, separators=(", ", ": "))


def _w3c(value: object) -> str:
    """A field: "-" when empty, spaces as "+" like IIS; "+", "%" and controls %-escaped."""
    if value is None or value == "":
        return "-"
    return quote_plus(str(value), safe=_SAFE + "=&")


def w3c_header(software: str) -> str:
    """The directives that start each file (no trailing newline)."""
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    return (f"#Software: {software}\n#Version: 1.0\n#Date: {now}\n"
            f"#Fields: {' '.join(W3C_FIELDS)}")


class W3CFormatter(logging.Formatter):
    """One W3C extended log line per record; event as cs-method, reply code as sc-status."""

    def __init__(self, hostname: str = "", software: str = "") -> None:
        super().__init__()
        self.hostname = _w3c(hostname or os.uname().nodename)
        self.software = software or f"Goniec {_version()}"

    def header(self) -> str:
        return w3c_header(self.software)

    def format(self, record: logging.LogRecord) -> str:
        day, clock = _stamp(record)
        event, fields = _fields_and_text(self, record)
        # A plain message's text stays in the query: x-msg is the queue id of an event.
        cols = {name: fields.pop(key, None) for key, name in _COLUMNS.items()
                if event or key != "msg"}
        reply = fields.get("reply")
        status = str(reply)[:3] if reply is not None and str(reply)[:3].isdigit() else None
        query = "&".join(f"{quote(k)}={quote_plus(str(v), safe=_SAFE)}"
                         for k, v in fields.items() if v is not None)
        row = [day, clock, _w3c(cols["c-ip"]), _w3c(cols["cs-username"]), self.hostname,
               _w3c(event or "log"), query or "-", status or "-", _w3c(cols["x-session"]),
               _w3c(cols.get("x-msg")), _w3c(cols["x-rcpt"]), record.levelname.lower()]
        return " ".join(row)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("goniec")
    except Exception:  # noqa: BLE001 - not installed: the source tree
        return "0"


def add_header(handler: logging.Handler, header: Callable[[], str]) -> None:
    """Make a file handler start every new (empty) file with `header()`.

    Works on the concurrent-log-handler classes (their `clh.do_write`, called under
    their cross-process lock) and on `logging.FileHandler` subclasses (`_open`)."""
    target: Any = getattr(handler, "clh", handler)
    if hasattr(target, "do_write"):
        original_write = target.do_write

        def do_write(msg: str) -> None:
            if target.stream is None or target.stream.closed:
                target.stream = target.do_open()
                _write_header_if_empty(target.stream, header)
            original_write(msg)

        target.do_write = do_write
    elif isinstance(handler, logging.FileHandler):
        original_open = handler._open

        def _open() -> Any:
            stream = original_open()
            _write_header_if_empty(stream, header)
            return stream

        handler._open = _open  # type: ignore[method-assign]
        if handler.stream is not None:  # opened already (delay=False)
            _write_header_if_empty(handler.stream, header)


def _write_header_if_empty(stream: Any, header: Callable[[], str]) -> None:
    try:
        empty = os.fstat(stream.fileno()).st_size == 0
    except (OSError, ValueError, AttributeError):
        return
    if empty:
        stream.write(header() + "\n")
        stream.flush()


__all__ = ["JsonFormatter", "LineFormatter", "W3CFormatter", "add_header", "w3c_header"]
