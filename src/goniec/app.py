"""The composition root: config in, running server out.

Owns turning a validated `Config` into objects (TLS context, spool, user store,
policy rules, listeners, shared counters) and running them: in this process,
or in several worker processes forked after the listening sockets are bound
so they share them; the pid file; and reloading on SIGHUP. The only module
that names concrete backends (DESIGN.md 2).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from goniec.config.load import config_warnings, load_config
from goniec.config.schema import Config
from goniec.errors import ConfigError
from goniec.obs.log import log_event, parse_level, setup_logging
from goniec.policy.build import build_rules
from goniec.protocol import ServerOptions
from goniec.server import tls as tlsmod
from goniec.server.context import ListenerSpec, ServerContext, Settings, Timeouts
from goniec.server.limits import SharedConnectionCounter
from goniec.server.listener import bind_socket, serve_listener
from goniec.server.mailauth_step import MailAuthRuntime
from goniec.server.mailauth_step import build_settings as mailauth_settings
from goniec.server.pidfile import PidFile, ServerRunning, pid_path
from goniec.server.rates import SharedRates

log = logging.getLogger("goniec.app")

# Seconds that running sessions get to finish after SIGTERM before they are cut.
SHUTDOWN_GRACE = 10.0

# A SIGHUP that arrives while a process starts (the sockets already listen, so a
# client or `goniec reload` may act) is remembered here and acted on as soon as
# the real handler is in place; it is never lost, and never kills the process.
_hup_pending = False


def _remember_hup(signum: int, _frame: object) -> None:
    global _hup_pending
    _hup_pending = True


def _take_pending_hup() -> bool:
    global _hup_pending
    pending, _hup_pending = _hup_pending, False
    return pending


def listener_specs(config: Config) -> list[ListenerSpec]:
    specs = []
    for lst in config.listeners:
        host, port = config.listener_endpoint(lst)
        tls_on = lst.tls != "none"
        options = ServerOptions(
            hostname=config.server.hostname,
            max_message_size=config.message_size_bytes,
            tls_available=lst.tls == "starttls",
            auth_mechanisms=() if lst.auth == "none" else ("PLAIN", "LOGIN"),
            auth_requires_tls=tls_on and not config.auth.allow_plaintext,
            max_bad_commands=config.limits.bad_commands,
        )
        specs.append(ListenerSpec(lst.name, host, port, lst.tls, lst.auth, options))
    return specs


def build_settings(config: Config, generation: int = 0) -> Settings:
    """The reloadable part of a running server, from `config` (already validated)."""
    rules = build_rules(config)
    resolver = None
    if rules.needs_reverse_dns:
        from goniec.server.rdns import ReverseResolver

        resolver = ReverseResolver(config.dns.nameservers, config.dns.port, config.dns.timeout)
    t = config.timeouts
    return Settings(
        rules=rules,
        options={spec.name: spec.options for spec in listener_specs(config)},
        greeting=config.server.greeting,
        timeouts=Timeouts(command=t.command, data_block=t.data_block,
                          tls_handshake=t.tls_handshake),
        resolver=resolver,
        mailauth=mailauth_settings(config),
        generation=generation,
    )


def restart_needed(old: Config, new: Config) -> list[str]:
    """Keys that differ between `old` and `new` but only take effect after a restart."""
    out = [f"server.{k}" for k in ("hostname", "data_dir", "workers", "log_file")
           if getattr(old.server, k) != getattr(new.server, k)]
    out += [name for name in ("listeners", "tls", "queue", "delivery")
            if getattr(old, name) != getattr(new, name)]
    if old.auth.users_file != new.auth.users_file:
        out.append("auth.users_file")
    return out


def _reload_file(source: Path | None) -> Config:
    """Load the config again; ConfigError when it does not load."""
    return load_config(source)


def tls_context(config: Config) -> Any:
    cert, key = config.tls_paths()
    if cert is None or key is None:
        cert, key = tlsmod.ensure_self_signed(config.data_path / "tls", config.server.hostname)
    return tlsmod.server_context(
        cert, key, min_version=config.tls.min_version, ciphers=config.tls.ciphers
    )


def _make_store(config: Config) -> Any:
    from goniec.queue.fs import FsQueueStore

    return FsQueueStore(config.data_path / "spool", min_free_space=config.min_free_space_bytes)


def _make_delivery(config: Config, store: Any, ctx: ServerContext) -> Any:
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
                         workers=config.worker_count,
                         arc_key=lambda domain, size: ctx.settings.mailauth.arc_key(domain, size))


def _make_users(config: Config) -> Any:
    from goniec.admin.users import UserStore

    return UserStore(config.users_path)


class _Server:
    """One process's running state: what SIGHUP replaces."""

    def __init__(self, config: Config, source: Path | None, ctx: ServerContext,
                 announce: bool) -> None:
        self.config = config
        self.source = source
        self.ctx = ctx
        self.announce = announce  # log "reloaded" here (False in workers: the parent does)

    async def reload(self) -> None:
        try:
            new = await asyncio.to_thread(_reload_file, self.source)
        except ConfigError as exc:
            log_event(log, "reload_failed", level=logging.ERROR, config=self.source,
                      reason=str(exc), kept="old rules")
            return
        self.apply(new)

    def apply(self, new: Config) -> None:
        ctx = self.ctx
        try:
            settings = build_settings(new, ctx.settings.generation + 1)
        except Exception as exc:  # load_config checked it; keep serving whatever happens
            log_event(log, "reload_failed", level=logging.ERROR, config=self.source,
                      reason=str(exc), kept="old rules")
            return
        pending = restart_needed(self.config, new)
        if "listeners" in pending:
            # The sockets are the old ones until a restart: so are their protocol options.
            settings = dataclasses.replace(settings, options=ctx.settings.options)
        ctx.settings = settings
        ctx.counter.total_limit = new.limits.connections
        ctx.counter.per_ip_limit = new.limits.connections_per_ip
        logging.getLogger().setLevel(parse_level(new.server.log_level))
        self.config = new
        level = logging.INFO if self.announce else logging.DEBUG
        log_event(log, "reloaded", level=level, config=self.source,
                  generation=settings.generation, pid=os.getpid(),
                  restart_needed=",".join(pending) or "-")


