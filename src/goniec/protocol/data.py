"""The DATA body scanner (RFC 5321 4.1.1.4, 4.5.2): the hottest path of the server.

Owns finding the end of data, dot-unstuffing and the body checks (bare CR or
LF, text line length, message size). It works on whole receive blocks with C
speed bytes methods, never loops over lines in Python, and never keeps more
than the four bytes that may start the end marker: the body leaves as chunks.

End of data is `<CRLF>.<CRLF>` and nothing else; a bare CR or LF never ends
the body (SMTP smuggling defence), it only marks the message as rejected. Once
rejected, nothing more is emitted, but the scan goes on so that the verdict is
the same however the bytes were split: bare CR/LF beats an overlong line,
which beats a size overflow. No I/O, no exceptions.
"""

from __future__ import annotations

from goniec import replies as r
from goniec.errors import Reply

END_MARKER = b"\r\n.\r\n"


def _held_back(buf: bytes, pos: int) -> int:
    """Length of the longest suffix of buf[pos:] that may begin END_MARKER.

    Those bytes stay in the buffer until more data says what they are. As a
    consequence a region never ends with CR, so CRLF pairs are never split.
    """
    n = len(buf) - pos
    if n <= 0:
        return 0
    last = buf[-1]
    if last == 13:  # "\r" or "\r\n.\r"
        return 4 if n >= 4 and buf.endswith(b"\r\n.\r") else 1
    if last == 10:  # "\r\n"
        return 2 if n >= 2 and buf[-2] == 13 else 0
    if last == 46:  # "\r\n."
        return 3 if n >= 3 and buf.endswith(b"\r\n.") else 0
    return 0


class DotReader:
    """Scans one dot-terminated body. Feed it the buffer; it says how far it got."""

    __slots__ = ("max_size", "max_line", "size", "line_len", "at_start", "bare", "long", "big")

    def __init__(self, max_size: int, max_line: int) -> None:
        self.max_size = max_size  # 0 = unlimited
        self.max_line = max_line  # 0 = unlimited; CRLF included
        self.size = 0  # unstuffed octets so far
        self.line_len = 0  # octets of the current line seen so far (wire form)
        self.at_start = True  # nothing consumed yet: a virtual CRLF precedes the body
        self.bare = False
        self.long = False
        self.big = False

    def verdict(self) -> Reply | None:
        """None if the body is acceptable, else the reply that rejects it."""
        if self.bare:
            return r.R554_BARE_LINE_ENDING
        if self.long:
            return r.R554_MESSAGE_LINE_TOO_LONG
        if self.big:
            return r.R552_MESSAGE_TOO_BIG
        return None

    def feed(self, buf: bytes, pos: int) -> tuple[int, bytes | None, bool]:
        """Scan buf[pos:]. Returns (new pos, unstuffed chunk to emit or None, finished).

        When finished, new pos is just after the end marker.
        """
        if self.at_start:
            head = buf[pos : pos + 3]
            if head == b".\r\n":  # RFC 5321 4.1.1.4: empty body
                return pos + 3, None, True
            if len(head) < 3 and b".\r\n".startswith(head):
                return pos, None, False  # "", "." or ".\r": cannot tell yet
        # The end marker and every stuffed dot start with the first "\r\n." after
        # pos: one search finds whichever comes first, and the search starts at
        # the first "." (a memchr, many times faster), so a block without dots
        # costs almost nothing here. Only a block with a stuffed dot searches on.
        dot = buf.find(b".", pos)
        first = -1 if dot < 0 else buf.find(b"\r\n.", max(pos, dot - 2))
        if first < 0 or buf.startswith(b"\r\n", first + 3):
            idx = first  # no marker, or the marker
        else:
            idx = buf.find(END_MARKER, first + 3)
        if idx >= 0:
            end, new_pos, done = idx + 2, idx + 5, True  # the body keeps its last CRLF
        else:
            end = new_pos = len(buf) - _held_back(buf, pos)
            done = False
        if end <= pos:
            return new_pos, None, done
        return new_pos, self._region(buf[pos:end], 0 <= first < end - 2), done

    def _region(self, raw: bytes, stuffed: bool) -> bytes | None:
        """Check one region (never ending with CR) and return it unstuffed, or None.

        stuffed: a line after the first one starts with "." (RFC 5321 4.5.2).
        """
        at_start = self.at_start
        self.at_start = False
        if self.bare:
            return None  # the verdict cannot get worse: just look for the end
        # RFC 5321 2.3.8: CR and LF only as CRLF. Blank out every CRLF pair (a
        # same-size replace, left to right; pairs cannot overlap): any CR or LF
        # left is bare. One search pass and two memchr calls, about half the time
        # of counting CR, LF and CRLF, for a short-lived copy of the region.
        paired = raw.replace(b"\r\n", b"  ")
        if b"\r" in paired or b"\n" in paired:
            self.bare = True
            return None
        del paired
        if self.max_line:
            self._check_lines(raw)
        if self.long or self.big:
            return None
        # RFC 5321 4.5.2: drop the first "." of every line that starts with one.
        if at_start and raw[:1] == b".":
            raw = raw[1:]
        if stuffed:
            raw = raw.replace(b"\r\n.", b"\r\n")
        self.size += len(raw)
        if self.max_size and self.size > self.max_size:
            self.big = True
            return None
        return raw

    def _check_lines(self, raw: bytes) -> None:
        """RFC 5321 4.5.3.1.6: a text line is at most max_line octets with its CRLF.

        A line is too long when max_line octets come before its LF. Only the
        first line, continued from the previous region, needs `line_len`.
        """
        limit = self.max_line
        last_nl = raw.rfind(b"\n")
        if last_nl < 0:
            self.line_len += len(raw)
            if self.line_len >= limit:
                self.long = True
            return
        if self.line_len + len(raw) >= limit:
            first_nl = raw.find(b"\n")
            if self.line_len + first_nl >= limit or len(raw) - last_nl - 1 >= limit:
                self.long = True
            else:
                # Jump from line start to line start by up to `limit` octets: each
                # window must contain an LF, else the line starting there is too long.
                p = first_nl + 1
                while last_nl - p >= limit:
                    q = raw.rfind(b"\n", p, p + limit)
                    if q < 0:
                        self.long = True
                        break
                    p = q + 1
        self.line_len = len(raw) - last_nl - 1


class ChunkReader:
    """Counts down the octets of one BDAT chunk (RFC 3030 2); they are taken as sent."""

    __slots__ = ("remaining", "size", "last", "refusal", "too_big", "line")

    def __init__(self, size: int, last: bool, refusal: Reply | None, too_big: bool, line: bytes):
        self.remaining = size
        self.size = size
        self.last = last
        self.refusal = refusal  # the 503/554 to send once the octets are skipped
        self.too_big = too_big  # skip, then 552
        self.line = line  # the BDAT command, for BadCommand

    @property
    def discard(self) -> bool:
        return self.too_big or self.refusal is not None
