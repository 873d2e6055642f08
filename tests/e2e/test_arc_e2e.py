"""ARC end to end (RFC 8617): the real `goniec serve` checks mail from the internet,
forwards it to an outside address through its own delivery runner, and the copy
that arrives carries an ARC set the next hop can verify.

Everything on loopback. One dnslib server on 127.0.0.1 holds the whole zone: the
senders' SPF, DKIM and DMARC records, goniec's ARC key (`arc1._domainkey.goniec.test`)
and the MX of the destination far.test (-> 127.0.0.1, where an aiosmtpd `Sink`
listens on `[delivery] port`). Clients connect from 127.0.0.2 and 127.0.0.3, which
are not on the relay list (only 127.0.0.1 is), so their mail is "from the internet"
and checked with `mailauth.inbound = "on"` (DMARC recorded, not enforced).
`away@goniec.test` forwards to `away@far.test`; the forwarded copy is sealed with
goniec's `[[mailauth.dkim]]` key marked `arc = true`, and dkimpy's `arc_verify`,
asking the same zone server over UDP as a receiver would, checks the seal.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Callable, Iterator
from typing import Any

import authres
import dkim as dkimpy
import dns.message
import dns.query
import pytest
from cryptography.hazmat.primitives import serialization
from tests.mailauth.dnsserver import ZoneServer

from goniec.mailauth.keys import generate, keygen, public_record
from goniec.testing.process import ServerProcess, make_server

from mailpeers import Got, Sink, logs_of, wait_until  # isort: skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

AUTHSERV = "mx.goniec.test"  # make_server's server.hostname: our authserv-id
SENDER_KEY = generate("rsa")  # good.example's DKIM key (the sender's, not ours)
FORWARD_FROM, FORWARD_TO = "away@goniec.test", "away@far.test"


# --- helpers ----------------------------------------------------------------------------------

def message(sender: str, subject: str) -> bytes:
    return (f"From: Sender <{sender}>\r\nTo: <{FORWARD_FROM}>\r\nSubject: {subject}\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <{time.monotonic_ns()}@arc.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            "\r\nHello, this goes on to far.test.\r\n").encode()


def dkim_sign(msg: bytes, domain: str = "good.example", selector: str = "s1") -> bytes:
    pem = SENDER_KEY.private_bytes(serialization.Encoding.PEM,  # type: ignore[union-attr]
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption())
    header: bytes = dkimpy.sign(msg, selector.encode(), domain.encode(), pem,
                                canonicalize=(b"relaxed", b"relaxed"))
    return header + msg


def send_from(source: str, port: int, sender: str, body: bytes) -> None:
    """One message to FORWARD_FROM from `source` (a loopback address off the relay list)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=15, source_address=(source, 0)) as client:
        client.ehlo("client.sender.example")
        assert not client.sendmail(sender, [FORWARD_FROM], body)


def headers(data: bytes, name: str) -> list[bytes]:
    """The unfolded values of header field `name`, top first."""
    head = re.sub(rb"\r\n[ \t]+", b" ", data.split(b"\r\n\r\n", 1)[0])
    prefix = name.lower().encode() + b":"
    return [line[len(prefix):].strip() for line in head.split(b"\r\n")
            if line.lower().startswith(prefix)]


def txt_lookup(zone: ZoneServer) -> Callable[..., bytes | None]:
    """A dnsfunc for dkimpy: asks the loopback zone server over UDP, as a receiver would."""
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        query = dns.message.make_query(name.decode().rstrip("."), "TXT")
        answer = dns.query.udp(query, "127.0.0.1", port=zone.port, timeout=timeout)
        found = [b"".join(r.strings) for rrset in answer.answer for r in rrset]
        return found[0] if found else None
    return lookup


def arc_verify(zone: ZoneServer, data: bytes) -> tuple[bytes, list[dict[str, Any]], str]:
    cv, results, reason = dkimpy.arc_verify(data, dnsfunc=txt_lookup(zone))
    return cv, results, reason


def results_of(value: bytes) -> set[str]:
    """`method=result` and properties of one A-R / AAR value (no comments, no i=)."""
    text = re.sub(r"^i=\d+;\s*", "", value.decode())
    parsed = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {text}")
    assert parsed.authserv_id == AUTHSERV, text
    return {str(r) for r in parsed.results}


# --- the zone, the destination, the server -------------------------------------------------------

