"""Counting Received: header fields while a message streams past (pure, layer 1).

Owns `ReceivedCounter`, fed the body chunks in order: it counts header lines
whose field name is "Received" (RFC 5322 3.6.7; the obsolete form with
spaces before the colon too, RFC 5322 4.5) up to the empty line that ends
the header section, then stops looking, so a large body costs nothing. The
search runs in the regex engine over complete lines; only the start of an
unfinished line is carried to the next chunk. No I/O.
"""

from __future__ import annotations

import re

_RECEIVED = re.compile(rb"\nreceived[ \t]{0,4}:", re.IGNORECASE)
_HEADER_END = re.compile(rb"\n\r?\n")
_KEEP = 16  # an unfinished line longer than this is decided already


class ReceivedCounter:
    __slots__ = ("count", "done", "_stop_after", "_tail", "_skipping")

    def __init__(self, stop_after: int = 0) -> None:
        self.count = 0
        self.done = False  # the header section ended (or the limit was passed)
        self._stop_after = stop_after  # stop once count exceeds this (0 = never)
        self._tail = b"\n"  # the message starts at a line start
        self._skipping = False  # inside a long line already looked at

    def feed(self, data: bytes) -> None:
        if self.done or not data:
            return
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return
            data = data[nl:]
            self._skipping = False
            buf = data
        else:
            buf = self._tail + data if self._tail else data
        end = _HEADER_END.search(buf)
        if end is not None:
            self.count += len(_RECEIVED.findall(buf, 0, end.start() + 1))
            self.done = True
            return
        last = buf.rfind(b"\n")
        if last < 0:  # only possible when skipping ended on no newline
            self._tail = b""
            return
        # Every line that starts before `last` is complete: count those.
        self.count += len(_RECEIVED.findall(buf, 0, last))
        rest = len(buf) - last
        if rest > _KEEP:
            if _RECEIVED.match(buf, last):
                self.count += 1
            self._tail = b""
            self._skipping = True
        else:
            self._tail = buf[last:]
        if self._stop_after and self.count > self._stop_after:
            self.done = True
