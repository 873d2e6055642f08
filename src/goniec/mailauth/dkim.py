"""DKIM, RFC 6376 (RSA, RFC 8301) and RFC 8463 (Ed25519): sign and verify.

Owns:
- `sign`: one DKIM-Signature header for a message, relaxed/relaxed (RFC 6376
  3.4.2, 3.4.4), the RFC 6376 5.4.1 header set with From and the other
  headers a replay would change over-signed (listed once more than present,
  so that adding one breaks the signature, RFC 6376 8.15). Canonicalization
  and header selection are dkimpy's; the signature itself is made by
  `cryptography` (OpenSSL): dkimpy's pure-Python RSA costs ~6 ms a message.
- `verify`: every DKIM-Signature (up to `MAX_SIGNATURES`), one `DkimResult`
  each. Key records are fetched first, asynchronously, through `DnsView`;
  dkimpy then verifies in a worker thread against those answers, so a DNS
  failure is reported as "temperror" (dkimpy alone turns it into "fail").
  rsa-sha1 never passes (RFC 8301 3.1). dkimpy's slowest steps are replaced
  by equivalent faster ones (`dkimfast`).

Result words (RFC 8601 2.7.1): pass; fail (bad signature, body hash
mismatch, expired); neutral (signature syntax errors); permerror (no key,
bad key, key too small); temperror (key lookup failed temporarily).
Raises `SignError` from `sign` only; `verify` raises nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import dkim as dkimpy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import InvalidTagValueList, parse_tag_value

from goniec.mailauth.dkimfast import relaxed_body, split_message
from goniec.mailauth.dnsview import DnsAnswer, DnsView
from goniec.mailauth.keys import DkimKey
from goniec.mailauth.outcome import DkimResult

# RFC 6376 5.4.1: the header fields that should be signed.
DEFAULT_HEADERS: tuple[str, ...] = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "resent-date", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-message-id", "in-reply-to", "references", "list-id",
    "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
    "list-archive",
)
# Signed once more than present (RFC 6376 8.15): From always (the field DMARC
# relies on), and the fields whose addition would change what a reader sees.
OVERSIGN: frozenset[str] = frozenset(
    ("from", "sender", "reply-to", "subject", "date", "to", "cc", "message-id",
     "mime-version", "content-type", "content-transfer-encoding"))
MAX_SIGNATURES = 10  # verified per message; more is an attack on our CPU and DNS
_RELAXED = b"relaxed/relaxed"
_HEADER = b"DKIM-Signature"


class SignError(ValueError):
    """The message cannot be signed (no From header, unparsable header block)."""


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """The tags of one DKIM-Signature header that decide which key to fetch."""

    index: int
    domain: str
    selector: str
    algorithm: str
    identity: str
    b: str
    error: str = ""  # set when the header cannot be parsed

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


# --- signing -----------------------------------------------------------------------
def headers_to_sign(message_headers: Sequence[Sequence[bytes]],
                    names: Sequence[str] = DEFAULT_HEADERS,
                    oversign: frozenset[str] = OVERSIGN) -> list[bytes]:
    """The h= list: each name as often as present, over-signed names once more."""
    present = Counter(field[0].lower() for field in message_headers)
    out: list[bytes] = []
    for name in names:
        raw = name.lower().encode("ascii")
        out += [raw] * (present[raw] + (1 if name.lower() in oversign else 0))
    return out


def _signature(key: DkimKey, digest: bytes) -> bytes:
    pk = key.private_key
    if isinstance(pk, ed25519.Ed25519PrivateKey):
        return pk.sign(digest)  # RFC 8463 3: PureEdDSA over the SHA-256 hash
    return pk.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def sign(message: bytes, key: DkimKey, *, headers: Sequence[str] = DEFAULT_HEADERS,
         oversign: frozenset[str] = OVERSIGN, timestamp: int | None = None,
         expire_after: int | None = None, linesep: bytes = b"\r\n") -> bytes:
    """The DKIM-Signature header (name, value, line end) to put on top of `message`.

    `timestamp` is t= (default now); `expire_after` seconds sets x= (RFC 6376 3.5).
    """
    try:
        parsed_headers, body = split_message(message)
    except (dkimpy.DKIMException, IndexError) as exc:  # IndexError: leading continuation
        raise SignError(f"cannot parse the header: {exc!r}") from None
    include = headers_to_sign(parsed_headers, headers, oversign)
    if sum(1 for n, _ in parsed_headers if n.lower() == b"from") != 1:
        raise SignError("the message must have exactly one From header (RFC 5322 3.6)")
    policy = CanonicalizationPolicy.from_c_value(_RELAXED)
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    now = int(time.time()) if timestamp is None else timestamp
    fields = [(b"v", b"1"), (b"a", key.algorithm.encode()), (b"c", _RELAXED),
              (b"d", key.domain.encode("ascii")), (b"s", key.selector.encode("ascii")),
              (b"t", str(now).encode())]
    if expire_after is not None:
        fields.append((b"x", str(now + expire_after).encode()))
    fields += [(b"h", b":".join(include)), (b"bh", body_hash)]
    # Fold now, b= alone on the last line: the header hash covers the field as it
    # will be sent, with an empty b= (RFC 6376 3.7), so folding must not change after.
    unsigned = fold_tags(fields, linesep) + b";" + linesep + b" b="
    hasher = hashlib.sha256()
    dkimpy.hash_headers(hasher, policy, policy.canonicalize_headers(parsed_headers), include,
                        (_HEADER, b" " + unsigned), None)
    b = base64.b64encode(_signature(key, hasher.digest()))
    # Base64 may carry FWS anywhere (RFC 6376 3.5 b=): lines of 72 characters.
    b_lines = (linesep + b" ").join(b[i:i + 72] for i in range(0, len(b), 72))
    return _HEADER + b": " + unsigned + b_lines + linesep


def fold_tags(fields: Sequence[tuple[bytes, bytes]], linesep: bytes = b"\r\n",
              width: int = 76) -> bytes:
    """"k=v; k=v" folded before a tag or after a ":" of h=, where RFC 6376 3.5 allows FWS."""
    units: list[tuple[bytes, bytes]] = []  # (separator if not folded, text)
    for n, (k, v) in enumerate(fields):
        parts = v.split(b":") if k == b"h" else [v]
        for i, part in enumerate(parts):
            text = (k + b"=" if i == 0 else b"") + part + (b":" if i < len(parts) - 1 else b"")
            if i == len(parts) - 1 and n < len(fields) - 1:
                text += b";"
            units.append((b" " if i == 0 and n > 0 else b"", text))
    out = bytearray()
    column = len(_HEADER) + 2
    for sep, text in units:
        if out and column + len(sep) + len(text) > width:
            out += linesep + b" " + text
            column = 1 + len(text)
        else:
            out += sep + text
            column += len(sep) + len(text)
    return bytes(out)


# --- verification --------------------------------------------------------------------
def _text(tags: Mapping[bytes, bytes], name: bytes) -> str:
    return tags.get(name, b"").decode("ascii", "replace").strip()


def signatures(message: bytes, limit: int = MAX_SIGNATURES) -> list[SignatureInfo]:
    """The DKIM-Signature headers of `message`, top first, at most `limit`."""
    try:
        parsed_headers, _ = split_message(message)
    except Exception:  # dkimpy: MessageFormatError, IndexError for a leading continuation
        return []
    found = [v for n, v in parsed_headers if n.lower() == b"dkim-signature"][:limit]
    out = []
    for index, value in enumerate(found):
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList as exc:
            out.append(SignatureInfo(index, "", "", "", "", "", f"bad tag list: {exc}"))
            continue
        domain = _text(tags, b"d").lower().rstrip(".")
        selector = _text(tags, b"s").lower()
        b = re.sub(r"\s+", "", _text(tags, b"b"))[:8]
        error = "" if domain and selector else "missing d= or s="
        out.append(SignatureInfo(index, domain, selector, _text(tags, b"a"),
                                 _text(tags, b"i"), b, error))
    return out


def _classify(exc: Exception) -> tuple[str, str]:
    text = str(exc)
    if isinstance(exc, dkimpy.KeyFormatError):
        return "permerror", f"bad key: {text}"
    if "body hash mismatch" in text:
        return "fail", "body hash mismatch"
    if "x= value is past" in text:
        return "fail", "signature expired"
    return "neutral", f"bad signature: {text}"


def verify_with_keys(message: bytes, infos: Sequence[SignatureInfo],
                     keys: Mapping[str, DnsAnswer[bytes]]) -> list[DkimResult]:
    """Verify the signatures against key answers already fetched (blocking, CPU)."""
    try:
        verifier = dkimpy.DKIM(message, minkey=1024)  # RFC 8301 3.2: no shorter RSA keys
    except Exception as exc:  # signatures() parsed it, so this is not expected
        return [DkimResult("neutral", i.domain, i.selector, i.algorithm, i.identity,
                           f"cannot parse the message: {type(exc).__name__}", i.b)
                for i in infos]

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        answer = keys.get(name.decode("ascii", "replace").lower().rstrip("."))
        return answer.values[0] if answer is not None and answer.values else None

    results = []
    for info in infos:
        base: dict[str, Any] = dict(domain=info.domain, selector=info.selector,
                                    algorithm=info.algorithm, identity=info.identity,
                                    b=info.b)
        answer = keys.get(info.key_name)
        if info.error:
            results.append(DkimResult("neutral", reason=info.error, **base))
        elif info.algorithm.lower() == "rsa-sha1":
            results.append(DkimResult("fail", reason="rsa-sha1 is not acceptable (RFC 8301)",
                                      **base))
        elif answer is None or answer.status == "temperror":
            why = answer.reason if answer is not None else "no lookup"
            results.append(DkimResult("temperror", reason=f"key lookup: {why}", **base))
        elif not answer.values:
            results.append(DkimResult("permerror", reason="no key", **base))
        else:
            try:
                dkimpy.evaluate_pk(info.key_name.encode(), answer.values[0])
                ok = verifier.verify(idx=info.index, dnsfunc=dnsfunc)
            except Exception as exc:  # dkimpy raises many kinds; all are about this signature
                result, reason = _classify(exc)
                results.append(DkimResult(result, reason=reason, **base))  # type: ignore[arg-type]
                continue
            results.append(DkimResult("pass", **base) if ok
                           else DkimResult("fail", reason="signature did not verify", **base))
    return results


async def fetch_keys(view: DnsView, names: set[str]) -> dict[str, DnsAnswer[bytes]]:
    """TXT answers for the key names, all asked at once."""
    ordered = sorted(names)
    answers = await asyncio.gather(*(view.txt(n) for n in ordered))
    return dict(zip(ordered, answers, strict=True))


async def verify(view: DnsView, message: bytes, *, executor: Executor | None = None,
                 limit: int = MAX_SIGNATURES) -> list[DkimResult]:
    """One result per DKIM-Signature (top first); [] when the message has none."""
    infos = signatures(message, limit)
    if not infos:
        return []
    keys = await fetch_keys(view, {i.key_name for i in infos if not i.error})
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, verify_with_keys, message, infos, keys)
