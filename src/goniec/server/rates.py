"""Rate counters and lockouts shared by every worker process of one server.

Owns `SharedRates`: per-key event counts over a sliding one-minute window
(connections, MAIL commands and failed logins per client address or user)
and per-key lockout deadlines. Workers are forked from one parent, so the
table lives in shared memory (like `limits.SharedConnectionCounter`) behind
one process-shared lock; a rate therefore holds across all workers, with no
extra process or socket on the hot path.

The window is approximated the cheap, well-known way: the count of the
current fixed window plus the previous window's count weighted by how much
of it still overlaps the last minute. The caller passes the time (a
monotonic clock, which is system-wide, so all workers agree), which keeps
tests in control of it. The table is a fixed-size open-addressing hash of
64-bit key hashes: a stale entry (idle for two windows, not locked) is
reused, and when a probe window is full the oldest entry is evicted, so
memory stays bounded under a flood of distinct addresses; counts are then
best effort, which is the right failure for a rate limit. Raises nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from goniec.server.plock import ProcessLock
from goniec.server.shm import zeroed_array

SLOTS = 1 << 16
_PROBES = 32


def _hash(key: str) -> int:
    # Never 0: 0 marks a slot that was never used.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") | 1


class SharedRates:
    def __init__(self, window: float = 60.0, slots: int = SLOTS) -> None:
        self.window = window
        self._slots = slots
        self._lock = ProcessLock()  # released by the kernel if its holder dies
        self._keys: Any = zeroed_array("Q", slots)
        self._win: Any = zeroed_array("q", slots)  # window index that `cur` counts
        self._cur: Any = zeroed_array("q", slots)
        self._prev: Any = zeroed_array("q", slots)
        self._until: Any = zeroed_array("d", slots)  # lockout deadline; 0 = none

    # -- internals (call with the lock held) -------------------------------------
    def _find(self, key: int, idx: int, now: float, create: bool) -> int:
        keys, win, until = self._keys, self._win, self._until
        home = key % self._slots
        reuse = -1
        oldest, oldest_win = -1, 0
        for i in range(_PROBES):
            s = (home + i) % self._slots
            k = keys[s]
            if k == key:
                return s
            if k == 0:  # never used: the key is not further on
                if reuse < 0:
                    reuse = s
                break
            if reuse < 0 and win[s] < idx - 1 and until[s] <= now:
                reuse = s
            if until[s] <= now and (oldest < 0 or win[s] < oldest_win):
                oldest, oldest_win = s, win[s]
        if not create:
            return -1
        s = reuse if reuse >= 0 else (oldest if oldest >= 0 else home)
        keys[s] = key
        win[s] = idx
        self._cur[s] = 0
        self._prev[s] = 0
        until[s] = 0.0
        return s

    def _roll(self, s: int, idx: int) -> None:
        w = self._win[s]
        if w == idx:
            return
        self._prev[s] = self._cur[s] if w == idx - 1 else 0
        self._cur[s] = 0
        self._win[s] = idx

    def _estimate(self, s: int, now: float, idx: int) -> float:
        overlap = 1.0 - (now / self.window - idx)
        return float(self._cur[s]) + float(self._prev[s]) * max(0.0, overlap)

    # -- API ----------------------------------------------------------------------
    def hit(self, key: str, now: float, n: int = 1) -> float:
        """Count `n` events for `key` at `now`; return the events of the last window."""
        h = _hash(key)
        idx = int(now // self.window)
        with self._lock:
            s = self._find(h, idx, now, True)
            self._roll(s, idx)
            self._cur[s] += n
            return self._estimate(s, now, idx)

    def peek(self, key: str, now: float) -> float:
        """The events of the last window for `key`, without counting one."""
        h = _hash(key)
        idx = int(now // self.window)
        with self._lock:
            s = self._find(h, idx, now, False)
            if s < 0:
                return 0.0
            self._roll(s, idx)
            return self._estimate(s, now, idx)

    def lock(self, key: str, now: float, until: float) -> None:
        """Lock `key` out until `until` (e.g. a client address after failed logins)."""
        h = _hash(key)
        idx = int(now // self.window)
        with self._lock:
            s = self._find(h, idx, now, True)
            self._until[s] = max(self._until[s], until)

    def locked_until(self, key: str, now: float) -> float:
        """The lockout deadline of `key`, or 0.0 when it is not locked at `now`."""
        h = _hash(key)
        idx = int(now // self.window)
        with self._lock:
            s = self._find(h, idx, now, False)
            if s < 0:
                return 0.0
            until = float(self._until[s])
            return until if until > now else 0.0