@pytest.fixture(scope="module")
def arc_zone() -> Iterator[ZoneServer]:
    server = ZoneServer().start()
    server.zone = {
        # SPF, DKIM and DMARC all pass for good.example mail from 127.0.0.2.
        "good.example": [("TXT", "v=spf1 ip4:127.0.0.2 -all")],
        "s1._domainkey.good.example": [("TXT", public_record(SENDER_KEY))],
        "_dmarc.good.example": [("TXT", "v=DMARC1; p=reject")],
        # Nobody on loopback may send for strict.example, which asks for reject.
        "strict.example": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
        "_dmarc.strict.example": [("TXT", "v=DMARC1; p=reject")],
        # The forwarded copy's destination.
        "far.test": [("MX", (10, "mx.far.test"))],
        "mx.far.test": [("A", "127.0.0.1")],
    }
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as peer:
        yield peer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, arc_zone: ZoneServer,
           sink: Sink) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("arc")
    key_path, record = keygen(workdir / "dkim", "goniec.test", "arc1")
    arc_zone.add("arc1._domainkey.goniec.test", "TXT", record)
    srv = make_server(
        workdir,
        listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
        domains={"local": ["goniec.test"]},
        relay={"networks": ["127.0.0.1"]},
        dns={"nameservers": ["127.0.0.1"], "port": arc_zone.port, "timeout": 2},
        mailauth={"inbound": "on"},  # dmarc = "record": failures are accepted and marked
        delivery={"enabled": True, "port": sink.port, "scan_interval": 0.1, "retry": ["1s"],
                  "connect_timeout": 2, "command_timeout": 5, "idle_timeout": 1},
    )
    # make_server writes two-level tables: deeper tables and arrays go in by dotted name.
    srv.config['recipients."goniec.test"'] = {"mailboxes": ["postmaster"]}
    srv.config['recipients."goniec.test".forwards'] = {"away": FORWARD_TO}
    srv.config["mailauth.dkim"] = [{"domain": "goniec.test", "selector": "arc1",
                                    "key_file": str(key_path), "arc": True}]
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def forwarded(server: ServerProcess, sink: Sink, subject: str) -> Got:
    """The one copy that reached the destination with `subject`, once goniec is done."""
    def arrived() -> list[Got]:
        return [g for g in sink.received() if f"Subject: {subject}\r\n".encode() in g.data]
    wait_until(lambda: bool(arrived()) and not server.spool_ids(),
               f"the forwarded copy of {subject!r} at far.test", timeout=15,
               logs=logs_of(server))
    [got] = arrived()
    assert got.rcpts == (FORWARD_TO,)
    return got


# --- 1. a checked message forwarded with a valid ARC set --------------------------------------

@pytest.fixture(scope="module")
def passing(server: ServerProcess, sink: Sink) -> tuple[bytes, Got]:
    original = dkim_sign(message("alice@good.example", "arc passing"))
    send_from("127.0.0.2", server.port, "alice@good.example", original)
    return original, forwarded(server, sink, "arc passing")


def test_forwarded_copy_carries_a_valid_arc_set(server: ServerProcess, arc_zone: ZoneServer,
                                                passing: tuple[bytes, Got]) -> None:
    original, got = passing
    data = got.data
    assert got.sender == "alice@good.example"  # failures still go to the original sender
    # The set on top, one of each, instance 1, made with goniec.test's ARC key.
    assert data.startswith(b"ARC-Seal: ")
    [seal] = headers(data, "ARC-Seal")
    [ams] = headers(data, "ARC-Message-Signature")
    [aar] = headers(data, "ARC-Authentication-Results")
    for value in (seal, ams):
        assert re.search(rb"(^|; )i=1;", value) and b"a=rsa-sha256" in value, value
        assert b"d=goniec.test" in value and b"s=arc1" in value, value
    assert re.search(rb"(^|; )cv=none;", seal), seal  # i=1: no chain before ours
    assert aar.startswith(f"i=1; {AUTHSERV};".encode()), aar
    for word in (b"spf=pass", b"dkim=pass", b"header.d=good.example", b"dmarc=pass",
                 b"header.from=good.example", b"arc=none"):
        assert word in aar, aar
    # Below it: Delivered-To, goniec's own trace and results, then the message as sent.
    assert data.endswith(original)
    body_start = data.index(b"Delivered-To: ")
    assert data[body_start:].startswith(f"Delivered-To: {FORWARD_FROM}\r\nReceived: ".encode())
    [ours] = headers(data, "Authentication-Results")
    assert results_of(aar) == results_of(ours)  # the AAR says what our A-R said
    # The next hop's view: the chain verifies against the published key, and the
    # sender's own DKIM signature survived the forward.
    cv, results, reason = arc_verify(arc_zone, data)
    assert (cv, reason) == (dkimpy.CV_Pass, "success"), (cv, reason, results)
    [one] = results
    assert one["instance"] == 1 and one["cv"] == dkimpy.CV_None
    assert one["as-valid"] and one["ams-valid"]
    assert (one["as-domain"], one["as-selector"]) == (b"goniec.test", b"arc1")
    assert dkimpy.verify(data, dnsfunc=txt_lookup(arc_zone))
    assert ("arc1._domainkey.goniec.test", "TXT") in arc_zone.queries
    log = server.log()
    line = re.search(rf"delivery\.forwarded [^\n]*rcpt={FORWARD_FROM}[^\n]*", log)
    assert line and "arc=sealed" in line.group(0) and f"to={FORWARD_TO}" in line.group(0), log
    assert "arc_failed" not in log


