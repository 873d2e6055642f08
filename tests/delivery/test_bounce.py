"""RFC 3464 reports, read back with the stdlib parser and flufl.bounce; routing and schedule."""

from __future__ import annotations

import email
import email.policy

import pytest
from flufl.bounce import all_failures

from goniec.delivery.bounce import MAX_RETURNED, ReportEntry, build_report, subject_of
from goniec.delivery.destination import SmartHost, TlsMode
from goniec.delivery.outcome import DeliveryStatus, RecipientResult
from goniec.delivery.router import (
    DomainRoute,
    LocalRoute,
    RemoteRoute,
    RoutingTable,
    route,
    tls_route,
)
from goniec.delivery.schedule import Report, Timing, decide
from goniec.errors import Reply
from goniec.model import Recipient
from goniec.policy.domains import Domains, RemoteDomain
from goniec.queue.api import RecipientState, RecipientStatus

ORIGINAL = b"Received: by x\r\nSubject: Hello\r\n there\r\nFrom: a@s.test\r\n\r\nbody \xc3\xa9\r\n"


def report(kind: Report = Report.FAILED, *, ret: str | None = None, original: bytes = ORIGINAL,
           address: str = "bob@d.test") -> email.message.Message:
    entry = ReportEntry(address, kind, "5.1.1" if kind is Report.FAILED else "4.4.1",
                        "550 5.1.1 no such user", "mx.d.test", "rfc822;Bob@d.test", 1.7e9)
    data = build_report(kind=kind, entries=[entry], reporting_mta="mx.goniec.test",
                        sender="a@s.test", original=original, arrival=1.7e9 - 60, now=1.7e9,
                        ret=ret, envid="E1", original_subject=subject_of(original))
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    return email.message_from_bytes(data)


def test_failure_report_structure() -> None:
    msg = report()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender: Hello there"
    assert msg["Auto-Submitted"] == "auto-replied" and msg["To"] == "<a@s.test>"
    human, status, original = msg.get_payload()
    assert human.get_content_type() == "text/plain"
    assert "<bob@d.test>: host mx.d.test said: 550 5.1.1" in human.get_payload(decode=True).decode()
    per_msg, per_rcpt = status.get_payload()
    assert per_msg["Reporting-MTA"] == "dns; mx.goniec.test"
    assert per_msg["Original-Envelope-Id"] == "E1" and "Arrival-Date" in per_msg
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@d.test"
    assert per_rcpt["Original-Recipient"] == "rfc822; Bob@d.test"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert original.get_content_type() == "message/rfc822"  # RET absent: full, for failures
    assert original.get_payload()[0]["Subject"] == "Hello\r\n there"
    assert set(all_failures(msg)[1]) == {b"Bob@d.test"}


@pytest.mark.parametrize("ret, kind, expected", [
    ("HDRS", Report.FAILED, "text/rfc822-headers"),
    ("FULL", Report.DELAYED, "message/rfc822"),
    (None, Report.DELAYED, "text/rfc822-headers"),
    (None, Report.RELAYED, "text/rfc822-headers"),
])
def test_ret(ret: str | None, kind: Report, expected: str) -> None:
    part = report(kind, ret=ret).get_payload()[2]
    assert part.get_content_type() == expected
    if expected == "text/rfc822-headers":
        assert b"body" not in part.get_payload(decode=True)


def test_huge_original_comes_back_as_headers() -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * (MAX_RETURNED + 10)
    assert report(original=big).get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_utf8_recipient_uses_global_delivery_status() -> None:
    part = report(address="józef@d.test").get_payload()[1]
    assert part.get_content_type() == "message/global-delivery-status"


def _state(notify: frozenset[str] | None = None, **kw: object) -> RecipientState:
    return RecipientState(Recipient("r@d.test", notify), RecipientStatus.PENDING, **kw)  # type: ignore[arg-type]


def _res(status: DeliveryStatus, relayed: bool = False) -> RecipientResult:
    code = {"delivered": 250, "deferred": 451, "failed": 550}[status]
    return RecipientResult(Recipient("r@d.test"), status, Reply(code, None, "x"), "mx[1.2.3.4]",
                           True, relayed)


def test_schedule_decisions() -> None:
    t = Timing()
    d = decide(_state(), _res(DeliveryStatus.DEFERRED), created=0, now=0, timing=t, local=False)
    assert d.state.next_attempt == 900 and d.report is None
    d = decide(_state(attempts=7), _res(DeliveryStatus.DEFERRED), created=0, now=10,
               timing=t, local=False)
    assert d.state.next_attempt == 10 + 14400  # the last interval repeats
    d = decide(_state(), _res(DeliveryStatus.DEFERRED), created=0, now=12 * 3600, timing=t,
               local=False, delay_without_notify=False)
    assert d.report is None  # Postfix-like: no delay notice unless asked
    d = decide(_state(frozenset({"SUCCESS"})), _res(DeliveryStatus.DELIVERED), created=0, now=1,
               timing=t, local=True)
    assert d.report is Report.DELIVERED
    d = decide(_state(frozenset({"SUCCESS"})), _res(DeliveryStatus.DELIVERED), created=0, now=1,
               timing=t, local=False)
    assert d.report is None  # a DSN-capable next hop took the duty over
    d = decide(_state(), _res(DeliveryStatus.FAILED), created=0, now=1, timing=t, local=False)
    assert d.report is Report.FAILED and d.state.status is RecipientStatus.FAILED


def test_router_order() -> None:
    domains = Domains(local=frozenset({"goniec.test"}), aliases={"alias.test": "goniec.test"},
                      remote={"partner.test": RemoteDomain("partner.test",
                                                           smart_host="[192.0.2.9]", port=587)},
                      remote_wildcards={"tls.test": RemoteDomain("*.tls.test", tls="verify")})
    routes = {"partner.test": DomainRoute(SmartHost("192.0.2.9", None, False), 587,
                                          tls_route("required")),
              "*.tls.test": DomainRoute(None, 25, tls_route("verify"))}
    smart = SmartHost("relay.test", None, True)
    table = RoutingTable(domains=domains, routes=routes, smart_host=smart)
    assert route("Alias.TEST", table) == LocalRoute("goniec.test")
    assert route("", table) == LocalRoute("goniec.test")
    partner = route("partner.test", table)
    assert isinstance(partner, RemoteRoute) and partner.via == "route" and partner.port == 587
    wild = route("a.tls.test", table)
    assert isinstance(wild, RemoteRoute) and wild.next_hop is None and wild.route.verify
    other = route("other.test", table)
    assert isinstance(other, RemoteRoute) and other.next_hop == smart
    assert other.route.tls is TlsMode.REQUIRED and other.route.verify  # smart hosts: checked
    direct = route("other.test", RoutingTable(domains=domains, smart_host=smart,
                                              direct_first=True))
    assert isinstance(direct, RemoteRoute) and direct.next_hop is None
    assert direct.fallback is not None and direct.fallback.next_hop == smart
    plain = route("other.test", RoutingTable(domains=domains))
    assert isinstance(plain, RemoteRoute) and plain.next_hop is None
    assert plain.route.tls is TlsMode.OPPORTUNISTIC
    # One smart host: one transaction for every domain.
    assert route("a.test", table).key == route("b.test", table).key  # type: ignore[union-attr]
