"""The Received: trace header the server prepends to every accepted message.

Owns its format: RFC 5321 4.4 (from, by, with, id, for, date), the "with"
protocol words of RFC 3848, and the TLS details as a comment as Postfix writes
them. Pure: time and facts come in as arguments.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time

from goniec.model import SessionInfo

# A HELO name is client data: keep it on one line and free of comment delimiters.
_UNSAFE = re.compile(r"[\x00-\x20()\\\x7f]")


def _clean(text: str, limit: int = 255) -> str:
    return _UNSAFE.sub("_", text)[:limit] or "unknown"


_now_text: tuple[int, str] = (-1, "")  # (epoch second, its RFC 5322 date in local time)


def _now() -> str:
    """The current date as RFC 5322 writes it, formatted once a second, not per message."""
    global _now_text
    second = int(time.time())
    if _now_text[0] != second:
        local = datetime.datetime.fromtimestamp(second).astimezone()
        _now_text = (second, email.utils.format_datetime(local))
    return _now_text[1]


def received_header(
    info: SessionInfo,
    *,
    hostname: str,
    queue_id: str,
    recipients: list[str],
    when: datetime.datetime | None = None,
) -> bytes:
    """Our Received: field, dated `when` (default: now)."""
    helo = _clean(info.helo or "unknown")
    reverse = _clean(info.reverse_name or "unknown")
    ip = info.peer_ip
    literal = f"IPv6:{ip}" if ":" in ip else ip
    lines = [f"Received: from {helo} ({reverse} [{literal}])"]
    if info.tls_version:
        lines.append(f"\t(using {info.tls_version} with cipher {_clean(info.tls_cipher or 'unknown')})")
    lines.append(f"\tby {hostname} (Goniec) with {info.protocol_word} id {queue_id}")
    # RFC 5321 4.4: "for" names one recipient only; more would disclose Bcc: lists.
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>;")
    else:
        lines[-1] += ";"
    lines.append("\t" + (_now() if when is None else email.utils.format_datetime(when)))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")
