"""ESMTP parameters of MAIL FROM and RCPT TO (RFC 5321 4.1.2 esmtp-param).

Owns the syntax and meaning of SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
(RFC 6531), RET/ENVID/NOTIFY/ORCPT (RFC 3461) and AUTH= (RFC 4954 5), and
xtext decoding (RFC 3461 4). The caller says which keywords are on offer; any
other keyword is unknown. Raises `SMTPError` carrying the reply (501 for a bad
value, 555 for unknown, duplicate or unsupported parameters). No I/O.
"""

from __future__ import annotations

import re

from goniec import replies as r
from goniec.errors import SMTPError
from goniec.model import (
    NOTIFY_DELAY,
    NOTIFY_FAILURE,
    NOTIFY_NEVER,
    NOTIFY_SUCCESS,
    MailParams,
)

# RFC 3461 4.4 and 4.2: length limits of the (encoded) values.
MAX_ENVID = 100
MAX_ORCPT = 500
MAX_SIZE_DIGITS = 20

# RFC 5321 4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-");
# esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 3.3 adds UTF8-non-ascii.
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*+")
_VALUE_RE = re.compile("[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]++")
# RFC 3461 4: xtext = *( xchar / hexchar ), xchar excludes "+" and "=".
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*+")
_HEXCHAR_RE = re.compile(rb"\+([0-9A-Fa-f]{2})")
_ADDR_TYPE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]++")  # RFC 822 atom
_NOTIFY_WORDS = frozenset({NOTIFY_SUCCESS, NOTIFY_FAILURE, NOTIFY_DELAY})

MAIL_KEYWORDS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"})
RCPT_KEYWORDS = frozenset({"NOTIFY", "ORCPT"})


def _bad() -> SMTPError:
    return SMTPError(r.R501_BAD_PARAMETER)


def split_params(tokens: list[str], offered: frozenset[str]) -> dict[str, str | None]:
    """Map each KEYWORD (uppercased) to its value (None when given without "=").

    555 for a keyword not in `offered` or given twice, 501 for bad syntax.
    """
    result: dict[str, str | None] = {}
    for token in tokens:
        keyword, eq, value = token.partition("=")
        if not _KEYWORD_RE.fullmatch(keyword) or (eq and not _VALUE_RE.fullmatch(value)):
            raise SMTPError(r.R501_SYNTAX)
        keyword = keyword.upper()
        if keyword not in offered:
            raise SMTPError(r.R555_UNKNOWN_PARAMETER)
        if keyword in result:
            raise SMTPError(r.R555_DUPLICATE_PARAMETER)
        result[keyword] = value if eq else None
    return result


def decode_xtext(value: str) -> str:
    """RFC 3461 4: decode "+XX" escapes; the octets must form UTF-8 (else 501)."""
    if not _XTEXT_RE.fullmatch(value):
        raise _bad()
    raw = value.encode("ascii")
    if b"+" in raw:
        raw = _HEXCHAR_RE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad() from None


def parse_mail_params(tokens: list[str], offered: frozenset[str]) -> MailParams:
    """Parse MAIL FROM parameters; `offered` is the subset of MAIL_KEYWORDS on offer."""
    if not tokens:
        return _NO_MAIL_PARAMS
    found = split_params(tokens, offered)
    size = body = ret = envid = auth = None
    smtputf8 = False
    for keyword, value in found.items():
        if keyword == "SMTPUTF8":  # RFC 6531 3.4: no value
            if value is not None:
                raise _bad()
            smtputf8 = True
            continue
        if value is None:
            raise _bad()
        if keyword == "SIZE":  # RFC 1870 6: size-value = 1*20DIGIT
            if not (value.isascii() and value.isdigit()) or len(value) > MAX_SIZE_DIGITS:
                raise _bad()
            size = int(value)
        elif keyword == "BODY":  # RFC 6152 2
            body = value.upper()
            if body == "BINARYMIME":  # RFC 3030 3: not offered here
                raise SMTPError(r.R555_UNSUPPORTED_BODY)
            if body not in ("7BIT", "8BITMIME"):
                raise _bad()
        elif keyword == "RET":  # RFC 3461 4.3
            ret = value.upper()
            if ret not in ("FULL", "HDRS"):
                raise _bad()
        elif keyword == "ENVID":  # RFC 3461 4.4: printable US-ASCII, at most 100
            if len(value) > MAX_ENVID:
                raise _bad()
            envid = decode_xtext(value)
            if not all(" " <= c <= "~" for c in envid):
                raise _bad()
        else:  # AUTH, RFC 4954 5: AUTH=<> or AUTH=xtext(mailbox)
            auth = value if value == "<>" else decode_xtext(value)
    return MailParams(size, body, smtputf8, ret, envid, auth)


def parse_rcpt_params(
    tokens: list[str], offered: frozenset[str]
) -> tuple[frozenset[str] | None, str | None]:
    """Parse RCPT TO parameters into (notify, orcpt) for `goniec.model.Recipient`."""
    if not tokens:
        return None, None
    found = split_params(tokens, offered)
    notify = orcpt = None
    for keyword, value in found.items():
        if value is None:
            raise _bad()
        if keyword == "NOTIFY":  # RFC 3461 4.1
            words = frozenset(value.upper().split(","))
            if words != {NOTIFY_NEVER} and not words <= _NOTIFY_WORDS:
                raise _bad()
            notify = words
        else:  # ORCPT, RFC 3461 4.2: addr-type ";" xtext
            addr_type, semi, address = value.partition(";")
            if len(value) > MAX_ORCPT or not semi or not _ADDR_TYPE_RE.fullmatch(addr_type):
                raise _bad()
            orcpt = f"{addr_type};{decode_xtext(address)}"
    return notify, orcpt


_NO_MAIL_PARAMS = MailParams()