async def _serve(config: Config, source: Path | None, sockets: list[socket.socket],
                 counter: SharedConnectionCounter, rates: SharedRates, ssl_ctx: Any,
                 announce: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = _make_store(config)
    mailauth = MailAuthRuntime(config.server.hostname)  # one DnsView/checker per worker
    ctx = ServerContext(
        hostname=config.server.hostname,
        queue=store,
        users=_make_users(config),
        tls_context=ssl_ctx,
        counter=counter,
        settings=build_settings(config),
        rates=rates,
        mailauth=mailauth,
    )
    server = _Server(config, source, ctx, announce)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if _take_pending_hup():
        on_hup()
    servers = [
        await serve_listener(ctx, spec, sock)
        for spec, sock in zip(listener_specs(config), sockets, strict=True)
    ]
    delivery_task = None
    if config.delivery.enabled:
        delivery = _make_delivery(config, store, ctx)
        delivery_task = loop.create_task(delivery.run(stop))
    await stop.wait()
    for srv in servers:
        srv.close()
    if ctx.tasks:
        log_event(log, "stopping", sessions=len(ctx.tasks))
        for session in list(ctx.sessions):
            session.shutdown()
        _, pending = await asyncio.wait(set(ctx.tasks), timeout=SHUTDOWN_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
    if delivery_task is not None:
        await delivery_task
    mailauth.close()


def _worker(config: Config, source: Path | None, sockets: list[socket.socket],
            counter: SharedConnectionCounter, rates: SharedRates, ssl_ctx: Any,
            announce: bool) -> None:
    main = _serve(config, source, sockets, counter, rates, ssl_ctx, announce)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _recover(config: Config) -> None:
    store = _make_store(config)
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
    signal.signal(signal.SIGHUP, _remember_hup)  # until the reload handler is in place
    setup_logging(config.server.log_level, config.log_path)
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
    specs = listener_specs(config)
    sockets = [bind_socket(s.host, s.port) for s in specs]
    counter = SharedConnectionCounter(config.limits.connections, config.limits.connections_per_ip,
                                      workers=config.worker_count)
    rates = SharedRates()
    for spec, sock in zip(specs, sockets, strict=True):
        name = sock.getsockname()
        log_event(log, "listening", listener=spec.name, address=f"{name[0]}:{name[1]}",
                  tls=spec.tls, auth=spec.auth)
    for warning in config_warnings(config):
        log_event(log, "config_warning", level=logging.WARNING, warning=warning)
    workers = config.worker_count
    log_event(log, "started", hostname=config.server.hostname, workers=workers, pid=os.getpid(),
              config=source)
    if workers <= 1:
        _worker(config, source, sockets, counter, rates, ssl_ctx, True)
    else:
        _Supervisor(config, source, sockets, counter, rates, ssl_ctx, pidfile).run(workers)


class _Supervisor:
    """The parent of several workers: restarts them, passes signals on."""

    def __init__(self, config: Config, source: Path | None, sockets: list[socket.socket],
                 counter: SharedConnectionCounter, rates: SharedRates, ssl_ctx: Any,
                 pidfile: PidFile) -> None:
        self.pidfile = pidfile
        self.config = config
        self.source = source
        self.sockets = sockets
        self.counter = counter
        self.rates = rates
        self.ssl_ctx = ssl_ctx
        self.children: dict[int, int] = {}  # pid -> worker index (its share of the counters)
        self.stopping = False

    def _spawn(self, index: int) -> int:
        # The parent's handlers must never run in a child: hold the signals back
        # across fork until the child has put its own in place.
        held = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
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
                signal.signal(signal.SIGHUP, _remember_hup)  # its loop installs its own
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
                self.counter.worker = index
                _worker(self.config, self.source, self.sockets, self.counter, self.rates,
                        self.ssl_ctx, False)
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
            new = _reload_file(self.source)  # load_config also builds the rules once
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
        if _take_pending_hup():
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
