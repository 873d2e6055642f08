"""Metrics: recording, snapshots, the sum over workers in the Prometheus text format."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from goniec import replies as r
from goniec.obs import metrics
from goniec.obs.metrics import Metrics, last_hour, merge
from goniec.obs.rules import RULE_NAMES, rule_of
from goniec.policy.relay import relay_denied


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _worker_a(clock: float) -> Metrics:
    m = Metrics(clock=lambda: clock)
    m.session_opened("smtp")
    m.session_opened("smtp")
    m.session_closed("smtp", "TLSv1.3")
    m.received("smtp", 1200)
    m.rejected(relay_denied("x@elsewhere.example"))
    m.delivery("delivered", 0.05)
    m.delivery("delivered", 4000.0)
    m.report("failed")
    return m


def _worker_b(clock: float) -> Metrics:
    m = Metrics(clock=lambda: clock)
    m.session_opened("smtp")
    m.session_opened("submission")
    m.session_closed("submission", None)
    m.received("submission", 800)
    m.received("smtp", 100)
    m.auth_failed("plain")
    m.rejected(r.R550_UNKNOWN_USER)
    m.rejected(r.with_hostname(r.R421_CONNECTION_RATE, "mx.goniec.test"))
    m.delivery("deferred")
    m.delivery("failed")
    m.delivery("delivered", 3.0)
    return m


def test_merge_sums_two_workers_and_parses() -> None:
    now = time.time()
    snaps = [_worker_a(now).snapshot(), _worker_b(now).snapshot()]
    json.dumps(snaps)  # JSON-serialisable, as it crosses the control socket
    text = merge(snaps, {"queue_messages": 7, "queue_deferred": 2, "queue_held": 1,
                         "queue_oldest_age_seconds": 93.5})
    s = _samples(text)
    assert s[("goniec_smtp_sessions_total", (("listener", "smtp"),))] == 3
    assert s[("goniec_smtp_sessions_total", (("listener", "submission"),))] == 1
    assert s[("goniec_smtp_sessions_active", (("listener", "smtp"),))] == 2
    assert s[("goniec_smtp_sessions_active", (("listener", "submission"),))] == 0
    assert s[("goniec_smtp_tls_sessions_total", (("version", "TLSv1.3"),))] == 1
    assert s[("goniec_smtp_tls_sessions_total", (("version", "none"),))] == 1
    assert s[("goniec_smtp_auth_failures_total", (("mechanism", "PLAIN"),))] == 1
    assert s[("goniec_smtp_messages_received_total", (("listener", "smtp"),))] == 2
    assert s[("goniec_smtp_received_bytes_total", (("listener", "smtp"),))] == 1300
    assert s[("goniec_smtp_rejections_total", (("rule", "relay_denied"),))] == 1
    assert s[("goniec_smtp_rejections_total", (("rule", "recipient_unknown"),))] == 1
    assert s[("goniec_smtp_rejections_total", (("rule", "rate_limit"),))] == 1
    assert s[("goniec_deliveries_total", (("outcome", "delivered"),))] == 3
    assert s[("goniec_deliveries_total", (("outcome", "deferred"),))] == 1
    assert s[("goniec_delivery_reports_total", (("kind", "failed"),))] == 1
    assert s[("goniec_delivery_latency_seconds_count", ())] == 3
    assert s[("goniec_delivery_latency_seconds_sum", ())] == pytest.approx(4003.05)
    assert s[("goniec_delivery_latency_seconds_bucket", (("le", "0.1"),))] == 1
    assert s[("goniec_delivery_latency_seconds_bucket", (("le", "5.0"),))] == 2
    assert s[("goniec_delivery_latency_seconds_bucket", (("le", "3600.0"),))] == 2
    assert s[("goniec_delivery_latency_seconds_bucket", (("le", "7200.0"),))] == 3
    assert s[("goniec_delivery_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    assert s[("goniec_queue_messages", ())] == 7
    assert s[("goniec_queue_oldest_age_seconds", ())] == 93.5
    assert s[("goniec_workers_reporting", ())] == 2


def test_one_process_exposes_its_own_numbers_without_loading_prometheus_client() -> None:
    import subprocess
    import sys

    code = ("import sys, goniec.obs.metrics as m, goniec.server.session, goniec.delivery.worker;"
            "m.current().received('smtp', 10); m.current().snapshot();"
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr  # only a scrape imports it
    m = _worker_a(time.time())
    s = _samples(merge([m.snapshot()]))
    assert s[("goniec_smtp_messages_received_total", (("listener", "smtp"),))] == 1
    assert s[("goniec_delivery_latency_seconds_count", ())] == 2


def test_merge_of_nothing_is_valid() -> None:
    s = _samples(merge([]))
    assert s[("goniec_workers_reporting", ())] == 0
    assert s[("goniec_delivery_latency_seconds_count", ())] == 0


def test_last_hour_per_minute_across_workers() -> None:
    t = [1_800_000_000.0]
    a, b = Metrics(clock=lambda: t[0]), Metrics(clock=lambda: t[0])
    a.received("smtp", 1)
    b.received("smtp", 1)
    b.delivery("delivered", 1.0)
    t[0] += 60 * 5  # five minutes later
    a.delivery("deferred")
    a.delivery("failed")
    a.received("smtp", 1)
    t[0] += 60 * 70  # far in the past now: leaves the ring
    b.received("smtp", 1)
    t[0] -= 60 * 70
    totals, per_minute = last_hour([a.snapshot(), b.snapshot()], t[0] + 30)
    assert totals == {"received": 3, "delivered": 1, "deferred": 1, "failed": 1}
    assert all(len(v) == 60 for v in per_minute.values())
    assert per_minute["received"][-1] == 1 and per_minute["received"][-6] == 2
    assert per_minute["delivered"][-6] == 1 and per_minute["deferred"][-1] == 1
    # An hour later, nothing of it is left.
    totals, _ = last_hour([a.snapshot()], t[0] + 3600)
    assert totals == {"received": 0, "delivered": 0, "deferred": 0, "failed": 0}


def test_minute_ring_reuses_slots() -> None:
    t = [1_800_000_000.0]
    m = Metrics(clock=lambda: t[0])
    m.received("smtp", 1)
    t[0] += 3600  # the same slot, an hour later
    m.received("smtp", 1)
    totals, _ = last_hour([m.snapshot()], t[0])
    assert totals["received"] == 1


@pytest.mark.parametrize(("reply", "rule"), [
    (r.R554_ACCESS_DENIED, "access_denied"),
    (r.with_hostname(r.R421_TOO_MANY_CONNECTIONS, "mx.goniec.test"), "connection_limit"),
    (r.R421_TOO_MANY_CONNECTIONS, "connection_limit"),
    (r.R421_CONNECTION_RATE, "rate_limit"),
    (r.R450_USER_MESSAGE_RATE, "rate_limit"),
    (r.with_hostname(r.R421_LOGIN_LOCKED, "mx.goniec.test"), "login_lockout"),
    (r.R552_MESSAGE_TOO_BIG, "size"),
    (r.R554_TOO_MANY_HOPS, "hop_count"),
    (r.R550_DMARC_REJECT.with_text(r.R550_DMARC_REJECT.text + " (x.example)"), "dmarc"),
    (r.R550_SPF_FAIL.with_text(r.R550_SPF_FAIL.text + " for x.example"), "spf"),
    (r.R550_HELO_MISMATCH, "helo_mismatch"),
    (r.R535_AUTH_FAILED, "other"),
])
def test_rule_names(reply: r.Reply, rule: str) -> None:
    assert rule_of(reply) == rule
    assert rule in RULE_NAMES


def _child_count(q: multiprocessing.Queue[int]) -> None:
    q.put(int(sum(metrics.current().snapshot()["samples"]["smtp_sessions"].values())))


def test_a_forked_worker_starts_from_zero() -> None:
    metrics.current().session_opened("parent-only")
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue[int] = ctx.Queue()
    p = ctx.Process(target=_child_count, args=(q,))
    p.start()
    assert q.get(timeout=30) == 0
    p.join(30)
    assert metrics.current().snapshot()["samples"]["smtp_sessions"]["parent-only"] >= 1
