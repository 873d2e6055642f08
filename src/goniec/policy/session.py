"""Per-command decisions of the receiving server: the first cut.

Owns plain functions that turn facts gathered by the shell (listener mode,
login state, free space, declared size) into the reply for MAIL FROM. The full
access-control rules (connection lists, rates, sender ownership) build on this.
"""

from __future__ import annotations

from dataclasses import dataclass

from goniec.errors import Reply
from goniec.replies import (
    R250_SENDER_OK,
    R452_INSUFFICIENT_STORAGE,
    R530_AUTH_REQUIRED,
)


@dataclass(frozen=True, slots=True)
class MailFacts:
    auth_required: bool
    auth_user: str | None
    storage_ok: bool


def check_mail_from(facts: MailFacts) -> Reply:
    # RFC 4954 6: a submission listener may demand AUTH before MAIL (530 5.7.0).
    if facts.auth_required and facts.auth_user is None:
        return R530_AUTH_REQUIRED
    # RFC 1870 6.1: refuse with 452 when the spool cannot take the message now.
    if not facts.storage_ok:
        return R452_INSUFFICIENT_STORAGE
    return R250_SENDER_OK
