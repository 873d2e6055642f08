"""Client side: the message body on the wire, as DATA or as BDAT chunks.

Owns line-ending normalisation and dot-stuffing (RFC 5321 4.5.2) for DATA and
chunk framing for BDAT (RFC 3030 2), over a body given in pieces of any size:
memory stays bounded by one piece.

Line endings: every bare LF and every bare CR is sent as CRLF (RFC 5321 2.3.8
allows only CRLF). So a stored body with "\\n.\\n" can never produce a false
end of data at the next hop (the SMTP smuggling class), and the next hop gets
the same octets whether DATA or BDAT carries them. A body that does not end
with CRLF gets one (RFC 5321 4.1.1.4: the end of data follows a CRLF); BDAT
does the same, so both paths deliver identical octets. No I/O, no exceptions.

Line length: RFC 5321 4.5.3.1.6 and RFC 5322 2.1.1 allow at most 998 octets
before the CRLF, and a receiver may refuse longer lines. A longer stored line
is broken by inserting CRLF SPACE (the fold of RFC 5322 2.2.3: a header stays
one header, and a MIME body part is damaged least), as Postfix's
smtp_line_length_limit does.
"""

from __future__ import annotations

import re

_LINE_END_RE = re.compile(rb"\r\n|\r|\n")
MAX_LINE = 998  # octets before CRLF (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1)
_FOLD = b"\r\n "


class LineNormaliser:
    """CRLF-normalises a body given in pieces; a CR at the end of a piece waits
    for the next one, since it may be the first half of a CRLF split in two."""

    __slots__ = ("_cr", "size", "_last", "_col", "max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._cr = False
        self.size = 0  # normalised octets emitted so far
        self._last = 10  # last octet emitted; LF means "at the start of a line"
        self._col = 0  # octets of the current (unfinished) line emitted so far
        self.max_line = max_line  # 0 = no limit

    @property
    def at_line_start(self) -> bool:
        return self._last == 10

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        lines = data.split(b"\r\n")
        crlf = len(lines) - 1
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            data = _LINE_END_RE.sub(b"\r\n", data)
            lines = data.split(b"\r\n")
        limit = self.max_line
        if limit and (self._col + len(lines[0]) > limit or max(map(len, lines)) > limit):
            data = self._fold(lines, limit)
        elif len(lines) > 1:
            self._col = len(lines[-1])
        else:
            self._col += len(data)
        if data:
            self.size += len(data)
            self._last = data[-1]
        return data

    def _fold(self, lines: list[bytes], limit: int) -> bytes:
        """Break every line longer than `limit` with CRLF SPACE; track the column."""
        out = []
        col = self._col
        for i, line in enumerate(lines):
            if i:
                col = 0
            room = limit - col
            if len(line) <= room:
                out.append(line)
                col += len(line)
                continue
            parts = [line[:room]]
            pos = room
            while pos < len(line):  # each continuation: SPACE + limit - 1 octets
                parts.append(line[pos:pos + limit - 1])
                pos += limit - 1
            out.append(_FOLD.join(parts))
            col = 1 + len(parts[-1]) if len(parts) > 1 else col + len(parts[0])
        self._col = col
        return b"\r\n".join(out)

    def finish(self) -> bytes:
        """The rest: a held-back CR becomes CRLF; a last line without CRLF gets one."""
        if self._cr or not self.at_line_start:
            self._cr = False
            self._last = 10
            self._col = 0
            self.size += 2
            return b"\r\n"
        return b""


class DotStuffer:
    """DATA body: normalise, then double every leading dot (RFC 5321 4.5.2)."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = LineNormaliser()

    @property
    def size(self) -> int:
        """The body's octets before stuffing (what the next hop will store)."""
        return self._lines.size

    def feed(self, data: bytes) -> bytes:
        bol = self._lines.at_line_start
        out = self._lines.feed(data)
        if not out:
            return out
        if bol and out[0] == 46:  # "."
            out = b"." + out
        return out.replace(b"\r\n.", b"\r\n..")

    def finish(self) -> bytes:
        """The rest of the body, then the end of data "." CRLF (RFC 5321 4.1.1.4)."""
        return self._lines.finish() + b".\r\n"


class BdatFramer:
    """BDAT body (RFC 3030 2): normalised pieces framed as "BDAT <n>" chunks.

    The last non-empty piece is held back so that it can travel with LAST:
    a one-piece message is a single "BDAT <n> LAST" command.
    """

    __slots__ = ("_lines", "_held", "chunks")

    def __init__(self) -> None:
        self._lines = LineNormaliser()
        self._held = b""
        self.chunks = 0  # BDAT commands produced so far

    @property
    def size(self) -> int:
        return self._lines.size

    def feed(self, data: bytes) -> bytes:
        out = self._lines.feed(data)
        if not out:
            return b""
        framed = self._frame(self._held, last=False) if self._held else b""
        self._held = out
        return framed

    def finish(self) -> bytes:
        """The held piece (and the final CRLF, if missing) as BDAT ... LAST."""
        return self._frame(self._held + self._lines.finish(), last=True)

    def _frame(self, data: bytes, *, last: bool) -> bytes:
        self.chunks += 1
        head = b"BDAT %d LAST\r\n" if last else b"BDAT %d\r\n"
        return head % len(data) + data
