"""The public RFC 7208 SPF test suite, served by a DNS server on loopback.

Every case runs through Goniec's `check_host` with its real DNS path
(`DnsView.spf_lookup`, dnspython, UDP to 127.0.0.1), not through an
in-memory hook: the suite checks our glue as much as pyspf.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from goniec.mailauth.dnsview import DnsSettings, DnsView
from goniec.mailauth.spf import check_host

from . import spfsuite
from .dnsserver import ZoneServer


@pytest.fixture(scope="module")
def suite_path() -> Path:
    path = spfsuite.fetch_suite()
    if path is None:
        pytest.skip("cannot download the pyspf sdist with the RFC 7208 test suite")
    return path


def test_rfc7208_suite(suite_path: Path, dns_server: ZoneServer) -> None:
    scenarios = spfsuite.load(suite_path)
    dns_server.missing = spfsuite.missing
    failures: list[str] = []
    count = 0
    for scenario in scenarios:
        dns_server.zone = scenario.zone
        # A fresh view per scenario: the scenarios reuse names with other data.
        view = DnsView(DnsSettings(("127.0.0.1",), dns_server.port, 1.0), cache=False)
        for case in scenario.cases:
            count += 1
            got = check_host(case.host, case.mailfrom, case.helo, view.spf_lookup,
                             default_explanation="DEFAULT", strict=case.strict)
            if got.result not in case.results:
                failures.append(f"{case.name} ({case.spec}): {got.result} not in"
                                f" {case.results}: {got.explanation}")
            elif case.explanation is not None and got.explanation != case.explanation:
                failures.append(f"{case.name} ({case.spec}): explanation"
                                f" {got.explanation!r} != {case.explanation!r}")
    assert count > 200, f"only {count} cases in {suite_path}"
    assert not failures, f"{len(failures)} of {count} cases failed:\n" + "\n".join(failures)
