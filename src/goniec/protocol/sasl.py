"""Server side of SASL PLAIN (RFC 4616) and LOGIN inside SMTP AUTH (RFC 4954).

Owns the exchange of base64 challenges and responses up to the point where
the username and password are known; checking them is the shell's business.
Raises `SaslError` carrying the reply (501 cancelled / undecodable, 504 unknown
mechanism). No I/O.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from goniec import replies as r
from goniec.errors import Reply

# RFC 4954 4: an AUTH command line or SASL response may be 12288 octets long.
MAX_SASL_LINE = 12288

# The LOGIN mechanism's conventional challenges: "Username:" and "Password:".
LOGIN_USERNAME_CHALLENGE = "VXNlcm5hbWU6"
LOGIN_PASSWORD_CHALLENGE = "UGFzc3dvcmQ6"

_BASE64_RE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class SaslError(Exception):
    """The exchange failed; `reply` says why. The session stays usable."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send "334 <text>" (text is base64, possibly empty) and wait for a response."""

    text: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """The exchange is complete."""

    mechanism: str
    username: str
    password: str
    authzid: str = ""


def decode_response(data: bytes) -> bytes:
    """Decode one client response (RFC 4954 4): "*" cancels, "=" is empty."""
    if data == b"*":
        raise SaslError(r.R501_AUTH_CANCELLED)
    if data == b"=":
        return b""
    # RFC 4648 4: the alphabet, whole quanta, padding only at the very end.
    if not _BASE64_RE.fullmatch(data):
        raise SaslError(r.R501_AUTH_BAD_BASE64)
    return binascii.a2b_base64(data)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(r.R501_AUTH_BAD_UTF8) from None


class SaslExchange:
    """One AUTH exchange: `start()` with the optional initial response, then
    `respond()` with each client line until it returns `Credentials`."""

    __slots__ = ("mechanism", "_username")

    def __init__(self, mechanism: str, offered: tuple[str, ...]) -> None:
        mechanism = mechanism.upper()
        if mechanism not in offered:
            raise SaslError(r.R504_AUTH_MECHANISM)
        self.mechanism = mechanism
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Challenge | Credentials:
        if initial is None:
            if self.mechanism == "PLAIN":
                return Challenge("")  # RFC 4616 2: the client sends its message
            return Challenge(LOGIN_USERNAME_CHALLENGE)
        return self.respond(initial)

    def respond(self, line: bytes) -> Challenge | Credentials:
        data = decode_response(line)
        if self.mechanism == "PLAIN":
            return _plain(data)
        if self._username is None:
            self._username = _text(data)
            return Challenge(LOGIN_PASSWORD_CHALLENGE)
        return Credentials("LOGIN", self._username, _text(data))


def _plain(message: bytes) -> Credentials:
    # RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SaslError(r.R501_AUTH_MALFORMED)
    authzid, authcid, passwd = (_text(p) for p in parts)
    return Credentials("PLAIN", authcid, passwd, authzid)
