"""The delivery worker tells the metrics and the trail: a real runner, real SMTP peer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from delivery.runner_support import Harness, Peer  # tests/delivery (tests/ is on sys.path)
from goniec.obs import metrics
from goniec.obs import trail as trailmod


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer().start()
    yield p
    p.stop()


def _counts() -> dict[str, float]:
    snap = metrics.current().snapshot()
    out = {f"d.{k}": v for k, v in snap["samples"]["deliveries"].items()}
    out.update({f"r.{k}": v for k, v in snap["samples"]["delivery_reports"].items()})
    out["latency"] = sum(snap["histograms"]["delivery_latency_seconds"]["counts"])
    return out


def test_outcomes_attempts_and_reports(tmp_path: Path, peer: Peer) -> None:
    t = trailmod.Trail(tmp_path / "trail", 30)
    trailmod.set_current(t)
    before = _counts()

    async def main() -> str:
        h = Harness(tmp_path, {"dest.test": peer.port, "sender.test": peer.port})
        qid = await h.put("ok1@dest.test", "refuse1@dest.test", "defer1@dest.test")
        await h.runner.run_once()
        await h.close()
        return qid

    try:
        qid = asyncio.run(main())
        events = t.search(qid)
    finally:
        trailmod.set_current(None)
    after = _counts()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["d.delivered"] == 1 and delta["d.failed"] == 1 and delta["d.deferred"] == 1
    assert delta["r.failed"] == 1 and delta["latency"] == 1
    by_event: dict[str, list[dict[str, object]]] = {}
    for e in events:
        by_event.setdefault(str(e["event"]), []).append(e)
    attempts = by_event["attempt"]  # one connection to mx.dest.test: a line per reply
    assert all("mx.dest.test" in str(a["host"]) for a in attempts)
    assert sorted(r for a in attempts for r in a["rcpt"]) == [  # type: ignore[attr-defined]
        "defer1@dest.test", "ok1@dest.test", "refuse1@dest.test"]
    assert sorted(str(e["rcpt"]) for e in by_event["delivered"]) == ["ok1@dest.test"]
    assert [e["rcpt"] for e in by_event["failed"]] == ["refuse1@dest.test"]
    [deferred] = by_event["deferred"]
    assert deferred["rcpt"] == "defer1@dest.test" and str(deferred["next_attempt"]).endswith("Z")
    [report] = by_event["report"]
    assert report["kind"] == "failed" and report["to"] == "alice@sender.test"
