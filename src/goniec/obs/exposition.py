"""The Prometheus text of metrics snapshots summed over worker processes.

Owns the custom prometheus-client Collector that turns `metrics.snapshot()`
pictures into metric families (counters and gauges summed by label, the
latency histogram bucket by bucket) and `merge()`, the text exposition.
Imported only when someone scrapes /metrics: prometheus-client costs about
10 MB per process, and the hot path never needs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from goniec.obs.metrics import (
    EXTRA_GAUGES,
    FAMILIES,
    LATENCY,
    LATENCY_BUCKETS,
    LATENCY_HELP,
    PREFIX,
)


class SnapshotCollector(Collector):
    """Metric families of the sum of the snapshots `source()` returns (at each scrape)."""

    def __init__(self, source: Callable[[], list[dict[str, Any]]],
                 extra_gauges: Mapping[str, float] | None = None) -> None:
        self.source = source
        self.extra_gauges = dict(extra_gauges or {})

    def collect(self) -> Iterable[Metric]:
        snapshots = self.source()
        yield from _summed(snapshots)
        yield from _latency(snapshots)
        for name, value in self.extra_gauges.items():
            yield GaugeMetricFamily(PREFIX + name, EXTRA_GAUGES.get(name, name), value=value)


def _summed(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    for name, (kind, help_text, label) in FAMILIES.items():
        total: dict[str, float] = defaultdict(float)
        for snap in snapshots:
            for key, value in snap.get("samples", {}).get(name, {}).items():
                total[key] += value
        family: CounterMetricFamily | GaugeMetricFamily
        if kind == "counter":
            family = CounterMetricFamily(PREFIX + name, help_text, labels=[label])
        else:
            family = GaugeMetricFamily(PREFIX + name, help_text, labels=[label])
        for key in sorted(total):
            family.add_metric([key], total[key])
        yield family


def _latency(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for snap in snapshots:
        hist = snap.get("histograms", {}).get(LATENCY)
        if not hist or list(hist["buckets"]) != list(LATENCY_BUCKETS):
            continue  # another version's buckets cannot be added up
        for i, c in enumerate(hist["counts"]):
            counts[i] += c
        total += hist["sum"]
    cumulative, buckets = 0, []
    for bound, c in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
        cumulative += c
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    family = HistogramMetricFamily(PREFIX + LATENCY, LATENCY_HELP)
    family.add_metric([], buckets, sum_value=total)
    yield family


def merge(snapshots: list[dict[str, Any]],
          extra_gauges: Mapping[str, float] | None = None) -> bytes:
    """See `goniec.obs.metrics.merge`."""
    gauges = {"workers_reporting": float(len(snapshots)), **(extra_gauges or {})}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshots, gauges))
    return generate_latest(registry)
