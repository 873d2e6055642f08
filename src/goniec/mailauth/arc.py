"""ARC, RFC 8617: validate the chain of an incoming message; seal a message we forward.

Owns, on top of dkimpy's `ARC` (the reference implementation):
- `verify`: the chain validation status (none / pass / fail, RFC 8617 5.2).
  The keys of every ARC-Seal and ARC-Message-Signature are fetched first,
  asynchronously through `DnsView`, and dkimpy checks the chain in a worker
  thread against those answers; a key lookup that fails temporarily gives
  "fail" with `temporary=True` (dkimpy alone would say "fail" silently).
- `seal`: the next ARC set (ARC-Seal, ARC-Message-Signature,
  ARC-Authentication-Results) for a message we forward. The message must
  already carry our Authentication-Results header (`results.py`), whose
  arc= result becomes cv= (RFC 8617 4.1.3, 5.1). The ARC-Message-Signature
  covers the header fields our DKIM signatures cover, over-signed the same way
  (`dkim.headers_to_sign`), so a Subject or Reply-To added after the seal breaks
  it (dkimpy's default over-signs From only). ARC signs with RSA only
  (dkimpy, rsa-sha256); dkimpy's RSA is pure Python (~6 ms per signature, two
  per set), so call `seal_in_thread` from the event loop.

Raises `SealError` from `seal` (bad key, message dkimpy cannot seal); `verify`
raises nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from concurrent.futures import Executor

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import InvalidTagValueList, parse_tag_value

from goniec.mailauth.dkim import fetch_keys, headers_to_sign
from goniec.mailauth.dkimfast import split_message
from goniec.mailauth.dnsview import DnsAnswer, DnsView
from goniec.mailauth.keys import DkimKey
from goniec.mailauth.outcome import ArcResult

ARC_HEADERS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
MAX_KEYS = 16  # distinct keys fetched per message: a forged chain must not cost 100 lookups


class SealError(ValueError):
    """The message cannot be sealed with this key."""


def key_names(message: bytes) -> tuple[set[str], int]:
    """The key names (selector._domainkey.domain) of all ARC-Seal and
    ARC-Message-Signature fields, and how many ARC-Seal fields there are."""
    end = message.find(b"\n\r\n")
    if b"arc-seal" not in message[: end if end >= 0 else None].lower():
        return set(), 0  # the common case, without parsing the header
    try:
        headers, _ = split_message(message)
    except Exception:  # dkimpy: MessageFormatError, IndexError for a leading continuation
        return set(), 0
    names: set[str] = set()
    seals = 0
    for name, value in headers:
        lower = name.lower()
        if lower not in ARC_HEADERS[:2]:
            continue
        seals += lower == b"arc-seal"
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList:
            continue
        d = tags.get(b"d", b"").decode("ascii", "replace").strip().lower().rstrip(".")
        s = tags.get(b"s", b"").decode("ascii", "replace").strip().lower()
        if d and s:
            names.add(f"{s}._domainkey.{d}")
    return names, seals


def verify_with_keys(message: bytes, keys: Mapping[str, DnsAnswer[bytes]]) -> ArcResult:
    """Validate the chain against key answers already fetched (blocking, CPU)."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        answer = keys.get(name.decode("ascii", "replace").lower().rstrip("."))
        return answer.values[0] if answer is not None and answer.values else None

    try:
        cv, results, reason = dkimpy.ARC(message, minkey=1024).verify(dnsfunc=dnsfunc)
    except Exception as exc:  # dkimpy raises many kinds; all mean the chain is broken
        return ArcResult("fail", 0, False, f"{type(exc).__name__}: {exc}")
    instances = len(results)
    if cv == dkimpy.CV_Pass:
        return ArcResult("pass", instances)
    if cv == dkimpy.CV_None:
        return ArcResult("none", 0)
    return ArcResult("fail", instances, False, str(reason))


async def verify(view: DnsView, message: bytes, *, executor: Executor | None = None
                 ) -> ArcResult:
    """RFC 8617 5.2: the chain validation status of `message`."""
    names, seals = key_names(message)
    if not seals:
        return ArcResult("none")
    if len(names) > MAX_KEYS:
        return ArcResult("fail", seals, False, f"more than {MAX_KEYS} ARC keys")
    keys = await fetch_keys(view, names)
    failed = [a.reason for a in keys.values() if a.status == "temperror"]
    if failed:
        return ArcResult("fail", seals, True, f"key lookup: {failed[0]}")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, verify_with_keys, message, keys)


def seal(message: bytes, key: DkimKey, authserv_id: str, *,
         timestamp: int | None = None) -> bytes:
    """The ARC set to put on top of `message`; b"" when there is nothing to seal
    (no Authentication-Results of ours, or a chain that has ended, RFC 8617 5.1.2)."""
    if not isinstance(key.private_key, rsa.RSAPrivateKey):
        raise SealError("ARC sealing needs an RSA key (rsa-sha256)")
    # dkimpy reads RSA keys as PKCS#1 PEM (RFC 8017 RSAPrivateKey).
    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
    try:
        # RFC 6376 8.15 (AMS signing follows DKIM's, RFC 8617 4.1.2): list the fields a
        # replay would add once more than present, as our DKIM signatures do.
        include = headers_to_sign(split_message(message)[0])
        lines = dkimpy.arc_sign(message, key.selector.encode(), key.domain.encode(), pem,
                                authserv_id.encode(), include_headers=include,
                                timestamp=timestamp)
    except (dkimpy.DKIMException, IndexError) as exc:  # IndexError: leading continuation
        raise SealError(f"cannot seal: {exc}") from None
    return b"".join(lines)


async def seal_in_thread(message: bytes, key: DkimKey, authserv_id: str, *,
                         executor: Executor | None = None) -> bytes:
    """`seal` off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        executor, functools.partial(seal, message, key, authserv_id))
