"""ARC sealing (RFC 8617) of copies the delivery worker forwards to outside addresses."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import dkim
import dns.resolver
import pytest
from tests.mailauth.dnsserver import ZoneServer

from goniec.mailauth.keys import DkimKey, generate, public_record
from goniec.model import Recipient
from goniec.policy.recipients import RecipientTable

from .runner_support import Got, Harness, Peer

OURS = (b"Authentication-Results: mx.goniec.test;\r\n\tspf=pass smtp.mailfrom=sender.test;"
        b"\r\n\tdkim=none;\r\n\tdmarc=pass (p=reject dis=none) header.from=sender.test;"
        b"\r\n\tarc=none\r\n")
MESSAGE = (b"Received: from mail.sender.test ([192.0.2.10]) by mx.goniec.test; "
           b"Mon, 01 Jan 2024 10:00:00 +0000\r\n"
           b"From: Alice <alice@sender.test>\r\nTo: away@goniec.test\r\nSubject: arc\r\n"
           b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <arc1@sender.test>\r\n"
           b"\r\nHello.\r\n")
TABLE = RecipientTable(forwards={"away": ("away@far.test",)})


@pytest.fixture(scope="module")
def arc_key() -> DkimKey:
    return DkimKey("goniec.test", "arc1", generate("rsa"))


@pytest.fixture(scope="module")
def zone(arc_key: DkimKey) -> object:
    server = ZoneServer().start()
    server.add(arc_key.record_name, "TXT", public_record(arc_key.private_key))
    yield server
    server.stop()


def forward(tmp_path: Path, body: bytes, key_for: object) -> Got:
    sink = Peer().start()

    async def main() -> Got:
        h = Harness(tmp_path, {"far.test": sink.port}, local_domains=frozenset({"goniec.test"}),
                    tables={"goniec.test": TABLE})
        h.runner.worker.arc_key = key_for  # type: ignore[assignment]  # as build_service would
        await h.put(Recipient("away@goniec.test"), body=body)
        for _ in range(3):
            await h.runner.run_once()
        assert h.store.list_ids() == []
        await h.close()
        [got] = [g for g in sink.received if g.rcpts == ["away@far.test"]]
        return got
    try:
        return asyncio.run(main())
    finally:
        sink.stop()


def arc_verify(zone: ZoneServer, message: bytes) -> tuple[bytes, str]:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], zone.port

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        return b"".join(b"".join(r.strings) for r in answer)

    cv, _, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    return cv, reason


def test_forward_is_sealed_with_the_domains_key(tmp_path: Path, zone: ZoneServer,
                                                arc_key: DkimKey) -> None:
    asked: list[tuple[str, int]] = []

    def key_for(domain: str, size: int) -> DkimKey | None:
        asked.append((domain, size))
        return arc_key if domain == "goniec.test" else None

    got = forward(tmp_path, OURS + MESSAGE, key_for)
    assert asked == [("goniec.test", len(OURS + MESSAGE))]
    assert got.data.startswith(b"ARC-Seal: i=1; cv=none;")
    for name in (b"ARC-Message-Signature: i=1;", b"ARC-Authentication-Results: i=1;"):
        assert name in got.data
    assert got.data.endswith(b"Delivered-To: away@goniec.test\r\n" + OURS + MESSAGE)
    assert arc_verify(zone, got.data) == (dkim.CV_Pass, "success")
    # a change on the way breaks the seal: the next hop can tell
    assert arc_verify(zone, got.data + b"footer\r\n")[0] == dkim.CV_Fail


def test_forward_unsealed_without_a_key_or_our_results(tmp_path: Path,
                                                       arc_key: DkimKey) -> None:
    plain = b"Delivered-To: away@goniec.test\r\n"
    assert forward(tmp_path / "a", OURS + MESSAGE, lambda d, n: None).data == (
        plain + OURS + MESSAGE)
    # inbound checks off: no Authentication-Results of ours, nothing to seal
    assert forward(tmp_path / "b", MESSAGE, lambda d, n: arc_key).data == plain + MESSAGE


def test_seal_failure_forwards_unsealed(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    ed = DkimKey("goniec.test", "ed1", generate("ed25519"))  # ARC cannot use it
    with caplog.at_level(logging.WARNING, "goniec.delivery"):
        got = forward(tmp_path, OURS + MESSAGE, lambda d, n: ed)
    assert got.data == b"Delivered-To: away@goniec.test\r\n" + OURS + MESSAGE
    [line] = [r.getMessage() for r in caplog.records if "arc_failed" in r.getMessage()]
    assert "key=ed1._domainkey.goniec.test" in line and "SealError" in line


def test_seal_oversigns_like_our_dkim(zone: ZoneServer, arc_key: DkimKey) -> None:
    """The ARC-Message-Signature lists the fields a replay would add once more than present
    (RFC 6376 8.15), as our DKIM signatures do: a Subject, From or Reply-To added after
    the seal breaks it (dkimpy's default h= over-signs From only)."""
    from goniec.mailauth import arc

    message = b"Delivered-To: away@goniec.test\r\n" + OURS + MESSAGE
    sealed = arc.seal(message, arc_key, "mx.goniec.test") + message
    assert arc_verify(zone, sealed) == (dkim.CV_Pass, "success")
    ams = sealed.split(b"ARC-Message-Signature:", 1)[1].split(b"bh=", 1)[0]
    signed = [h.strip() for h in b"".join(ams.split()).split(b"h=", 1)[1].rstrip(b";").split(b":")]
    assert signed.count(b"subject") == 2 and signed.count(b"reply-to") == 1, signed
    at = sealed.index(b"From: Alice")
    for added in (b"Subject: URGENT: wire money\r\n", b"Reply-To: x@elsewhere.invalid\r\n",
                  b"From: CEO <ceo@goniec.test>\r\n"):
        assert arc_verify(zone, sealed[:at] + added + sealed[at:])[0] == dkim.CV_Fail, added
