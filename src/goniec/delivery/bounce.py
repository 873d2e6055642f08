"""Delivery status notifications: RFC 3464 reports in RFC 6522 multipart/report (layer 1).

Owns `ReportEntry` (one recipient's line in a report) and `build_report()`,
which writes the whole DSN with the stdlib email package (no hand-made MIME):

    multipart/report; report-type=delivery-status
      text/plain                 what happened, for people
      message/delivery-status    RFC 3464 2.2 per-message fields, then 2.3
                                 per-recipient fields for each entry
      message/rfc822             the original (RET=FULL, or a failure report
       or text/rfc822-headers    when RET is absent), else only its header

The report is sent from the null reverse-path (RFC 3461 6.2, RFC 5321
4.5.5) by the caller; it says `Auto-Submitted: auto-replied` (RFC 3834).
Whether a report is due at all (NOTIFY, null sender) is decided elsewhere
(`schedule`, `worker`). Address types: "rfc822" for ASCII addresses,
"utf-8" (RFC 6533) otherwise. Pure: the original comes in as bytes or a
binary file and the report goes out as bytes. Raises nothing of its own.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from io import BytesIO
from typing import Any, BinaryIO

from goniec.delivery.schedule import Report

# Beyond this the original is returned as headers only (IIS MaxDSNSize; Postfix
# bounce_size_limit is 50 kB). Big attachments should not travel back whole.
MAX_RETURNED = 10 << 20
_HEAD_LIMIT = 1 << 20  # read at most this much looking for the end of the header

_SUBJECTS = {
    Report.FAILED: "Undelivered Mail Returned to Sender",
    Report.DELAYED: "Delayed Mail (still being retried)",
    Report.DELIVERED: "Successful Mail Delivery Report",
    Report.RELAYED: "Successful Mail Delivery Report",
}
_INTRO = {
    Report.FAILED: ("I'm sorry to have to inform you that your message could not be\n"
                    "delivered to one or more recipients. The reasons are below."),
    Report.DELAYED: ("Your message could not be delivered yet to one or more recipients.\n"
                     "It will be retried until {until}; you do not need to send it again."),
    Report.DELIVERED: "Your message was successfully delivered to the destination(s) below.",
    Report.RELAYED: ("Your message was handed to the destination(s) below. They do not\n"
                     "report delivery status, so no further notice will follow."),
}


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """One recipient of a report (RFC 3464 2.3).

    status: RFC 3463 code "5.1.1". diagnostic: the remote server's reply as one
    line when `remote_mta` is set ("550 5.1.1 User unknown"); otherwise our own
    explanation, reported as X-Goniec diagnostic text.
    """

    address: str
    action: Report
    status: str
    diagnostic: str
    remote_mta: str | None = None
    orcpt: str | None = None
    last_attempt: float | None = None
    retry_until: float | None = None


def _addr_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"  # RFC 6533 3


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _block(fields: Sequence[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in fields:
        block[name] = value
    return block


def _status_part(entries: Sequence[ReportEntry], reporting_mta: str, arrival: float,
                 envid: str | None) -> Message:
    per_message = [("Reporting-MTA", f"dns; {reporting_mta}")]
    if envid:
        per_message.append(("Original-Envelope-Id", envid))
    per_message.append(("Arrival-Date", _date(arrival)))
    blocks: list[Message | str] = [_block(per_message)]
    for e in entries:
        fields: list[tuple[str, str]] = []
        if e.orcpt:  # RFC 3461 4.2 / RFC 3464 2.3.1: as the sender gave it
            kind, _, addr = e.orcpt.partition(";")
            fields.append(("Original-Recipient", f"{kind.strip()}; {addr.strip()}"))
        fields += [("Final-Recipient", f"{_addr_type(e.address)}; {e.address}"),
                   ("Action", str(e.action)), ("Status", e.status)]
        if e.remote_mta:
            fields.append(("Remote-MTA", f"dns; {e.remote_mta}"))
            fields.append(("Diagnostic-Code", f"smtp; {e.diagnostic}"))
        elif e.diagnostic:
            fields.append(("Diagnostic-Code", f"X-Goniec; {e.diagnostic}"))
        if e.last_attempt is not None:
            fields.append(("Last-Attempt-Date", _date(e.last_attempt)))
        if e.retry_until is not None:
            fields.append(("Will-Retry-Until", _date(e.retry_until)))
        blocks.append(_block(fields))
    global_ = any(not e.address.isascii() for e in entries)
    part = MIMEBase("message", "global-delivery-status" if global_ else "delivery-status")
    part.set_payload(blocks)  # a list of header blocks: the generator writes them as such
    return part


def _read_original(original: bytes | BinaryIO, headers_only: bool) -> tuple[bytes, bool]:
    """(bytes to return, whether they are the whole message)."""
    if isinstance(original, bytes):
        data = original
    else:
        data = original.read(MAX_RETURNED + 1 if not headers_only else _HEAD_LIMIT)
    if not headers_only and len(data) <= MAX_RETURNED:
        return data, True
    return _header_of(data), False


def _header_of(data: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = data.find(sep)
        if end >= 0:
            return data[: end + len(sep)]
    return data


def _original_part(original: bytes | BinaryIO, full: bool) -> Message:
    data, whole = _read_original(original, headers_only=not full)
    if whole:
        # compat32 parses and regenerates the original without re-folding its header.
        inner = email.message_from_bytes(data, policy=email.policy.compat32)
        return MIMEMessage(inner)
    text = data.decode("ascii", "replace").replace("\r\n", "\n")
    return MIMEText(text, "rfc822-headers", "us-ascii")


def _human_text(kind: Report, entries: Sequence[ReportEntry], reporting_mta: str) -> str:
    until = next((e.retry_until for e in entries if e.retry_until), None)
    intro = _INTRO[kind].format(until=_date(until) if until else "the message expires")
    lines = [f"This is the mail system at host {reporting_mta}.", "", intro, "",
             "If you need help, please contact your postmaster and include this report.", ""]
    for e in entries:
        where = f"host {e.remote_mta} said: " if e.remote_mta else ""
        lines.append(f"<{e.address}>: {where}{e.diagnostic}" if e.diagnostic
                     else f"<{e.address}>: {e.action}")
    return "\n".join(lines) + "\n"


def build_report(*, kind: Report, entries: Sequence[ReportEntry], reporting_mta: str,
                 sender: str, original: bytes | BinaryIO, arrival: float, now: float,
                 ret: str | None = None, envid: str | None = None,
                 original_subject: str | None = None) -> bytes:
    """The complete DSN as bytes with CRLF line ends, ready to be queued.

    sender: the envelope sender of the original (the report's To:). ret: the
    original's RET (RFC 3461 4.3): FULL returns the whole message, HDRS only
    its header; absent means the whole message in failure reports only.
    """
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = f"<{sender}>"
    subject = _SUBJECTS[kind]
    report["Subject"] = f"{subject}: {original_subject}" if original_subject else subject
    report["Date"] = _date(now)
    report["Message-ID"] = email.utils.make_msgid("dsn", domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 5: never answered automatically
    report.preamble = "This is a MIME-encapsulated message.\n"
    human = _human_text(kind, entries, reporting_mta)
    report.attach(MIMEText(human, "plain", "us-ascii" if human.isascii() else "utf-8"))
    report.attach(_status_part(entries, reporting_mta, arrival, envid))
    full = ret == "FULL" or (ret is None and kind is Report.FAILED)
    report.attach(_original_part(original, full))
    out = BytesIO()
    gen: BytesGenerator[Any] = BytesGenerator(out, mangle_from_=False, policy=email.policy.SMTP)
    gen.flatten(report)
    return out.getvalue()


def subject_of(original: bytes) -> str | None:
    """The original's Subject: for the report's subject line (unfolded, trimmed)."""
    head = _header_of(original[:_HEAD_LIMIT])
    msg = email.message_from_bytes(head, policy=email.policy.compat32)
    value = msg.get("Subject")
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text[:200] or None
