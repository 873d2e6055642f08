"""Peak memory of a process tree, sampled from /proc (Linux only).

Owns: finding the descendants of one or more root pids and sampling the sum of
their resident set size (RSS) every ~50 ms, and the sum of their proportional
set size (PSS, from /proc/PID/smaps_rollup) as often while the tree has at most
20 processes, every ~500 ms when it is larger.

RSS summed over a multi-process server (Postfix: master, smtpd x N, cleanup,
qmgr, ...) counts shared library pages once per process, so it overstates
multi-process servers; PSS splits shared pages fairly and is reported next to
it. Must not signal or otherwise touch the processes it watches.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def _ppid_map() -> dict[int, int]:
    """pid -> ppid for every process visible in /proc."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        rest = stat[stat.rfind(b")") + 2 :].split()
        out[int(name)] = int(rest[1])
    return out


def descendants(roots: Iterable[int]) -> set[int]:
    """The roots and all their descendants that are alive now."""
    pmap = _ppid_map()
    children: dict[int, list[int]] = {}
    for pid, ppid in pmap.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [r for r in roots if r in pmap]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


class TreeSampler:
    """Background thread recording the peak summed RSS/PSS of a process tree.

    `roots` is called on every rescan, so a server whose main pid changes
    (Postfix's master daemonizes) can be followed. Use as a context manager.
    """

    def __init__(
        self,
        roots: Callable[[], list[int]],
        interval: float = 0.05,
        rescan_every: int = 5,
        pss_every: int = 10,
    ) -> None:
        self._roots = roots
        self._interval = interval
        self._rescan_every = rescan_every
        self._pss_every = pss_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self.samples = 0

    def __enter__(self) -> TreeSampler:
        self.sample_once(pss=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample_once(pss=True)

    def sample_once(self, pss: bool = False) -> None:
        pids = descendants(self._roots())
        self._record(pids, pss)

    def _record(self, pids: set[int], pss: bool) -> None:
        self.samples += 1
        self.peak_procs = max(self.peak_procs, len(pids))
        self.peak_rss = max(self.peak_rss, sum(rss_bytes(p) for p in pids))
        if pss:
            self.peak_pss = max(self.peak_pss, sum(pss_bytes(p) for p in pids))

    def _run(self) -> None:
        tick = 0
        pids: set[int] = set()
        while not self._stop.is_set():
            # A full /proc scan is the expensive part: do it every few ticks and
            # read only the known pids' statm in between.
            if tick % self._rescan_every == 0:
                pids = descendants(self._roots())
            # smaps_rollup is costly with hundreds of Postfix smtpd processes;
            # for a handful of processes read it on every tick.
            self._record(pids, pss=len(pids) <= 20 or tick % self._pss_every == 0)
            tick += 1
            self._stop.wait(self._interval)

    def result(self) -> dict[str, float]:
        return {
            "peak_rss_mb": round(self.peak_rss / MB, 1),
            "peak_pss_mb": round(self.peak_pss / MB, 1),
            "peak_procs": self.peak_procs,
        }


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of pids is alive (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if _alive(p)}
        if pending:
            time.sleep(0.05)
    return not pending


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
