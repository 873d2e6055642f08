"""DKIM: our signatures verify elsewhere, others' verify here, and damage fails."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils
from dkim.canonicalization import Relaxed
from dkim.crypto import parse_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from goniec.mailauth import dkim, dkimfast
from goniec.mailauth.dnsview import DnsSettings, DnsView
from goniec.mailauth.keys import DkimKey, public_record

from .conftest import make_message, publish
from .dnsserver import ZoneServer

KEYS = ["rsa_key", "ed_key"]


def dnsfunc_for(key: DkimKey):  # type: ignore[no-untyped-def]
    record = public_record(key.private_key).encode()

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name.decode().rstrip(".") == key.record_name else None

    return lookup


def verify(view: DnsView, message: bytes) -> list[dkim.DkimResult]:
    return asyncio.run(dkim.verify(view, message))


@pytest.mark.parametrize("which", KEYS)
def test_our_signature_verifies_with_dkimpy(which: str, request: pytest.FixtureRequest) -> None:
    key: DkimKey = request.getfixturevalue(which)
    message = make_message()
    header = dkim.sign(message, key)
    assert header.startswith(b"DKIM-Signature: v=1; a=" + key.algorithm.encode())
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    assert dkimpy.verify(header + message, dnsfunc=dnsfunc_for(key))
    d = dkimpy.DKIM(header + message)
    d.verify(dnsfunc=dnsfunc_for(key))
    tags = d.signature_fields
    assert tags[b"c"] == b"relaxed/relaxed" and tags[b"d"] == b"example.test"
    # From is over-signed: listed once more than present
    assert tags[b"h"].split(b":").count(b"from") == 2


@pytest.mark.parametrize("which", KEYS)
def test_our_signature_verifies_here_and_damage_fails(
        which: str, request: pytest.FixtureRequest, dns_server: ZoneServer,
        view: DnsView) -> None:
    key: DkimKey = request.getfixturevalue(which)
    publish(dns_server, key)
    message = make_message()
    signed = dkim.sign(message, key) + message
    [ok] = verify(view, signed)
    assert (ok.result, ok.domain, ok.selector, ok.algorithm) == (
        "pass", "example.test", key.selector, key.algorithm)
    assert ok.b and signed.count(ok.b.encode()) == 1

    one_byte = signed.replace(b"Hello Bob.", b"Hello Bob!")
    [bad] = verify(view, one_byte)
    assert bad.result == "fail" and bad.reason == "body hash mismatch"
    assert not dkimpy.verify(one_byte, dnsfunc=dnsfunc_for(key))

    subject = signed.replace(b"Subject: Hello", b"Subject: Hellp")
    assert verify(view, subject)[0].result == "fail"
    # a second From would change what a reader sees: over-signing catches it
    extra_from = signed.replace(b"To: ", b"From: mallory@evil.test\r\nTo: ", 1)
    assert verify(view, extra_from)[0].result == "fail"
    # relaxed/relaxed: re-folding and trailing white space do not matter
    refolded = signed.replace(b"Subject: Hello", b"Subject:   Hello \r\n  ")
    assert verify(view, refolded)[0].result == "pass"


@pytest.mark.parametrize("algorithm", [b"rsa-sha256", b"ed25519-sha256"])
@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"simple", b"simple"),
                                   (b"relaxed", b"simple")])
def test_messages_signed_by_dkimpy_verify_here(
        algorithm: bytes, canon: tuple[bytes, bytes], rsa_key: DkimKey, ed_key: DkimKey,
        dns_server: ZoneServer, view: DnsView) -> None:
    key = rsa_key if algorithm == b"rsa-sha256" else ed_key
    publish(dns_server, key)
    pk = key.private_key
    if algorithm == b"rsa-sha256":
        secret = pk.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    else:
        secret = base64.b64encode(pk.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()))
    message = make_message()
    header = dkimpy.sign(message, key.selector.encode(), b"example.test", secret,
                         canonicalize=canon, signature_algorithm=algorithm)
    [result] = verify(view, header + message)
    assert result.result == "pass", result


def test_each_signature_gets_its_result(rsa_key: DkimKey, ed_key: DkimKey,
                                        dns_server: ZoneServer, view: DnsView) -> None:
    publish(dns_server, rsa_key)
    publish(dns_server, ed_key)
    message = make_message()
    unpublished = DkimKey("other.test", "gone", rsa_key.private_key)
    signed = (dkim.sign(message, ed_key) + dkim.sign(message, rsa_key)
              + dkim.sign(message, unpublished) + message)
    results = verify(view, signed)
    assert [(r.result, r.algorithm) for r in results] == [
        ("pass", "ed25519-sha256"), ("pass", "rsa-sha256"), ("permerror", "rsa-sha256")]
    assert results[2].reason == "no key" and results[2].domain == "other.test"


def test_key_and_signature_problems(rsa_key: DkimKey, dns_server: ZoneServer) -> None:
    view = DnsView(DnsSettings(("127.0.0.1",), dns_server.port, 1.0), cache=False)
    message = make_message()
    signed = dkim.sign(message, rsa_key) + message
    dns_server.add(rsa_key.record_name, "TXT", "v=DKIM1; k=rsa; p=bm90IGEga2V5")
    [bad_key] = verify(view, signed)
    assert bad_key.result == "permerror" and bad_key.reason.startswith("bad key")

    dns_server.zone[rsa_key.record_name] = ["SERVFAIL"]
    [temp] = verify(view, signed)
    assert temp.result == "temperror"

    garbled = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=rsa1; b\r\n" + message
    [syntax] = verify(view, garbled)
    assert syntax.result == "neutral"
    assert verify(view, message) == []


def test_a_dead_name_server_gives_temperror_within_the_timeout(
        rsa_key: DkimKey, silent_port: int) -> None:
    view = DnsView(DnsSettings(("127.0.0.1",), silent_port, 0.5))
    message = make_message()
    signed = dkim.sign(message, rsa_key) + message
    started = time.monotonic()
    [result] = verify(view, signed)
    assert result.result == "temperror" and "timeout" in result.reason
    assert time.monotonic() - started < 1.5


def test_unparsable_headers_are_handled(rsa_key: DkimKey, view: DnsView) -> None:
    broken = b" leading continuation\r\nFrom: a@example.test\r\n\r\nhi\r\n"
    with pytest.raises(dkim.SignError):
        dkim.sign(broken, rsa_key)
    assert verify(view, broken) == []


def test_signing_needs_exactly_one_from(rsa_key: DkimKey) -> None:
    with pytest.raises(dkim.SignError):
        dkim.sign(b"To: bob@goniec.test\r\n\r\nhi\r\n", rsa_key)
    with pytest.raises(dkim.SignError):
        dkim.sign(b"From: a@example.test\r\nFrom: b@example.test\r\n\r\nhi\r\n", rsa_key)


def test_bare_lf_messages_sign_and_verify(ed_key: DkimKey) -> None:
    message = make_message().replace(b"\r\n", b"\n")
    header = dkim.sign(message, ed_key, linesep=b"\n")
    assert b"\r" not in header
    assert dkimpy.verify(header + message, dnsfunc=dnsfunc_for(ed_key))


# --- OpenDKIM, an independent C implementation --------------------------------------
def _opendkim_usable() -> bool:
    if not (shutil.which("opendkim-testmsg") and shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _opendkim_usable(),
                    reason="opendkim-testmsg (opendkim-tools) or unshare not available")
@pytest.mark.parametrize("which", KEYS)
def test_opendkim_verifies_our_signature(which: str, request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    """opendkim-testmsg asks the system resolver on port 53, so it runs in a network
    namespace of its own with a DNS server on that namespace's loopback."""
    key: DkimKey = request.getfixturevalue(which)
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps({key.record_name: [["TXT", public_record(key.private_key)]]}))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    helper = Path(__file__).with_name("opendkim_helper.py")
    message = make_message()
    signed = dkim.sign(message, key) + message
    outcomes = {}
    for label, data in (("good", signed), ("damaged", signed.replace(b"See you", b"See yoU"))):
        eml = tmp_path / f"{label}.eml"
        eml.write_bytes(data)
        done = subprocess.run(["unshare", "--net", "--mount", sys.executable, str(helper),
                               str(zone), str(eml), str(resolv)], capture_output=True,
                              timeout=60)
        outcomes[label] = (done.returncode, done.stdout.decode(errors="replace"))
    assert outcomes["good"] == (0, ""), outcomes
    assert outcomes["damaged"][0] != 0 and "Bad signature" in outcomes["damaged"][1]


