"""The composition root: config in, running server out.

Owns turning a validated `Config` into objects (TLS context, spool, user store,
shared counters, the bound listening sockets) and running them: in this
process, or in several worker processes forked after the sockets are bound
so they share them; the pid file; and reloading on SIGHUP. The only module
that names concrete backends (DESIGN.md 2). What runs inside a worker
(sessions, policy, delivery, admin services, reload) is `goniec.worker`,
imported only after the fork: this parent binds, forks and restarts, and
every worker inherits its memory, so it imports no more than that needs.

Reload: SIGHUP (sent by `goniec reload`) re-reads the config file. A file that
does not load keeps the old rules and logs one `reload_failed` line saying
why. Otherwise the `Settings` object of every worker is replaced: new
connections use the new rules at once, running sessions from their next
command outside a mail transaction (HELO/EHLO, AUTH, MAIL); nobody is
disconnected. With several workers the parent checks the file first (one
log line), then passes SIGHUP on to each worker, and respawned workers get
the new config. Keys that only a restart can change (listeners, TLS, data
and log paths, workers, hostname, queue, users file) are named in the
`reloaded` line as `restart_needed=`.

Admin: every worker serves its internal socket (`admin.runtime`); worker 0
is the admin process, serving the CLI's control socket and the web manager
(a respawned worker 0 takes over). The pause flag is shared memory made
before the fork. Started as root with `server.user` set, the process drops
to that user after binding and preparing data_dir (`server.privileges`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goniec.admin.contract import ListenerRow
from goniec.config.load import config_warnings
from goniec.config.schema import Config
from goniec.errors import ConfigError
from goniec.obs.log import log_event, setup_from_config, trail_from_config
from goniec.server import privileges, sdnotify
from goniec.server import tls as tlsmod
from goniec.server.limits import SharedConnectionCounter
from goniec.server.pause import PauseFlag
from goniec.server.pidfile import PidFile, ServerRunning, pid_path
from goniec.server.rates import SharedRates
from goniec.server.sockets import bind_socket
from goniec.server.supervisor import Supervisor, remember_hup

if TYPE_CHECKING:
    from goniec.server.context import ServerContext

log = logging.getLogger("goniec.app")


@dataclass
class Shared:
    """What every process of one server shares: made before the fork."""

    counter: SharedConnectionCounter
    rates: SharedRates
    pause: PauseFlag
    main_pid: int
    started: float  # epoch seconds
    listeners: list[ListenerRow]


def tls_context(config: Config) -> Any:
    cert, key = config.tls_paths()
    if cert is None or key is None:
        cert, key = _self_signed(config.data_path / "tls", config.server.hostname)
    return tlsmod.server_context(
        cert, key, min_version=config.tls.min_version, ciphers=config.tls.ciphers
    )


def _self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """The certificate of a first start, made by a short-lived child process, so that
    cryptography (6 MB of heap, 10 MB of libraries) never enters this process, whose
    memory every worker inherits. What the child could not do is done (or raised) here."""
    if threading.active_count() == 1:  # forking with threads running could deadlock
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                tlsmod.ensure_self_signed(directory, hostname)
                code = 0
            finally:
                os._exit(code)  # never return into the parent's code
        os.waitpid(pid, 0)
    return tlsmod.ensure_self_signed(directory, hostname)  # made: only the paths


def make_store(config: Config) -> Any:
    from goniec.queue.fs import FsQueueStore

    return FsQueueStore(config.data_path / "spool", min_free_space=config.min_free_space_bytes)


def make_delivery(config: Config, store: Any, ctx: ServerContext, index: int) -> Any:
    """The queue runner of this process; every worker runs one (leases keep them apart)."""
    from goniec.delivery.dns import MxResolver
    from goniec.delivery.service import build_service

    own = [config.server.hostname]
    dns = config.dns
    resolver = (MxResolver(list(dns.nameservers), port=dns.port, timeout=dns.timeout,
                           own_names=own)
                if dns.nameservers else MxResolver.from_system(own_names=own))
    return build_service(config.delivery, store=store, resolver=resolver,
                         hostname=config.server.hostname, data_dir=config.data_path,
                         directory=lambda: ctx.settings.rules.directory,  # follows reloads
                         workers=config.worker_count, worker_index=index,
                         arc_key=lambda domain, size: ctx.settings.mailauth.arc_key(domain, size))


def make_users(config: Config) -> Any:
    from goniec.admin.users import UserStore

    return UserStore(config.users_path)


def _recover(config: Config) -> None:
    store = make_store(config)
    try:
        report = asyncio.run(store.recover())
    finally:
        store.close()  # its threads must not linger in the parent that forks workers
    log_event(log, "recovered", messages=report.messages, incoming_removed=report.incoming_removed,
              orphans_removed=report.orphans_removed, corrupt=len(report.corrupt))


def _raise_fd_limit() -> None:
    # Every client is a descriptor: 1,000 idle connections must not exhaust the
    # common soft limit of 1024 while the hard limit allows more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(config: Config, source: Path | None = None) -> None:
    """Start the server and block until SIGTERM or SIGINT; SIGHUP reloads `source`."""
    signal.signal(signal.SIGHUP, remember_hup)  # until the reload handler is in place
    if config.server.user:
        privileges.resolve(config.server.user, config.server.group)  # ConfigError: unknown
    _setup_logging(config)
    _raise_fd_limit()
    config.data_path.mkdir(parents=True, exist_ok=True)
    pidfile = PidFile(pid_path(config.data_path))
    try:
        pidfile.acquire()
    except ServerRunning as exc:
        raise ConfigError(str(exc)) from None
    try:
        _run(config, source, pidfile)
    finally:
        pidfile.release()
    log_event(log, "stopped")


def _run(config: Config, source: Path | None, pidfile: PidFile) -> None:
    ssl_ctx = tls_context(config)
    _recover(config)
    # In the config's order: each worker pairs them with its listener specs.
    sockets = [bind_socket(*config.listener_endpoint(lst)) for lst in config.listeners]
    counter = SharedConnectionCounter(config.limits.connections, config.limits.connections_per_ip,
                                      workers=config.worker_count)
    shared = Shared(counter, SharedRates(), PauseFlag(), os.getpid(), time.time(), [])
    for lst, sock in zip(config.listeners, sockets, strict=True):
        name = sock.getsockname()
        address = f"[{name[0]}]:{name[1]}" if ":" in name[0] else f"{name[0]}:{name[1]}"
        shared.listeners.append(ListenerRow(lst.name, address, lst.tls, lst.auth))
        log_event(log, "listening", listener=lst.name, address=address,
                  tls=lst.tls, auth=lst.auth)
    _drop_privileges(config)
    for warning in config_warnings(config):
        log_event(log, "config_warning", level=logging.WARNING, warning=warning)
    workers = config.worker_count
    log_event(log, "started", hostname=config.server.hostname, workers=workers, pid=os.getpid(),
              config=source)
    sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}")  # Type=notify: the ports listen now
    if workers <= 1:
        from goniec.worker import run_worker as serve

        serve(config, source, sockets, shared, ssl_ctx, True)
        return

    def run_worker(cfg: Config, index: int) -> None:
        # The serving stack is imported here, in the forked child: the parent only
        # binds, forks and restarts (tests/meta/test_import_budget.py).
        from goniec.worker import run_worker as serve

        serve(cfg, source, sockets, shared, ssl_ctx, False, index)

    _before_fork()
    Supervisor(config, source, shared.counter, pidfile, run_worker).run(workers)


def _before_fork() -> None:
    """Make what the workers inherit small: the start-up garbage (config parsing,
    recovery) is collected and its memory handed back to the system, so that no
    worker starts with a copy of it. (The supervisor freezes the rest at each fork.)"""
    gc.collect()
    with contextlib.suppress(ImportError, OSError, AttributeError):  # glibc only
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


def _setup_logging(config: Config) -> None:
    """Event lines as [log] says (format, rotation), and the per-message trail."""
    setup_from_config(config)
    trail_from_config(config)  # files are opened at the first event, after any drop


def _drop_privileges(config: Config) -> None:
    """As root with server.user set: hand the files over, then become that user."""
    control = config.admin.control_socket
    run_dirs = [config.data_path / "run"]
    if control is not None:
        run_dirs.append(control.parent)
    for d in run_dirs:  # made now: after the drop the user may not create them
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_file = config.log_path
    log_dir = privileges.log_folder(log_file) if log_file is not None else None
    extra = [p for p in (*run_dirs, log_dir or log_file)
             if p is not None and not p.is_relative_to(config.data_path)]
    if config.server.user:
        # After the drop, the interpreter's files may no longer be readable (a venv
        # under /root): import what the workers need while they still are.
        import goniec.worker  # noqa: F401

        privileges.preload(bool(config.admin.web_listen))
    privileges.drop(config.server.user, config.server.group, config.data_path, extra)
