"""Shared rate counters and lockouts, driven by a controllable clock, across forked workers."""

from __future__ import annotations

import ipaddress
import multiprocessing

from goniec.policy.login import check_login, client_key, failed_login
from goniec.policy.rules import RateLimits, Rules
from goniec.server.rates import SharedRates


def test_sliding_window() -> None:
    r = SharedRates(window=60.0)
    t = 600.0  # the start of a window
    for i in range(10):
        assert r.hit("k", t + i) == i + 1
    assert r.peek("k", t + 30) == 10
    # Half-way through the next window, half of the previous one still counts.
    assert r.peek("k", t + 90) == 5
    assert r.hit("k", t + 90) == 6
    # Two windows later everything has expired.
    assert r.peek("k", t + 240) == 0
    assert r.peek("unknown", t) == 0


def test_keys_are_independent() -> None:
    r = SharedRates()
    r.hit("a", 1.0, 5)
    assert r.hit("b", 1.0) == 1
    assert r.peek("a", 1.0) == 5


def test_lockout_expires() -> None:
    r = SharedRates()
    assert r.locked_until("ip", 100.0) == 0.0
    r.lock("ip", 100.0, 700.0)
    assert r.locked_until("ip", 100.0) == 700.0
    assert r.locked_until("ip", 699.9) == 700.0
    assert r.locked_until("ip", 700.0) == 0.0
    r.lock("ip", 100.0, 650.0)  # never shortened
    assert r.locked_until("ip", 660.0) == 700.0


def test_table_stays_bounded_and_keeps_locks() -> None:
    r = SharedRates(slots=1024)
    r.lock("attacker", 0.0, 10_000.0)
    for i in range(20_000):  # far more keys than slots, all at once
        r.hit(f"spray-{i}", 1.0)
    assert r.locked_until("attacker", 2.0) == 10_000.0
    # Stale entries are reused: a key seen long ago starts from zero.
    assert r.hit("spray-1", 10_000.0) == 1


def _worker(r: SharedRates, n: int, out: multiprocessing.Queue) -> None:
    last = 0.0
    for _ in range(n):
        last = r.hit("c:198.51.100.1", 30.0)
    out.put(last)


def test_counts_hold_across_forked_workers() -> None:
    r = SharedRates()
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 100, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
    assert max(results) == 300
    assert r.peek("c:198.51.100.1", 30.0) == 300


def test_brute_force_with_a_controllable_clock() -> None:
    """The shell's AUTH loop, with the clock in the test's hand."""
    rules = Rules(rates=RateLimits(failed_logins_per_ip=5, login_delay=0.5,
                                   login_delay_max=2.0, lockout=300.0))
    table = SharedRates()
    key = "f:" + client_key(ipaddress.ip_address("203.0.113.9"))
    other = "f:" + client_key(ipaddress.ip_address("198.51.100.1"))
    now = 1000.0
    delays, replies = [], []
    for _ in range(300):
        gate = check_login(rules, now=now, locked_until=table.locked_until(key, now),
                           user_failures=0)
        if gate is not None:
            replies.append(gate.code)
            now += 0.1
            continue
        verdict = failed_login(rules, now=now, ip_failures=table.hit(key, now))
        if verdict.lock_until:
            table.lock(key, now, verdict.lock_until)
        delays.append(verdict.delay)
        replies.append(verdict.reply.code)
        now += verdict.delay + 0.1
    # Slowed down: each failure waits longer, up to the cap; then locked out.
    assert delays[:5] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert replies[:5] == [535] * 5 and replies[5] == 421
    assert set(replies[6:]) == {421}  # no password is checked while locked
    assert len(delays) == 6
    # Another client is not affected.
    assert check_login(rules, now=now, locked_until=table.locked_until(other, now),
                       user_failures=0) is None
    # After the lockout the address may try again.
    later = now + 301
    assert check_login(rules, now=later, locked_until=table.locked_until(key, later),
                       user_failures=0) is None
