"""Connection counters shared by every worker process of one server.

Owns the open-connection count in total and per client address behind the
`421 4.7.0 Too many connections` replies. Worker processes are forked from one
parent, so the counters live in shared memory (a small open-addressing table
of 64-bit address hashes) behind one process-shared lock; the count is exact,
not an estimate. Each worker also keeps its own share in shared memory, so
when a worker dies (even by SIGKILL) the supervisor can take exactly its
connections off the totals (`release_worker`). Only the listener code and the
supervisor call it; it raises nothing.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from typing import Any

from goniec.server.plock import ProcessLock
from goniec.server.shm import zeroed_array

_SLOTS = 1 << 16
# A key is always stored within this many probes of its home slot, so a lookup
# never scans further; live keys (at most the connection limit) are far fewer
# than the slots, so a free slot is found well within the window.
_WINDOW = 64


def _key(ip: str) -> int:
    # Never 0: 0 marks a slot that was never used.
    return int.from_bytes(hashlib.blake2b(ip.encode(), digest_size=8).digest(), "big") | 1


class SharedConnectionCounter:
    def __init__(self, total_limit: int, per_ip_limit: int, workers: int = 1) -> None:
        self.total_limit = total_limit
        self.per_ip_limit = per_ip_limit
        self.worker = 0  # which worker this process is; set after fork
        ctx = multiprocessing.get_context("fork")
        self._lock = ProcessLock()  # released by the kernel if its holder dies
        self._total: Any = ctx.RawValue("q", 0)
        self._keys: Any = zeroed_array("Q", _SLOTS)
        self._counts: Any = zeroed_array("q", _SLOTS)
        # Per worker, per slot: that worker's open connections (256 KiB a worker).
        self._workers = max(1, workers)
        self._mine: Any = zeroed_array("i", self._workers * _SLOTS)

    @property
    def total(self) -> int:
        return int(self._total.value)

    def _slot(self, key: int) -> int:
        keys, counts = self._keys, self._counts
        home = key % _SLOTS
        free = -1
        for i in range(_WINDOW):
            s = (home + i) % _SLOTS
            k = keys[s]
            if k == key:
                return s
            if k == 0:
                return s if free < 0 else free
            if free < 0 and counts[s] == 0:
                free = s
        return free  # -1 when the window is saturated (practically impossible)

    def count(self, ip: str) -> int:
        with self._lock:
            key = _key(ip)
            s = self._slot(key)
            return int(self._counts[s]) if s >= 0 and self._keys[s] == key else 0

    def try_open(self, ip: str) -> bool:
        key = _key(ip)
        with self._lock:
            if self.total_limit and self._total.value >= self.total_limit:
                return False
            s = self._slot(key)
            if s < 0:
                return False
            if self._keys[s] != key:
                self._keys[s] = key
                self._counts[s] = 0
            if self.per_ip_limit and self._counts[s] >= self.per_ip_limit:
                return False
            self._counts[s] += 1
            self._mine[self.worker * _SLOTS + s] += 1
            self._total.value += 1
            return True

    def close(self, ip: str) -> None:
        key = _key(ip)
        with self._lock:
            s = self._slot(key)
            mine = self.worker * _SLOTS + s
            if s >= 0 and self._keys[s] == key and self._mine[mine] > 0:
                self._counts[s] -= 1
                self._mine[mine] -= 1
                self._total.value -= 1

    def release_worker(self, worker: int) -> int:
        """Forget every connection worker `worker` held (it died); returns how many."""
        base = worker * _SLOTS
        released = 0
        with self._lock:
            for s in range(_SLOTS):
                n = self._mine[base + s]
                if n:
                    self._counts[s] -= n
                    self._mine[base + s] = 0
                    released += n
            self._total.value -= released
        return released
