"""The shared connection counter: exact per-address and total limits across processes."""

from __future__ import annotations

import multiprocessing

from goniec.server.limits import SharedConnectionCounter


def test_per_ip_and_total_limits() -> None:
    c = SharedConnectionCounter(total_limit=5, per_ip_limit=2)
    assert c.try_open("192.0.2.1") and c.try_open("192.0.2.1")
    assert not c.try_open("192.0.2.1")
    assert c.try_open("192.0.2.2") and c.try_open("2001:db8::1") and c.try_open("192.0.2.3")
    assert c.total == 5
    assert not c.try_open("192.0.2.4")  # total reached
    c.close("192.0.2.1")
    assert c.count("192.0.2.1") == 1
    assert c.try_open("192.0.2.4")
    for ip in ("192.0.2.1", "192.0.2.2", "2001:db8::1", "192.0.2.3", "192.0.2.4"):
        c.close(ip)
    assert c.total == 0


def test_close_of_unknown_address_changes_nothing() -> None:
    c = SharedConnectionCounter(0, 0)
    c.close("192.0.2.9")
    assert c.total == 0


def test_many_distinct_addresses_reuse_slots() -> None:
    c = SharedConnectionCounter(total_limit=0, per_ip_limit=1)
    for i in range(200_000):  # more than the table has slots
        ip = f"2001:db8::{i:x}"
        assert c.try_open(ip)
        c.close(ip)
    assert c.total == 0


def _worker(c: SharedConnectionCounter, n: int, out: multiprocessing.Queue) -> None:
    out.put(sum(c.try_open("198.51.100.1") for _ in range(n)))


def test_limits_hold_across_forked_processes() -> None:
    c = SharedConnectionCounter(total_limit=0, per_ip_limit=50)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(c, 40, out)) for _ in range(3)]
    for p in procs:
        p.start()
    got = sum(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(30)
    assert got == 50
    assert c.count("198.51.100.1") == 50


def _hold(c: SharedConnectionCounter, worker: int, n: int, ready: multiprocessing.Event) -> None:
    c.worker = worker
    for _ in range(n):
        assert c.try_open("203.0.113.5")
    ready.set()
    import time

    time.sleep(60)  # killed by the test long before this


def test_a_killed_workers_connections_are_released() -> None:
    c = SharedConnectionCounter(total_limit=0, per_ip_limit=10, workers=2)
    c.worker = 0
    assert c.try_open("203.0.113.5")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_hold, args=(c, 1, 3, ready))
    p.start()
    assert ready.wait(30)
    p.kill()
    p.join(30)
    assert c.count("203.0.113.5") == 4 and c.total == 4
    assert c.release_worker(1) == 3
    assert c.count("203.0.113.5") == 1 and c.total == 1
    c.close("203.0.113.5")
    assert c.total == 0


def _die_holding_the_lock(c: SharedConnectionCounter, ready: multiprocessing.Event) -> None:
    c._lock.__enter__()  # noqa: SLF001 - simulate a worker killed mid critical section
    ready.set()
    import time

    time.sleep(60)


def test_a_worker_killed_inside_the_lock_does_not_wedge_the_others() -> None:
    c = SharedConnectionCounter(total_limit=0, per_ip_limit=0, workers=2)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_die_holding_the_lock, args=(c, ready))
    p.start()
    assert ready.wait(30)
    p.kill()
    p.join(30)
    out: multiprocessing.Queue = ctx.Queue()
    q = ctx.Process(target=_worker, args=(c, 3, out))  # another worker still gets through
    q.start()
    assert out.get(timeout=10) == 3
    q.join(30)
