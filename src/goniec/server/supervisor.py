"""The parent of several worker processes: starts them, restarts them, passes signals on.

Owns `Supervisor` (with `server.workers > 1`: forks the workers after the
sockets are bound and the shared counters made, restarts a worker that
dies, at most 10 a minute, giving its connection slots back; SIGTERM and
SIGINT go on to every worker; SIGHUP checks the config file once, then
goes on to every worker; objects are frozen with gc.freeze at each fork,
so that the workers' pages stay shared with it) and the start-up SIGHUP
latch (`remember_hup`, `take_pending_hup`). The worker's own code is passed
in (`run_worker`), and imported by the worker after the fork, so this
module holds no server assembly. Raises nothing; exits 1 when workers
keep dying.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from goniec.config.delivery import restart_keys
from goniec.config.load import load_config
from goniec.config.schema import Config
from goniec.errors import ConfigError
from goniec.obs.log import log_event, parse_level
from goniec.server.limits import SharedConnectionCounter
from goniec.server.pidfile import PidFile

log = logging.getLogger("goniec.app")


def restart_needed(old: Config, new: Config) -> list[str]:
    """Keys that differ between `old` and `new` but only take effect after a restart."""
    out = [f"server.{k}" for k in ("hostname", "data_dir", "workers", "log_file", "user", "group")
           if getattr(old.server, k) != getattr(new.server, k)]
    out += [name for name in ("listeners", "tls", "queue")
            if getattr(old, name) != getattr(new, name)]
    out += restart_keys(old.delivery, new.delivery)
    if old.auth.users_file != new.auth.users_file:
        out.append("auth.users_file")
    if old.admin.control_socket != new.admin.control_socket:
        out.append("admin.control_socket")
    return out

# A SIGHUP that arrives while a process starts (the sockets already listen, so a
# client or `goniec reload` may act) is remembered here and acted on as soon as
# the real handler is in place; it is never lost, and never kills the process.
_hup_pending = False


def remember_hup(signum: int, _frame: object) -> None:
    global _hup_pending
    _hup_pending = True


def take_pending_hup() -> bool:
    global _hup_pending
    pending, _hup_pending = _hup_pending, False
    return pending


class Supervisor:
    """The parent of several workers: restarts them, passes signals on."""

    def __init__(self, config: Config, source: Path | None, counter: SharedConnectionCounter,
                 pidfile: PidFile, run_worker: Callable[[Config, int], None]) -> None:
        self.pidfile = pidfile  # held open: the lock lasts while any worker lives
        self.config = config
        self.source = source
        self.counter = counter
        self.run_worker = run_worker  # (config, worker index); returns when the worker stops
        self.children: dict[int, int] = {}  # pid -> worker index (its share of the counters)
        self.stopping = False

    def _spawn(self, index: int) -> int:
        # The parent's handlers must never run in a child: hold the signals back
        # across fork until the child has put its own in place.
        held = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
        # The worker's collections must not write to the objects it inherits (their
        # gc headers), so that their pages stay shared with this process.
        gc.freeze()
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
            raise
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        else:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGHUP, remember_hup)  # its loop installs its own
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
                self.counter.worker = index
                self.run_worker(self.config, index)
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                logging.getLogger("goniec.app").exception("worker failed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        return pid

    def _signal_children(self, sig: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def on_stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self._signal_children(signal.SIGTERM)

    def on_hup(self, signum: int, _frame: object) -> None:
        # Check the file once here, so a bad file is logged once, not once per worker.
        try:
            new = load_config(self.source)  # load_config also builds the rules once
        except ConfigError as exc:
            log_event(log, "reload_failed", level=logging.ERROR, config=self.source,
                      reason=str(exc), kept="old rules")
            return
        pending = restart_needed(self.config, new)
        self.config = new  # workers started from now on get it
        logging.getLogger().setLevel(parse_level(new.server.log_level))
        self._signal_children(signal.SIGHUP)
        log_event(log, "reloaded", config=self.source, workers=len(self.children),
                  restart_needed=",".join(pending) or "-")

    def run(self, workers: int) -> None:
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_hup)
        if take_pending_hup():
            self.on_hup(signal.SIGHUP, None)  # before any worker starts: they get the result
        for index in range(workers):
            self.children[self._spawn(index)] = index
        restarts: list[float] = []
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            # Its connections died with it: give their slots back to the limits.
            released = self.counter.release_worker(index)
            log_event(log, "worker_exit", level=logging.ERROR, pid=pid, code=code,
                      connections_released=released)
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 10:
                log_event(log, "giving_up", level=logging.CRITICAL, reason="workers keep dying")
                self.on_stop(signal.SIGTERM, None)
                sys.exit(1)
            self.children[self._spawn(index)] = index
