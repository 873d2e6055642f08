"""Searching the event log: the newest lines that match, for the web log view and the API.

Owns `search_log()`: reads the log file and its rotated siblings (newest
first: the file itself, then `goniec.log.1`, `goniec.log.2026-11-25`,
`goniec.log-20261125`, ... by modification time; compressed ones are
skipped) backwards in 64 KiB blocks, so the newest matches come first and a
large log is never read whole. A block without the searched bytes is
skipped without parsing it. Lines in the `line` format are parsed back from
`key=value` (quoted values unescaped), `json` lines with json; W3C lines and
directives are skipped. Each match is `{"time", "level", "logger", "event",
"fields"}` (a plain message: event "" and fields msg, exc). Raises nothing
for a missing or unreadable file (it is skipped).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 64 << 10
MAX_LINE = 1 << 20  # a longer line is skipped rather than held whole
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lzma")
_PAIR = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|.)')
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_MSG_KEYS = ("msg", "new_msg", "report")


def log_files(path: Path) -> list[Path]:
    """`path` and its rotated siblings, newest first."""
    siblings: list[tuple[float, str, Path]] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        name = p.name
        if name == path.name or not name.startswith(path.name):
            continue
        if name[len(path.name)] not in ".-" or name.endswith(_COMPRESSED):
            continue
        try:
            siblings.append((p.stat().st_mtime, name, p))
        except OSError:
            continue
    siblings.sort(key=lambda item: (-item[0], _rank(item[1])))
    head = [path] if path.exists() else []
    return head + [p for _, _, p in siblings]


def _rank(name: str) -> int:
    """Equal times: goniec.log.1 before goniec.log.2."""
    tail = name.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        return _SIMPLE.get(code, code)

    return _ESCAPE.sub(one, text)


def parse_line(line: str) -> dict[str, Any] | None:
    """A `line`-format or JSON line as {"time", "level", "logger", "event", "fields"}."""
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        head = {k: str(data.pop(k, "")) for k in ("time", "level", "logger", "event")}
        return {**head, "fields": data}
    parts = line.split(" ", 3)
    if len(parts) < 3 or not parts[0].endswith("Z") or "T" not in parts[0]:
        return None  # not ours (a W3C line, a stray traceback)
    fields: dict[str, Any] = {}
    for m in _PAIR.finditer(parts[3] if len(parts) > 3 else ""):
        value = m.group(2)
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = _unescape(value[1:-1])
        fields[m.group(1)] = value
    event = fields.pop("event", "")
    return {"time": parts[0], "level": parts[1], "logger": parts[2], "event": event,
            "fields": fields}


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """Blocks of whole lines, from the end of the file to the start."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return
    with f:
        pos = f.seek(0, os.SEEK_END)
        tail = b""  # the start of the oldest line read so far, maybe incomplete
        skipping = False  # the newest line of the next body is the start of a dropped one
        while pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step) + tail
            cut = chunk.find(b"\n") if pos > 0 else -1
            if cut < 0 and pos > 0:  # no line end in the block: all of it is one line
                tail = chunk
                if len(tail) > MAX_LINE:
                    tail, skipping = b"", True
                continue
            tail, body = (chunk[:cut], chunk[cut + 1:]) if cut >= 0 else (b"", chunk)
            if skipping:
                body, skipping = body[:body.rfind(b"\n") + 1], False
            if body:
                yield body


def search_log(path: Path | None, *, session: str = "", msg: str = "", address: str = "",
               text: str = "", limit: int = 200) -> list[dict[str, Any]]:
    """The newest `limit` log entries matching every criterion given, newest first.

    session: the session id; msg: a queue id (msg=, new_msg=, report=, or in a
    plain message's text); address: part of any field (sender, rcpt, user...),
    any case; text: part of the line, any case."""
    if path is None or limit <= 0:
        return []
    exact = [n.encode() for n in (session, msg) if n]
    folded = [n.lower().encode() for n in (address, text) if n]
    out: list[dict[str, Any]] = []
    for file in log_files(path):
        for body in _lines_backwards(file):
            if not all(n in body for n in exact):
                continue
            if folded and not all(n in body.lower() for n in folded):
                continue
            lines = body.split(b"\n")
            for line in reversed(lines):
                if not line or line.startswith(b"#"):
                    continue
                if not all(n in line for n in exact):
                    continue
                if folded and not all(n in line.lower() for n in folded):
                    continue
                entry = parse_line(line.decode("utf-8", "replace"))
                if entry is None or not _matches(entry, session, msg, address):
                    continue
                out.append(entry)
                if len(out) >= limit:
                    return out
    return out


def _matches(entry: dict[str, Any], session: str, msg: str, address: str) -> bool:
    fields: dict[str, Any] = entry["fields"]
    plain = "" if entry["event"] else str(fields.get("msg", ""))
    if session and fields.get("session") != session and f"session={session}" not in plain:
        return False
    if msg and not (any(msg in str(fields.get(k, "")).split(",") for k in _MSG_KEYS
                        if entry["event"]) or f"={msg}" in plain):
        return False
    if address:
        needle = address.lower()
        if not any(needle in str(v).lower() for v in fields.values()):
            return False
    return True
