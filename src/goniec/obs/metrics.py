"""Prometheus metrics of one process, and their sum over the worker processes.

Owns `Metrics` (the counters, gauges and the delivery latency histogram of
this process, plus a per-minute ring of the last hour for the manager's
charts), the per-process accessor `current()` (a forked worker starts with
a fresh one: counts start after fork), `snapshot()` (a JSON-serialisable
picture), `merge()` (the Prometheus text of the sum over snapshots, made by
`goniec.obs.exposition` with prometheus-client) and `last_hour()`.

The recording methods are on the hot path: they add to plain dicts (no
locks, no label lookups); prometheus-client only runs at scrape time. They
are meant for the event-loop thread; from other threads an increment may
rarely be lost, never corrupted. Raises nothing while recording.
"""

from __future__ import annotations

import bisect
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from goniec.errors import Reply
from goniec.obs.rules import rule_of

PREFIX = "goniec_"
# name -> (kind, help, label); every family has one label ("" = none).
FAMILIES: dict[str, tuple[str, str, str]] = {
    "smtp_sessions": ("counter", "SMTP sessions accepted", "listener"),
    "smtp_sessions_active": ("gauge", "SMTP sessions open now", "listener"),
    "smtp_tls_sessions": ("counter", "Finished SMTP sessions by TLS version", "version"),
    "smtp_auth_failures": ("counter", "Failed SMTP AUTH attempts", "mechanism"),
    "smtp_messages_received": ("counter", "Messages accepted and queued", "listener"),
    "smtp_received_bytes": ("counter", "Body bytes of accepted messages", "listener"),
    "smtp_rejections": ("counter", "Refusals by policy rule", "rule"),
    "deliveries": ("counter", "Delivery results per recipient", "outcome"),
    "delivery_reports": ("counter", "Delivery status notifications queued", "kind"),
}
LATENCY = "delivery_latency_seconds"
LATENCY_HELP = "Seconds from queued to delivered, per recipient"
# 0.1 s (a local mailbox) .. 2 days (the default queue lifetime).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0)
# The four numbers the manager charts per minute.
MINUTE_KINDS = ("received", "delivered", "deferred", "failed")
_RING = 60
# Scrape-time gauges computed by the caller (merge's extra_gauges) and their help.
EXTRA_GAUGES: dict[str, str] = {
    "queue_messages": "Messages in the queue",
    "queue_deferred": "Messages waiting for a retry",
    "queue_held": "Messages held by an operator or a policy",
    "queue_oldest_age_seconds": "Age of the oldest queued message",
    "workers_reporting": "Worker processes whose numbers are summed",
}
SNAPSHOT_VERSION = 1


class _MinuteRing:
    """Counts of the last 60 minutes, keyed by minute number (epoch // 60)."""

    __slots__ = ("stamps", "counts")

    def __init__(self) -> None:
        self.stamps = [-1] * _RING
        self.counts = [0] * _RING

    def add(self, minute: int, n: int = 1) -> None:
        i = minute % _RING
        if self.stamps[i] != minute:
            self.stamps[i] = minute
            self.counts[i] = 0
        self.counts[i] += n

    def recent(self, now_minute: int) -> dict[str, int]:
        return {str(m): c for m, c in zip(self.stamps, self.counts, strict=True)
                if c and now_minute - _RING < m <= now_minute}


class Metrics:
    """This process's numbers (`merge([m.snapshot()])` exposes them alone)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.pid = os.getpid()
        self.started = clock()
        self.values: dict[str, defaultdict[str, float]] = {
            name: defaultdict(float) for name in FAMILIES}
        v = self.values
        self._sessions, self._active = v["smtp_sessions"], v["smtp_sessions_active"]
        self._tls, self._auth = v["smtp_tls_sessions"], v["smtp_auth_failures"]
        self._received, self._bytes = v["smtp_messages_received"], v["smtp_received_bytes"]
        self._rejections, self._deliveries = v["smtp_rejections"], v["deliveries"]
        self._reports = v["delivery_reports"]
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.rings = {kind: _MinuteRing() for kind in MINUTE_KINDS}

    # -- recording (hot path) ----------------------------------------------------------
    def session_opened(self, listener: str) -> None:
        self._sessions[listener] += 1
        self._active[listener] += 1

    def session_closed(self, listener: str, tls_version: str | None) -> None:
        self._active[listener] -= 1
        self._tls[tls_version or "none"] += 1

    def auth_failed(self, mechanism: str) -> None:
        self._auth[mechanism.upper()] += 1

    def received(self, listener: str, size: int) -> None:
        self._received[listener] += 1
        self._bytes[listener] += size
        self.rings["received"].add(int(self.clock() // 60))

    def rejected(self, reply: Reply) -> None:
        self._rejections[rule_of(reply)] += 1

    def delivery(self, outcome: str, latency: float | None = None) -> None:
        """One recipient's result: delivered, deferred, failed (or error); latency in s."""
        self._deliveries[outcome] += 1
        ring = self.rings.get(outcome)
        if ring is not None:
            ring.add(int(self.clock() // 60))
        if latency is not None:
            self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
            self.latency_sum += latency

    def report(self, kind: str) -> None:
        self._reports[kind] += 1

    # -- reading -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable picture of this process's metrics."""
        now = self.clock()
        minute = int(now // 60)
        return {
            "version": SNAPSHOT_VERSION,
            "pid": self.pid,
            "time": now,
            "started": self.started,
            "samples": {name: dict(values) for name, values in self.values.items()},
            "histograms": {LATENCY: {"buckets": list(LATENCY_BUCKETS),
                                     "counts": list(self.latency_counts),
                                     "sum": self.latency_sum}},
            "minutes": {kind: ring.recent(minute) for kind, ring in self.rings.items()},
        }


def merge(snapshots: list[dict[str, Any]],
          extra_gauges: Mapping[str, float] | None = None) -> bytes:
    """The Prometheus text exposition of the sum over `snapshots`, plus `extra_gauges`
    (short names, e.g. {"queue_messages": 12.0}; exposed as goniec_<name>), and
    goniec_workers_reporting (how many snapshots were summed). prometheus-client
    (~10 MB per process) is imported here, at the first scrape, not by every worker."""
    from goniec.obs import exposition

    return exposition.merge(snapshots, extra_gauges)


def last_hour(snapshots: list[dict[str, Any]], now: float
              ) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Totals and per-minute counts (60 values, oldest first, the last one is the
    minute of `now`) of received, delivered, deferred and failed, summed."""
    current_minute = int(now // 60)
    window = range(current_minute - _RING + 1, current_minute + 1)
    per_minute: dict[str, list[int]] = {}
    for kind in MINUTE_KINDS:
        rows = [snap.get("minutes", {}).get(kind, {}) for snap in snapshots]
        per_minute[kind] = [sum(int(row.get(str(m), 0)) for row in rows) for m in window]
    totals = {kind: sum(values) for kind, values in per_minute.items()}
    return totals, per_minute


# -- the per-process instance -----------------------------------------------------------
_current: Metrics | None = None


def current() -> Metrics:
    """This process's Metrics (created at first use, and again in a forked child)."""
    global _current
    m = _current
    if m is None:
        m = _current = Metrics()
    return m


def _forget_after_fork() -> None:
    global _current
    _current = None


os.register_at_fork(after_in_child=_forget_after_fork)
