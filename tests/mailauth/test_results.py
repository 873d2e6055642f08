"""Authentication-Results (RFC 8601): our header, and forged ones of ours removed."""

from __future__ import annotations

import authres
import pytest

from goniec.mailauth.outcome import (
    ArcResult,
    DkimResult,
    DmarcResult,
    InboundResults,
    SpfResult,
)
from goniec.mailauth.results import authentication_results, authserv_id_of, remove_ours

RESULTS = InboundResults(
    spf=SpfResult("pass", "mailfrom", "example.test", "bounce+x@example.test",
                  "sender SPF authorized"),
    helo=SpfResult("none", "helo", "mail.example.test", "postmaster@mail.example.test"),
    dkim=(DkimResult("pass", "example.test", "s1", "rsa-sha256", b="AbCdEfGh"),
          DkimResult("fail", "other.test", "x", "ed25519-sha256", reason="body hash mismatch")),
    dmarc=DmarcResult("pass", "example.test", "reject", "none", True, True, "example.test"),
    arc=ArcResult("none"),
)


def test_header_lists_every_check_under_our_authserv_id() -> None:
    header = authentication_results("mx.goniec.test", RESULTS)
    assert header.endswith(b"\r\n") and header.count(b"\r\n\t") == 6
    text = header.decode()
    parsed = authres.all_features().parse(text.replace("\r\n\t", " ").strip())
    assert parsed.authserv_id == "mx.goniec.test"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"), ("spf", "none"), ("dkim", "pass"), ("dkim", "fail"),
        ("dmarc", "pass"), ("arc", "none")]
    assert "smtp.mailfrom=bounce+x@example.test" in text
    assert "smtp.helo=mail.example.test" in text
    assert "header.d=example.test" in text and "header.b=AbCdEfGh" in text
    assert 'reason="body hash mismatch"' in text
    assert "dmarc=pass (p=reject dis=none) header.from=example.test" in text


def test_no_signature_is_dkim_none_and_sender_text_is_made_safe() -> None:
    results = InboundResults(
        spf=SpfResult("fail", "mailfrom", "evil.test", "x@evil.test",
                      "go away)\r\nX-Injected: yes (\\"),
        helo=None, dkim=(),
        dmarc=DmarcResult("fail", "evil.test", "reject", "reject", reason="x"))
    header = authentication_results("mx.goniec.test", results)
    assert b"\r\nX-Injected" not in header and b"\\" not in header
    assert header.count(b"\r\n") == 4  # three folds and the end: no line of its own
    assert b"dkim=none" in header and b"dmarc=fail (p=reject dis=reject)" in header


@pytest.mark.parametrize(("value", "expected"), [
    (b" mx.goniec.test; spf=pass", "mx.goniec.test"),
    (b" MX.Goniec.Test. 1; none", "mx.goniec.test"),
    (b" (forged (nested) comment) mx.goniec.test;\r\n\tdkim=pass", "mx.goniec.test"),
    (b'  "mx.goniec.test"; none', "mx.goniec.test"),
    (b"\r\n\tother.test;none", "other.test"),
    (b" ", None),
])
def test_authserv_id_of(value: bytes, expected: str | None) -> None:
    assert authserv_id_of(value) == expected


def test_remove_ours_drops_only_our_fields_from_the_header() -> None:
    message = (b"Received: from a by b\r\n"
               b"Authentication-Results: mx.goniec.test; dkim=pass\r\n"
               b"authentication-results:(x)MX.GONIEC.TEST;\r\n\tspf=pass\r\n"
               b"Authentication-Results: other.test; spf=fail\r\n"
               b"Authentication-Results: relay.goniec.test; dmarc=pass\r\n"
               b"Subject: hi\r\n\r\n"
               b"Authentication-Results: mx.goniec.test; in the body\r\n")
    cleaned = remove_ours(message, ["mx.goniec.test", "relay.goniec.test."])
    assert cleaned == (b"Received: from a by b\r\n"
                       b"Authentication-Results: other.test; spf=fail\r\n"
                       b"Subject: hi\r\n\r\n"
                       b"Authentication-Results: mx.goniec.test; in the body\r\n")
    assert remove_ours(b"Subject: x\n\nbody\n", ["mx.goniec.test"]) == b"Subject: x\n\nbody\n"
