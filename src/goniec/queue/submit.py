"""Queueing a message that the server makes or picks up itself (no SMTP client).

Owns `submit()`: the one way reports, forwards, Pickup files and the sendmail
command put a message into a `QueueStore` (DESIGN 1.2: through the queue's
API, never by writing spool files), and `local_received()`, the `Received:`
line such a message gets (RFC 5321 4.4: every hop adds one; Postfix writes
"by host (Postfix, from userid N)" for local submissions). Raises what the
store raises (`SMTPError` 452/451); the writer is aborted on any failure.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterable

from goniec.model import Envelope

from .api import QueueStore, SubmissionInfo


def local_received(hostname: str, source: str, queue_id: str, now: float,
                   for_rcpt: str | None = None) -> bytes:
    """`Received: by <host> (goniec, <source>) id <id> [for <rcpt>]; <date>` with CRLF."""
    rcpt = f"\r\n\tfor <{for_rcpt}>" if for_rcpt else ""
    date = email.utils.formatdate(now, localtime=True)
    line = f"Received: by {hostname} (goniec, {source})\r\n\tid {queue_id}{rcpt}; {date}\r\n"
    return line.encode()


async def submit(store: QueueStore, chunks: Iterable[bytes], envelope: Envelope,
                 info: SubmissionInfo, *, header: Callable[[str], bytes] | None = None) -> str:
    """Queue `chunks` (after `header(queue_id)` when given) for `envelope`; the queue id."""
    writer = store.new_message()
    try:
        if header is not None:
            await writer.write(header(writer.queue_id))
        for chunk in chunks:
            await writer.write(chunk)
        return await writer.commit(envelope, info)
    except BaseException:
        await writer.abort()
        raise
