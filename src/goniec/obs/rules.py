"""Stable names for refusals: which rule a rejection reply came from (for metrics).

Owns `rule_of(reply)`: the catalog reply (goniec.replies) a refusal was made
from, as a short name that never changes with the wording or the host name
(`relay_denied`, `recipient_unknown`, `rate_limit`, `dmarc`, ...). A reply
is matched by code and enhanced code, then by its catalog text, which the
sender may have prefixed with the host name (`with_hostname`) or extended
(`relay_denied`, the DMARC/SPF details). Anything else is "other". No I/O;
raises nothing.
"""

from __future__ import annotations

from goniec import replies as r
from goniec.errors import Reply

# The catalog reply -> its rule name. Several replies may share a rule.
_RULES: tuple[tuple[Reply, str], ...] = (
    # connect (goniec.policy.client, the connection limits)
    (r.R554_ACCESS_DENIED, "access_denied"),
    (r.R554_NO_REVERSE_DNS, "reverse_dns"),
    (r.R421_REVERSE_DNS_TEMP, "reverse_dns_temp"),
    (r.R421_CONNECTION_RATE, "rate_limit"),
    (r.R421_TOO_MANY_CONNECTIONS, "connection_limit"),
    # HELO
    (r.R501_BAD_HELO, "helo_invalid"),
    (r.R504_HELO_NOT_FQDN, "helo_not_fqdn"),
    (r.R550_HELO_MISMATCH, "helo_mismatch"),
    # AUTH gate (goniec.policy.login)
    (r.R421_LOGIN_LOCKED, "login_lockout"),
    (r.R454_LOGIN_RATE_USER, "login_rate"),
    # MAIL (goniec.policy.transaction)
    (r.R530_AUTH_REQUIRED, "auth_required"),
    (r.R553_SENDER_NOT_OWNED, "sender_not_owned"),
    (r.R421_TOO_MANY_MESSAGES, "session_messages"),
    (r.R452_SESSION_SIZE, "session_size"),
    (r.R452_INSUFFICIENT_STORAGE, "storage"),
    (r.R450_MESSAGE_RATE, "rate_limit"),
    (r.R450_USER_MESSAGE_RATE, "rate_limit"),
    # RCPT (goniec.policy.relay)
    (r.R452_TOO_MANY_RECIPIENTS, "too_many_recipients"),
    (r.R550_RELAY_DENIED, "relay_denied"),
    (r.R550_UNKNOWN_USER, "recipient_unknown"),
    (r.R451_DNS_TEMP, "dns_temp"),
    # body (the core, goniec.policy.transaction, goniec.mailauth.decision)
    (r.R552_MESSAGE_TOO_BIG, "size"),
    (r.R554_TOO_MANY_HOPS, "hop_count"),
    (r.R554_BARE_LINE_ENDING, "bare_line_ending"),
    (r.R554_MESSAGE_LINE_TOO_LONG, "line_too_long"),
    (r.R550_DMARC_REJECT, "dmarc"),
    (r.R550_SPF_FAIL, "spf"),
    (r.R451_SPF_TEMP, "spf_temp"),
    (r.R451_DMARC_TEMP, "dmarc_temp"),
    (r.R451_LOCAL_ERROR, "local_error"),
    (r.R554_NO_VALID_RECIPIENTS, "no_valid_recipients"),
)

RULE_NAMES: frozenset[str] = frozenset(name for _, name in _RULES) | {"other"}

_BY_CODE: dict[tuple[int, str | None], list[tuple[str, str]]] = {}
for _reply, _name in _RULES:
    _BY_CODE.setdefault((_reply.code, _reply.enhanced), []).append((_reply.text, _name))
for _list in _BY_CODE.values():
    _list.sort(key=lambda item: -len(item[0]))  # the most specific text first
del _reply, _name, _list


def rule_of(reply: Reply) -> str:
    """The rule name of a refusal made from the catalog, else "other"."""
    candidates = _BY_CODE.get((reply.code, reply.enhanced))
    if not candidates:
        return "other"
    if len(candidates) == 1:
        return candidates[0][1]
    text = reply.text
    for known, name in candidates:
        # Exact, extended ("Unable to relay for <x>"), or behind the host name.
        if text.startswith(known) or text.endswith(known):
            return name
    return "other"
