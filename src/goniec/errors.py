"""Replies and the errors that carry them (layer 0).

Owns: `Reply`, the value every SMTP answer is made of, and `SMTPError`, the one
exception that carries a reply across layers. Imports nothing from the project.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a code, an optional RFC 3463 enhanced code, and text lines.

    `text` may hold several lines separated by "\\n"; `to_bytes` writes them as a
    multi-line reply (RFC 5321 4.2.1), repeating the enhanced code on every line
    as RFC 2034 section 4 requires.
    """

    code: int
    enhanced: str | None
    text: str

    @property
    def is_positive(self) -> bool:
        """2xx and 3xx replies accept the command they answer."""
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)

    def lines(self) -> list[str]:
        return self.text.split("\n") if self.text else [""]

    def to_bytes(self, *, enhanced: bool = True) -> bytes:
        lines = self.lines()
        prefix = f"{self.enhanced} " if (enhanced and self.enhanced) else ""
        out = []
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{line}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace").rstrip("\r\n")


class SMTPError(Exception):
    """An error that should reach the peer as `reply`.

    `temporary` is derived from the code: 4xx means try again later.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply

    @property
    def temporary(self) -> bool:
        return self.reply.is_transient


class ConfigError(Exception):
    """A configuration file or value is wrong; the message names file, key and problem."""
