"""The queue runner: which message to deliver when (layer 4 shell).

Owns the in-memory schedule of one runner: every queued message's next due
time, learnt by scanning the store's ids (`QueueStore.list_ids`, cheap) and
reading each new message's record once, then kept up to date from what the
`MessageWorker` returns. Due messages are delivered concurrently (at most
`parallel` at once), each under its delivery lease (`QueueStore.lease`), so
several runners (one per server worker process, or other nodes sharing a SQL
queue) never deliver one message at the same time. The schedule is only a
hint: the worker reads the record again under the lease.

Crash safety lives in the queue: nothing here is durable. After a crash a
fresh runner rebuilds its schedule from the spool; a message whose attempt was
cut short is delivered again (at worst a duplicate, never a loss).

Held messages (`QueuedMessage.held`) are never handed to the worker, so they
are neither delivered nor expired nor bounced while held: like Postfix's hold
queue, the queue lifetime is only applied once released (a message released
past it gets one attempt; the worker expires it if that fails temporarily). The runner looks at a
held message again every `hold_recheck` seconds (by `clock`), under its
lease, so a release by another process (the CLI) takes effect within that
time, without re-reading every held record at every scan.

New mail reaches the runner of the process that accepted it at once
(`offer`, called after the commit), without a scan. With several runners on
one spool (`share` = (index, count)), a message found by a scan belongs to
one runner by a hash of its id; the others schedule it `share_grace` seconds
later than its due time, so normally only its owner takes it, and a stuck or
dead owner's messages are still delivered. An operator's "retry now" reaches
every runner through `reschedule`.

`clock` gives the time the schedule compares against (tests inject one and
call `run_once()` after moving it); sleeping uses the event loop. Nothing is
raised out of `run()`: a failing message is logged and retried `error_delay`
seconds later (DESIGN 1.5).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import zlib
from collections.abc import Callable, Iterable

from goniec.delivery.worker import MessageWorker
from goniec.obs import track, trail
from goniec.queue.api import QueuedMessage, QueueStore

log = logging.getLogger("goniec.delivery")


class Runner:
    def __init__(self, store: QueueStore, worker: MessageWorker, *,
                 clock: Callable[[], float] = time.time, scan_interval: float = 1.0,
                 parallel: int = 200, busy_delay: float = 5.0, error_delay: float = 60.0,
                 stop_grace: float = 10.0, hold_recheck: float = 60.0,
                 share: tuple[int, int] = (0, 1), share_grace: float = 5.0) -> None:
        self.store = store
        self.worker = worker
        self.clock = clock
        self.scan_interval = scan_interval
        self.parallel = parallel
        self.busy_delay = busy_delay  # another runner holds the lease: look again then
        self.error_delay = error_delay
        # After stop, attempts under way get this long to finish; then they are cancelled
        # (a stalled peer could otherwise hold the shutdown for the whole command timeout).
        self.stop_grace = stop_grace
        self.hold_recheck = hold_recheck  # a held message is looked at again this often
        self.share_index, self.share_count = share
        self.share_grace = share_grace
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._active: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._rescan = False
        self.delivered_passes = 0  # finished attempts, for tests and benchmarks

    # -- schedule --------------------------------------------------------------------

    def _set(self, queue_id: str, due: float | None) -> None:
        if due is None:
            self._due.pop(queue_id, None)
            return
        self._due[queue_id] = due
        heapq.heappush(self._heap, (due, queue_id))

    def wake(self) -> None:
        """Look at the spool now (a message was just queued in this process)."""
        self._rescan = True
        self._wake.set()

    def offer(self, queue_id: str) -> None:
        """A message this process has just queued: due now, no scan needed."""
        if queue_id not in self._due and queue_id not in self._active:
            self._set(queue_id, self.clock())
            self._wake.set()

    def reschedule(self, ids: Iterable[str]) -> int:
        """Make these messages due now (an operator's "retry"); how many were known
        or new. An attempt under way is left alone: it records its own outcome."""
        now = self.clock()
        count = 0
        for queue_id in ids:
            if queue_id not in self._active:
                self._set(queue_id, now)
                count += 1
        if count:
            self._wake.set()
        return count

    def _mine(self, queue_id: str) -> bool:
        return (self.share_count <= 1
                or zlib.crc32(queue_id.encode()) % self.share_count == self.share_index)

    @property
    def scheduled(self) -> int:
        return len(self._due)

    async def scan(self) -> int:
        """Learn new messages and forget removed ones; the number of new ones."""
        ids = await asyncio.to_thread(self.store.list_ids)
        present = set(ids)
        for gone in [q for q in self._due if q not in present and q not in self._active]:
            del self._due[gone]
        new = [q for q in ids if q not in self._due and q not in self._active]
        if self.share_count > 1:
            # Another runner's share is not read now: it is due share_grace from now,
            # and read under the lease then, if its owner has not delivered it.
            later = self.clock() + self.share_grace
            for queue_id in [q for q in new if not self._mine(q)]:
                self._set(queue_id, later)
            new_mine = [q for q in new if self._mine(q)]
        else:
            new_mine = new
        if new_mine:
            loaded = await asyncio.to_thread(self._load, new_mine)
            for queue_id, due in loaded:
                self._set(queue_id, due)
        return len(new)

    def _load(self, ids: list[str]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for queue_id in ids:
            msg = self.store.get(queue_id)
            if msg is not None:
                out.append((queue_id, self._due_of(msg)))
        return out

    def _due_of(self, msg: QueuedMessage) -> float:
        return self.clock() + self.hold_recheck if msg.held else _due(msg)

    def _pop_due(self, now: float) -> list[str]:
        out: list[str] = []
        while self._heap and self._heap[0][0] <= now and len(self._active) + len(out) < \
                self.parallel:
            due, queue_id = heapq.heappop(self._heap)
            if self._due.get(queue_id) != due or queue_id in self._active or queue_id in out:
                continue  # a stale heap entry
            out.append(queue_id)
        return out

    def next_wakeup(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    # -- delivery --------------------------------------------------------------------

    def _start(self, queue_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._attempt(queue_id))
        self._active[queue_id] = task
        task.add_done_callback(lambda _t: self._done(queue_id))

    def _done(self, queue_id: str) -> None:
        self._active.pop(queue_id, None)
        self._wake.set()

    async def _attempt(self, queue_id: str) -> None:
        lease = self.store.lease(queue_id)
        if lease is None:
            if self.store.get(queue_id) is None:
                self._set(queue_id, None)
            else:
                self._set(queue_id, self.clock() + self.busy_delay)
            return
        try:
            msg = self.store.get(queue_id)
            if msg is not None and msg.held:  # read under the lease: held meanwhile, or still
                self._set(queue_id, self._due_of(msg))
                return
            due = None if msg is None else await self.worker.process(msg)
            self._set(queue_id, due)
            self.delivered_passes += 1
        except Exception as exc:
            log.exception("runner.attempt_failed msg=%s retry_in=%s", queue_id, self.error_delay)
            track.error(queue_id, exc, self.clock() + self.error_delay)
            self._set(queue_id, self.clock() + self.error_delay)
        finally:
            lease.release()

    async def run_once(self) -> int:
        """Scan, then deliver every message due now (by `clock`) and wait; how many ran."""
        await self.scan()
        count = 0
        while True:
            batch = self._pop_due(self.clock())
            if not batch:
                if not self._active:
                    return count
                await asyncio.wait(set(self._active.values()))
                continue
            for queue_id in batch:
                self._start(queue_id)
            count += len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then wait for the attempts under way, at most
        `stop_grace` seconds, and cancel the rest. A cancelled attempt is retried at the
        next start, as after a crash (at worst a duplicate, never a loss)."""
        next_scan = 0.0
        while not stop.is_set():
            mono = time.monotonic()
            if mono >= next_scan:
                try:
                    await self.scan()
                except OSError as exc:
                    log.error("runner.scan_failed error=%r", exc)
                next_scan = mono + self.scan_interval
            for queue_id in self._pop_due(self.clock()):
                self._start(queue_id)
            wakeup = self.next_wakeup()
            delay = next_scan - time.monotonic()
            if wakeup is not None and len(self._active) < self.parallel:
                delay = min(delay, wakeup - self.clock())
            self._wake.clear()
            if delay > 0:
                waiters = [asyncio.ensure_future(self._wake.wait()),
                           asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
            if self._rescan:
                self._rescan = False
                next_scan = 0.0
        if self._active:
            _, pending = await asyncio.wait(set(self._active.values()), timeout=self.stop_grace)
            if pending:
                log.warning("runner.stop_cancelled attempts=%d grace=%s", len(pending),
                            self.stop_grace)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        trail.current().flush()  # the last lines of this process, before the loop ends


def _due(msg: QueuedMessage) -> float:
    """When to look at `msg`; at once when it is done (only the remove is missing)."""
    due = [s.next_attempt for s in msg.recipients if not s.status.is_final]
    return min(due) if due else 0.0
