"""Argument parsing of the SMTP commands that carry structured arguments.

Owns the text after the verb: MAIL FROM:<path> params, RCPT TO:<path> params
(RFC 5321 4.1.1.2, 4.1.1.3), BDAT <size> [LAST] (RFC 3030 2), and the EHLO
keyword list (RFC 5321 4.1.1.1). Pure functions; errors are `SMTPError`
carrying the reply the core sends. No I/O.
"""

from __future__ import annotations

from goniec import replies as r
from goniec.errors import SMTPError
from goniec.model import MailParams, Recipient
from goniec.protocol.address import (
    AddressError,
    parse_forward_path,
    parse_reverse_path,
    split_path,
)
from goniec.protocol.options import ServerOptions
from goniec.protocol.params import parse_mail_params, parse_rcpt_params

MAX_BDAT_DIGITS = 20


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SMTPError(r.R501_INVALID_UTF8) from None


def _after_keyword(args: bytes, keyword: bytes) -> str:
    """The text after "FROM:" / "TO:"; one space after the colon is tolerated."""
    n = len(keyword)
    if args[:n].upper() != keyword:
        raise SMTPError(r.R501_SYNTAX)
    rest = args[n:]
    if rest[:1] == b" ":
        rest = rest[1:]
    return _decode(rest)


def parse_mail(args: bytes, offered: frozenset[str], max_size: int) -> tuple[str, MailParams]:
    """MAIL FROM:<reverse-path> [SP params]  ->  (sender, params)."""
    text = _after_keyword(args, b"FROM:")
    try:
        path, tokens = split_path(text)
    except AddressError:
        raise SMTPError(r.R501_BAD_SENDER_SYNTAX) from None
    params = parse_mail_params(tokens, offered)
    if max_size and params.size is not None and params.size > max_size:
        raise SMTPError(r.R552_MESSAGE_TOO_BIG)  # RFC 1870 6.1
    try:
        sender = parse_reverse_path(path, smtputf8=params.smtputf8)
    except AddressError as exc:
        raise SMTPError(
            r.R553_SMTPUTF8_REQUIRED if exc.needs_utf8 else r.R501_BAD_SENDER_SYNTAX
        ) from None
    return sender, params


def parse_rcpt(args: bytes, offered: frozenset[str], smtputf8: bool) -> Recipient:
    """RCPT TO:<forward-path> [SP params]; `smtputf8` comes from the accepted MAIL."""
    text = _after_keyword(args, b"TO:")
    try:
        path, tokens = split_path(text)
        address = parse_forward_path(path, smtputf8=smtputf8)
    except AddressError as exc:
        raise SMTPError(
            r.R553_SMTPUTF8_REQUIRED if exc.needs_utf8 else r.R501_BAD_RECIPIENT_SYNTAX
        ) from None
    notify, orcpt = parse_rcpt_params(tokens, offered)
    return Recipient(address, notify, orcpt)


def parse_bdat(args: bytes) -> tuple[int, bool]:
    """BDAT SP chunk-size [SP end-marker]  ->  (size, last). 501 if malformed."""
    parts = args.split(b" ")
    if not 1 <= len(parts) <= 2:
        raise SMTPError(r.R501_SYNTAX)
    size = parts[0]
    if not size.isdigit() or len(size) > MAX_BDAT_DIGITS:
        raise SMTPError(r.R501_SYNTAX)
    if len(parts) == 2 and parts[1].upper() != b"LAST":
        raise SMTPError(r.R501_SYNTAX)
    return int(size), len(parts) == 2


def auth_offered(options: ServerOptions, tls_active: bool) -> bool:
    """RFC 4954 4 / RFC 3207 6: AUTH only where the options allow it."""
    return bool(options.auth_mechanisms) and (tls_active or not options.auth_requires_tls)


def ehlo_keywords(options: ServerOptions, tls_active: bool) -> list[str]:
    """The extension lines of the EHLO reply, in a fixed order."""
    o = options
    words: list[str] = []
    if o.pipelining:
        words.append("PIPELINING")  # RFC 2920
    words.append(f"SIZE {o.max_message_size}" if o.max_message_size else "SIZE")  # RFC 1870
    if o.eightbitmime:
        words.append("8BITMIME")  # RFC 6152
    if o.smtputf8:
        words.append("SMTPUTF8")  # RFC 6531
    if o.enhanced_status_codes:
        words.append("ENHANCEDSTATUSCODES")  # RFC 2034
    if o.chunking:
        words.append("CHUNKING")  # RFC 3030
    if o.dsn:
        words.append("DSN")  # RFC 3461
    if o.tls_available and not tls_active:
        words.append("STARTTLS")  # RFC 3207
    if auth_offered(o, tls_active):
        words.append("AUTH " + " ".join(o.auth_mechanisms))  # RFC 4954
    return words


def mail_keywords(options: ServerOptions, tls_active: bool) -> frozenset[str]:
    """MAIL parameters accepted after EHLO: those of the advertised extensions."""
    words = {"SIZE"}
    if options.eightbitmime:
        words.add("BODY")
    if options.smtputf8:
        words.add("SMTPUTF8")
    if options.dsn:
        words |= {"RET", "ENVID"}
    if auth_offered(options, tls_active):
        words.add("AUTH")
    return frozenset(words)


def rcpt_keywords(options: ServerOptions) -> frozenset[str]:
    """RCPT parameters accepted after EHLO."""
    return frozenset({"NOTIFY", "ORCPT"}) if options.dsn else frozenset()
