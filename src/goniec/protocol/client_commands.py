"""Client side: the command lines we send, and whether a message may be sent at all.

Owns MAIL FROM and RCPT TO lines with the ESMTP parameters the server offered
(SIZE RFC 1870, BODY RFC 6152, SMTPUTF8 RFC 6531, RET/ENVID/NOTIFY/ORCPT
RFC 3461, xtext RFC 3461 4), the SASL initial responses (PLAIN RFC 4616,
XOAUTH2 per Google's and Microsoft's documentation, OAUTHBEARER RFC 7628),
and `check_message`, which refuses a message this server cannot take before
a byte is sent. Raises `SMTPError` (from `check_message`) with a locally made
reply; no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

from goniec.errors import Reply, SMTPError
from goniec.model import NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS, Envelope
from goniec.protocol.address import AddressError, parse_forward_path, parse_reverse_path
from goniec.protocol.client_reply import Extensions

# Local refusals: the next hop cannot take this message, so it is not sent there.
# RFC 6531 3.2: a message that needs SMTPUTF8 must not go to a server without it.
R553_SMTPUTF8_NOT_OFFERED = Reply(
    553, "5.6.7", "SMTPUTF8 is required, but was not offered by the server"
)
# RFC 1870 6.1: do not send a message larger than the server's declared limit.
R552_TOO_BIG_FOR_SERVER = Reply(552, "5.3.4", "Message size exceeds the server's size limit")
# RFC 6152 3 / RFC 3463 5.6.3: only with strict_8bitmime (no conversion is done).
R554_8BITMIME_NOT_OFFERED = Reply(
    554, "5.6.3", "8BITMIME is required, but was not offered by the server"
)
R553_BAD_SENDER = Reply(553, "5.1.7", "Bad sender address syntax")
R553_BAD_RECIPIENT = Reply(553, "5.1.3", "Bad recipient address syntax")

_NOTIFY_ORDER = (NOTIFY_SUCCESS, NOTIFY_FAILURE, NOTIFY_DELAY)


def encode_xtext(text: str) -> str:
    """RFC 3461 4: "+XX" for "+", "=", controls, space and every non-ASCII octet."""
    out = []
    for octet in text.encode("utf-8"):
        if 0x21 <= octet <= 0x7E and octet not in (0x2B, 0x3D):
            out.append(chr(octet))
        else:
            out.append(f"+{octet:02X}")
    return "".join(out)


def needs_smtputf8(envelope: Envelope) -> bool:
    """RFC 6531 3.4: the sender or a recipient is non-ASCII, or MAIL said SMTPUTF8.

    A message received with SMTPUTF8 may carry UTF-8 headers, which we do not
    scan for, so it keeps needing SMTPUTF8 even with an ASCII envelope.
    """
    if envelope.params.smtputf8 or not envelope.sender.isascii():
        return True
    return any(not rcpt.address.isascii() for rcpt in envelope.recipients)


def bad_recipients(envelope: Envelope) -> dict[int, Reply]:
    """Recipients whose address could not be written in RCPT TO, by index."""
    bad: dict[int, Reply] = {}
    for i, rcpt in enumerate(envelope.recipients):
        try:
            parse_forward_path(f"<{rcpt.address}>", smtputf8=True)
        except AddressError:
            bad[i] = R553_BAD_RECIPIENT
    return bad


def check_message(
    envelope: Envelope,
    ext: Extensions,
    *,
    size: int | None,
    strict_8bitmime: bool = False,
) -> None:
    """Raise SMTPError (5xx, made locally) when this server must not get the message."""
    try:
        parse_reverse_path(f"<{envelope.sender}>", smtputf8=True)
    except AddressError:
        raise SMTPError(R553_BAD_SENDER) from None
    if needs_smtputf8(envelope) and not ext.smtputf8:
        raise SMTPError(R553_SMTPUTF8_NOT_OFFERED)
    limit = ext.size
    if limit and size is not None and size > limit:
        raise SMTPError(R552_TOO_BIG_FOR_SERVER.with_text(
            f"Message size {size} exceeds the size limit {limit} of the server"))
    if strict_8bitmime and envelope.params.body == "8BITMIME" and not ext.eightbitmime:
        raise SMTPError(R554_8BITMIME_NOT_OFFERED)


@dataclass(frozen=True, slots=True)
class MailPlan:
    """The command lines of one transaction and what was left out."""

    mail: bytes
    rcpts: tuple[bytes, ...]
    dsn: bool  # RET/ENVID/NOTIFY/ORCPT passed on (the server offered DSN)


def plan_transaction(envelope: Envelope, ext: Extensions, *, size: int | None) -> MailPlan:
    """MAIL and RCPT lines with only the parameters `ext` offers (RFC 5321 4.1.2).

    Parameters of extensions the server lacks are dropped: SIZE, BODY (an 8-bit
    body then goes as is, as Postfix does), and the DSN ones (RFC 3461 4: the
    caller answers NOTIFY=SUCCESS with a "relayed" DSN; `MailPlan.dsn` says so).
    """
    p = envelope.params
    words = [f"MAIL FROM:<{envelope.sender}>"]
    if ext.size is not None and size is not None:
        words.append(f"SIZE={size}")
    if p.body in ("7BIT", "8BITMIME") and ext.eightbitmime:
        words.append(f"BODY={p.body}")
    if needs_smtputf8(envelope) and ext.smtputf8:
        words.append("SMTPUTF8")
    dsn = ext.dsn
    if dsn and p.ret:
        words.append(f"RET={p.ret}")
    if dsn and p.envid:
        words.append(f"ENVID={encode_xtext(p.envid)}")
    mail = (" ".join(words) + "\r\n").encode("utf-8")
    rcpts = []
    for rcpt in envelope.recipients:
        words = [f"RCPT TO:<{rcpt.address}>"]
        if dsn and rcpt.notify:
            words.append("NOTIFY=" + _notify_value(rcpt.notify))
        if dsn and rcpt.orcpt:
            addr_type, _, address = rcpt.orcpt.partition(";")
            words.append(f"ORCPT={addr_type};{encode_xtext(address)}")
        rcpts.append((" ".join(words) + "\r\n").encode("utf-8"))
    return MailPlan(mail, tuple(rcpts), dsn)


def _notify_value(notify: Iterable[str]) -> str:
    words = set(notify)
    if NOTIFY_NEVER in words:
        return NOTIFY_NEVER  # RFC 3461 4.1: NEVER stands alone
    return ",".join(w for w in _NOTIFY_ORDER if w in words)


# --- SASL ------------------------------------------------------------------------

PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")
TOKEN_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
SUPPORTED_MECHANISMS = PASSWORD_MECHANISMS + TOKEN_MECHANISMS


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain_response(username: str, password: str, authzid: str = "") -> bytes:
    """RFC 4616 2: [authzid] NUL authcid NUL passwd."""
    return b64(f"{authzid}\0{username}\0{password}".encode())


def xoauth2_response(username: str, token: str) -> bytes:
    """"user=" user ^A "auth=Bearer " token ^A ^A (Google and Microsoft XOAUTH2)."""
    return b64(f"user={username}\x01auth=Bearer {token}\x01\x01".encode())


def oauthbearer_response(
    username: str, token: str, host: str | None = None, port: int | None = None
) -> bytes:
    """RFC 7628 3.1: GS2 header "n,a=<saslname>," then ^A-separated key=value pairs."""
    # RFC 5801 4: "," and "=" in a saslname are written "=2C" and "=3D".
    saslname = username.replace("=", "=3D").replace(",", "=2C")
    pairs = ""
    if host:
        pairs += f"host={host}\x01"
    if port:
        pairs += f"port={port}\x01"
    return b64(f"n,a={saslname},\x01{pairs}auth=Bearer {token}\x01\x01".encode())


def choose_mechanism(offered: frozenset[str], preferred: Iterable[str]) -> str | None:
    """The first of `preferred` that the server offers and we support, or None."""
    for mech in preferred:
        mech = mech.upper()
        if mech in offered and mech in SUPPORTED_MECHANISMS:
            return mech
    return None