# --- our fast paths give dkimpy's answers ----------------------------------------------
_piece = st.sampled_from([b"a", b"b c", b" ", b"\t", b"  ", b"\r\n", b"\n", b"\r", b"x\t y"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_piece, max_size=30).map(b"".join))
def test_relaxed_body_is_dkimpy_s(body: bytes) -> None:
    crlf = re.sub(rb"\r?\n", b"\r\n", body)  # bodies reach canonicalization with CRLF
    assert dkimfast.relaxed_body(crlf) == dkimfast.original_relaxed_body(crlf)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"From: a@b.test", b"Subject: x", b" folded", b"\tmore",
                                 b"", b"body  line ", b"\r"]), max_size=12))
def test_split_message_is_rfc822_parse(lines: list[bytes]) -> None:
    for sep in (b"\r\n", b"\n"):
        message = sep.join(lines)
        try:
            expected = dkimfast.original_rfc822_parse(message)
        except (dkimpy.MessageFormatError, IndexError) as exc:
            with pytest.raises(type(exc)):
                dkimfast.split_message(message)
            continue
        assert dkimfast.split_message(message) == expected


def test_openssl_rsa_check_agrees_with_dkimpy_s(rsa_key: DkimKey) -> None:
    assert dkimpy.RSASSA_PKCS1_v1_5_verify is dkimfast.rsa_verify
    assert dkimpy.rfc822_parse is dkimfast.split_message
    assert Relaxed.canonicalize_body is dkimfast.relaxed_body
    spki = base64.b64decode(public_record(rsa_key.private_key).split("p=")[1])
    public = parse_public_key(spki)
    hashed = dkimpy.HashThrough(hashlib.sha256())
    hashed.update(b"some header text")
    good = rsa_key.private_key.sign(hashed.digest(), padding.PKCS1v15(),  # type: ignore[union-attr]
                                    utils.Prehashed(hashes.SHA256()))
    bad = good[:-1] + bytes([good[-1] ^ 1])
    for signature, expected in ((good, True), (bad, False), (good[:-1], False)):
        assert dkimfast.rsa_verify(hashed, signature, public) is expected
        assert bool(dkimfast.original_rsa_verify(hashed, signature, public)) is expected


def test_rsa_sha1_never_passes(rsa_key: DkimKey, dns_server: ZoneServer, view: DnsView) -> None:
    publish(dns_server, rsa_key)
    pem = rsa_key.private_key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption())
    message = make_message()
    header = dkimpy.sign(message, b"rsa1", b"example.test", pem, signature_algorithm=b"rsa-sha1")
    [result] = verify(view, header + message)
    assert result.result == "fail" and "RFC 8301" in result.reason
