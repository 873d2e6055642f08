"""Envelope and session facts shared by every layer (layer 0).

Owns the plain data that travels from the protocol core through policy into the
queue: what the client said in MAIL and RCPT (with their ESMTP parameters) and
what the server knows about the session. No I/O, no parsing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NOTIFY_NEVER = "NEVER"
NOTIFY_SUCCESS = "SUCCESS"
NOTIFY_FAILURE = "FAILURE"
NOTIFY_DELAY = "DELAY"


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of MAIL FROM.

    size: RFC 1870 SIZE= (declared, may be None); body: RFC 6152 "7BIT" or
    "8BITMIME" (None when not given); smtputf8: RFC 6531; ret ("FULL"/"HDRS")
    and envid (decoded from xtext): RFC 3461; auth: RFC 4954 AUTH= mailbox,
    decoded from xtext ("<>" when the client gave it as unknown).
    """

    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RCPT TO: the forward-path mailbox and its RFC 3461 parameters.

    address: the mailbox as "local@domain" (source route removed, RFC 5321 Appendix C).
    notify: None when NOTIFY was not given, else a frozenset of NOTIFY_* words.
    orcpt: the ORCPT value as "addr-type;address" with the xtext decoded.
    """

    address: str
    notify: frozenset[str] | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """The accepted transaction: reverse-path ("" for the null sender) and recipients."""

    sender: str
    recipients: tuple[Recipient, ...]
    params: MailParams = field(default_factory=MailParams)


@dataclass(slots=True)
class SessionInfo:
    """What the server knows about one client connection, for policy, Received: and logs."""

    session_id: str
    peer_ip: str
    peer_port: int
    local_ip: str = ""
    local_port: int = 0
    listener: str = ""
    helo: str | None = None
    esmtp: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    auth_user: str | None = None
    reverse_name: str | None = None

    @property
    def protocol_word(self) -> str:
        """The "with" word of Received: (RFC 3848): SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
        if not self.esmtp:
            return "SMTP"
        word = "ESMTP"
        if self.tls_version:
            word += "S"
        if self.auth_user:
            word += "A"
        return word
