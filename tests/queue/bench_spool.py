"""Benchmark: durable commits per second of the filesystem spool (not a test).

    python tests/queue/bench_spool.py [--dir DIR] [--count N] [--size BYTES] [--workers W]
                                      [--concurrency 1,10,50] [--uvloop] [--no-sync]

For each concurrency level, N messages of --size bytes are committed by that
many asyncio tasks into a fresh spool under --dir (default: a temporary
directory; point it at the disk the server will use). Prints commits/s,
latency, the CPU time of the whole process per commit (all threads, user +
system: less sensitive to a busy machine than the rate), and the fsyncs each
commit cost (file fdatasyncs + its share of the coalesced queue/ directory
fsyncs). --no-sync turns fsync and fdatasync into no-ops (still counted), to
see what the code costs without the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from queue_helpers import SESSION, envelope  # noqa: E402

from goniec.queue.fs import FsQueueStore  # noqa: E402


async def run(store: FsQueueStore, count: int, concurrency: int, body: bytes) -> list[float]:
    latencies: list[float] = []
    left = count

    async def committer() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            w = store.new_message()
            await w.write(body)
            await w.commit(envelope(), SESSION)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(committer() for _ in range(concurrency)))
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--concurrency", default="1,10,50")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop, as the server does")
    ap.add_argument("--no-sync", action="store_true", help="make fsync/fdatasync no-ops")
    args = ap.parse_args()
    if args.no_sync:
        os.fsync = os.fdatasync = lambda fd: None
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    body = (b"Subject: bench\r\n\r\n" + b"x" * args.size)[: args.size]
    print(f"{'conc':>5} {'commits/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/commit':>14} "
          f"{'file fsync/commit':>18} {'dir fsync/commit':>17}")
    # One parent directory removed only at the end: deleting thousands of files
    # between rounds (with online discard) would slow the next round's journal.
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for conc in (int(c) for c in args.concurrency.split(",")):
            os.sync()
            store = FsQueueStore(Path(tmp) / f"spool{conc}", min_free_space=0,
                                 workers=args.workers)
            try:
                t0, cpu0 = time.perf_counter(), cpu_seconds()
                lat = asyncio.run(run(store, args.count, conc, body))
                elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
                commits, file_syncs, dir_syncs = store.stats.snapshot()
            finally:
                store.close()
            report(conc, commits, elapsed, cpu, lat, file_syncs, dir_syncs)


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def report(conc: int, commits: int, elapsed: float, cpu: float, lat: list[float],
           file_syncs: int, dir_syncs: int) -> None:
    lat.sort()
    print(f"{conc:>5} {commits / elapsed:>10.0f} {statistics.median(lat) * 1e3:>8.2f} "
          f"{lat[int(len(lat) * 0.99) - 1] * 1e3:>8.2f} {cpu / commits * 1e6:>14.0f} "
          f"{file_syncs / commits:>18.2f} {dir_syncs / commits:>17.3f}")


if __name__ == "__main__":
    main()
