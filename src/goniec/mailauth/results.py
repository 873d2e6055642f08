"""The Authentication-Results header field, RFC 8601: write ours, remove forged ones.

Owns:
- `authentication_results`: one header field with our host name as the
  authserv-id (RFC 8601 2.2) and one resinfo per check: spf (smtp.mailfrom or
  smtp.helo, RFC 8601 2.7.2), dkim (header.d / header.s / header.a / header.b,
  RFC 8601 2.7.1, RFC 6008), dmarc (header.from, RFC 7489 11.2), arc (RFC
  8617 10.2). The resinfo text comes from `authres`; values that a sender
  controls (explanations, reasons) are reduced to safe characters first.
- `remove_ours`: RFC 8601 5 says a receiver MUST remove (or rename) any
  Authentication-Results field that claims its authserv-id before adding its
  own, else a sender could forge our verdicts. `authserv_id_of` reads the
  authserv-id of a field value (after any comments, RFC 8601 2.2).

Pure functions; no I/O. Raises nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import authres
import authres.arc
import authres.dmarc
from authres import AuthenticationResultProperty

from goniec.mailauth.outcome import ArcResult, DkimResult, DmarcResult, InboundResults, SpfResult

_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:;=@_+/*?!#%&'~<>\[\]{}|$^-]")
_FIELD = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)


def _safe(text: str, limit: int = 120) -> str:
    """Text for a comment or a quoted reason: no CR/LF, parentheses, quotes or backslashes."""
    return re.sub(r"\s+", " ", _UNSAFE.sub(" ", text)).strip()[:limit]


def _spf(r: SpfResult) -> authres.SPFAuthenticationResult:
    comment = _safe(r.explanation) or None
    if r.identity == "helo":
        return authres.SPFAuthenticationResult(result=r.result, result_comment=comment,
                                               smtp_helo=r.domain or None)
    return authres.SPFAuthenticationResult(result=r.result, result_comment=comment,
                                           smtp_mailfrom=r.sender or None)


def _dkim(r: DkimResult) -> authres.DKIMAuthenticationResult:
    props = [AuthenticationResultProperty("header", "b", r.b)] if r.b else []
    return authres.DKIMAuthenticationResult(
        result=r.result, reason=_safe(r.reason) or None, properties=props,
        header_d=r.domain or None, header_s=r.selector or None,
        header_a=_safe(r.algorithm) or None)


def _dmarc(r: DmarcResult) -> authres.dmarc.DMARCAuthenticationResult:
    comment = None
    if r.policy is not None:
        comment = f"p={r.policy} dis={r.disposition}"
    elif r.reason:
        comment = _safe(r.reason)
    return authres.dmarc.DMARCAuthenticationResult(
        result=r.result, result_comment=comment, header_from=r.from_domain or None)


def _arc(r: ArcResult) -> authres.arc.ARCAuthenticationResult:
    comment = _safe(r.reason) or None
    return authres.arc.ARCAuthenticationResult(result=r.result, result_comment=comment)


def resinfos(results: InboundResults) -> list[str]:
    """One "method=result ..." text per check, in the order spf, dkim, dmarc, arc."""
    items: list[object] = [_spf(results.spf)]
    if results.helo is not None:
        items.append(_spf(results.helo))
    items += [_dkim(r) for r in results.dkim] or [
        authres.DKIMAuthenticationResult(result="none")]
    items.append(_dmarc(results.dmarc))
    if results.arc is not None:
        items.append(_arc(results.arc))
    return [str(i) for i in items]


def authentication_results(authserv_id: str, results: InboundResults,
                           linesep: bytes = b"\r\n") -> bytes:
    """The whole header field, folded one resinfo a line, ending in `linesep`."""
    fold = ";" + linesep.decode() + "\t"
    text = "Authentication-Results: " + authserv_id + fold + fold.join(resinfos(results))
    return text.encode("utf-8") + linesep


def authserv_id_of(value: bytes) -> str | None:
    """The authserv-id of an Authentication-Results value (comments skipped), lower case."""
    text = value.decode("utf-8", "replace")
    i, depth = 0, 0
    while i < len(text):  # skip CFWS: white space and (nested) comments
        c = text[i]
        if c == "\\" and depth:
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth and not c.isspace():
            break
        i += 1
    match = re.match(r'"((?:[^"\\]|\\.)*)"|[^\s;()]+', text[i:])
    if not match:
        return None
    found = match.group(1) if match.group(1) is not None else match.group(0)
    return found.lower().rstrip(".")


def remove_ours(message: bytes, authserv_ids: Iterable[str]) -> bytes:
    """`message` (or just its header block) without the Authentication-Results
    fields that claim one of `authserv_ids` (RFC 8601 5). The body is untouched."""
    ours = {a.lower().rstrip(".") for a in authserv_ids}
    end = re.search(rb"(\r?\n)\r?\n", message)
    cut = end.end(1) if end else len(message)
    head, rest = message[:cut], message[cut:]
    lines = head.splitlines(keepends=True)
    fields: list[list[bytes]] = []
    for line in lines:
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)  # a continuation line (RFC 5322 2.2.3)
        else:
            fields.append([line])
    kept = []
    for field in fields:
        match = _FIELD.match(field[0])
        if match and authserv_id_of(b"".join(field)[match.end():]) in ours:
            continue
        kept.append(b"".join(field))
    return b"".join(kept) + rest