# --- 2. one changed byte breaks it -----------------------------------------------------------
# Bytes the ARC set covers: the body (bh=), a signed header field (AMS h=: the RFC 6376
# 5.4.1 set, as our DKIM signing uses), the AAR and the AMS (ARC-Seal). Trace fields
# (Received, Delivered-To, Authentication-Results) are outside h=, as in DKIM.

@pytest.mark.parametrize(("anchor", "inside"), [
    (b"\r\n\r\n", b"Hello, this goes"),  # the body
    (b"\r\nSubject: ", b"arc passing"),
    (b"\r\nFrom: ", b"Sender <alice@"),
    (b"ARC-Authentication-Results: ", b"dmarc=pas"),  # what we vouch for
    (b"ARC-Message-Signature: ", b"; t=1"),  # the AMS, under the seal
    (b"ARC-Seal: ", b"; t=1"),
])
def test_one_changed_byte_fails_arc_verify(arc_zone: ZoneServer, passing: tuple[bytes, Got],
                                           anchor: bytes, inside: bytes) -> None:
    data = passing[1].data
    at = data.index(inside, data.index(anchor)) + len(inside) - 1  # the last byte of `inside`
    changed = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
    assert sum(a != b for a, b in zip(data, changed, strict=True)) == 1
    cv, _, reason = arc_verify(arc_zone, changed)
    assert cv == dkimpy.CV_Fail, (inside, cv, reason)


def test_a_field_added_after_the_seal_fails_arc_verify(arc_zone: ZoneServer,
                                                       passing: tuple[bytes, Got]) -> None:
    data = passing[1].data
    at = data.index(b"From: Sender <alice@")
    for added in (b"Subject: URGENT: wire money\r\n", b"Reply-To: x@elsewhere.invalid\r\n"):
        cv, _, reason = arc_verify(arc_zone, data[:at] + added + data[at:])
        assert cv == dkimpy.CV_Fail, (added, cv, reason)


# --- 3. DMARC failed here: the AAR tells the next hop ---------------------------------------

def test_dmarc_failure_is_carried_in_the_aar(server: ServerProcess, arc_zone: ZoneServer,
                                             sink: Sink) -> None:
    spoof = message("ceo@strict.example", "arc spoofed")  # unsigned; SPF -all for loopback
    send_from("127.0.0.3", server.port, "ceo@strict.example", spoof)
    data = forwarded(server, sink, "arc spoofed").data
    assert data.endswith(spoof)
    [ours] = headers(data, "Authentication-Results")
    [aar] = headers(data, "ARC-Authentication-Results")
    assert ours.startswith(f"{AUTHSERV};".encode()), ours
    assert b"dmarc=fail" in ours and b"header.from=strict.example" in ours, ours
    # Every result we recorded is in the AAR, under the seal: the next hop sees what we saw.
    # (Compared without comments: dkimpy rebuilds the AAR from parsed results and drops
    # them, e.g. our "(p=reject dis=reject)" after dmarc=fail.)
    seen = results_of(ours)
    assert results_of(aar) == seen
    assert {r.split(" ", 1)[0] for r in seen} >= {"spf=fail", "dkim=none", "dmarc=fail"}, seen
    cv, _, reason = arc_verify(arc_zone, data)
    assert (cv, reason) == (dkimpy.CV_Pass, "success")  # the seal is good; its news is bad
    assert not dkimpy.verify(data, dnsfunc=txt_lookup(arc_zone))  # no DKIM to lean on
