"""Client side: reading the server's replies and its EHLO extension list.

Owns reply framing (RFC 5321 4.2: "250-" continuation lines, one code per
reply), the enhanced status code at the start of the text (RFC 2034 4,
RFC 3463), and `Extensions`, the parsed EHLO keywords (RFC 5321 4.1.1.1).
Peers are read leniently (a bare LF ends a line too, a code without text is
fine) but with hard bounds, so a hostile server cannot make us buffer without
limit. Raises `ReplySyntaxError` for bytes that are not a reply. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from goniec.errors import Reply

# RFC 5321 4.5.3.1.5 says a reply line is at most 512 octets; real servers send
# longer ones (long EHLO AUTH lists, verbose 5xx texts), so allow eight times that.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 200

# RFC 3463 2: class "." subject "." detail; the class must match the reply code.
_ENHANCED_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)")


class ReplySyntaxError(ValueError):
    """The server sent something that is not an SMTP reply (or far too much of it)."""


def _split_enhanced(code: int, text: str) -> tuple[str | None, str]:
    m = _ENHANCED_RE.match(text)
    if m is None or int(m.group(1)) != code // 100:
        return None, text
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}", text[m.end() :]


class ReplyParser:
    """Turns received bytes into `Reply` values, one complete reply at a time.

    feed(bytes) adds input; next_reply() returns the next complete reply or
    None when more input is needed. Raises `ReplySyntaxError` on garbage.
    """

    __slots__ = ("_buf", "_pos", "_lines", "_code")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0  # start of the unread part of _buf (no copying per line)
        self._lines: list[str] = []  # text of the continuation lines read so far
        self._code = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def clear(self) -> None:
        """Forget everything buffered (RFC 3207 4.2: nothing read before TLS counts)."""
        self._buf = b""
        self._pos = 0
        self._lines = []
        self._code = 0

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
        else:
            self._buf, self._pos = self._buf[self._pos :] + data, 0

    def next_reply(self) -> Reply | None:
        buf = self._buf
        while True:
            nl = buf.find(b"\n", self._pos)
            if nl < 0:
                if len(buf) - self._pos > MAX_REPLY_LINE:
                    raise ReplySyntaxError("reply line too long")
                return None
            start, self._pos = self._pos, nl + 1
            if nl - start > MAX_REPLY_LINE:
                raise ReplySyntaxError("reply line too long")
            end = nl - 1 if nl > start and buf[nl - 1] == 13 else nl
            reply = self._line(buf[start:end])
            if reply is not None:
                return reply

    def _line(self, raw: bytes) -> Reply | None:
        line = raw.decode("utf-8", "replace")
        head = line[:3]
        if len(head) < 3 or not head.isdigit() or not "2" <= head[0] <= "5":
            raise ReplySyntaxError(f"not a reply line: {line[:80]!r}")
        code = int(head)
        sep = line[3:4]
        if sep not in ("", " ", "-"):
            raise ReplySyntaxError(f"not a reply line: {line[:80]!r}")
        if self._lines and code != self._code:
            # RFC 5321 4.2.1: every line of a multi-line reply has the same code.
            raise ReplySyntaxError("reply lines with different codes")
        self._code = code
        self._lines.append(line[4:])
        if sep == "-":
            if len(self._lines) >= MAX_REPLY_LINES:
                raise ReplySyntaxError("reply has too many lines")
            return None
        lines, self._lines = self._lines, []
        enhanced, first = _split_enhanced(code, lines[0])
        if enhanced is not None:
            # RFC 2034 4: the code is repeated on each line; strip it everywhere.
            prefix = enhanced.split(".")[0] + "."
            rest = [
                _split_enhanced(code, t)[1] if t.startswith(prefix) else t for t in lines[1:]
            ]
            lines = [first, *rest]
        return Reply(code, enhanced, "\n".join(lines))


@dataclass(frozen=True)
class Extensions:
    """What the server offered in its EHLO reply: KEYWORD -> parameter text.

    Empty after HELO (no extensions, RFC 5321 3.2). Keywords are uppercased,
    parameters kept as sent ("" when there are none).
    """

    keywords: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Extensions:
        """Parse the lines after the first one (RFC 5321 4.1.1.1 ehlo-line)."""
        words: dict[str, str] = {}
        for line in reply.lines()[1:]:
            keyword, _, params = line.strip().partition(" ")
            keyword = keyword.upper()
            if keyword.startswith("AUTH="):
                # Old servers (pre RFC 2554 final) say "AUTH=LOGIN PLAIN".
                keyword, params = "AUTH", keyword[5:] + " " + params
            if keyword == "AUTH" and "AUTH" in words:
                params = words["AUTH"] + " " + params  # both forms: merge the lists
            if keyword:
                words[keyword] = params.strip()
        return cls(words)

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.keywords  # RFC 2920

    @property
    def eightbitmime(self) -> bool:
        return "8BITMIME" in self.keywords  # RFC 6152

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.keywords  # RFC 6531

    @property
    def dsn(self) -> bool:
        return "DSN" in self.keywords  # RFC 3461

    @property
    def chunking(self) -> bool:
        return "CHUNKING" in self.keywords  # RFC 3030

    @property
    def starttls(self) -> bool:
        return "STARTTLS" in self.keywords  # RFC 3207

    @property
    def enhanced_status_codes(self) -> bool:
        return "ENHANCEDSTATUSCODES" in self.keywords  # RFC 2034

    @property
    def size(self) -> int | None:
        """RFC 1870: None when SIZE is not offered, 0 when offered without a limit."""
        if "SIZE" not in self.keywords:
            return None
        value = self.keywords["SIZE"].split(" ")[0]
        return int(value) if value.isdigit() else 0

    @property
    def auth(self) -> frozenset[str]:
        """SASL mechanisms offered (RFC 4954 3), uppercased."""
        return frozenset(m.upper() for m in self.keywords.get("AUTH", "").split())


NO_EXTENSIONS = Extensions()
