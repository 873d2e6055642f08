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

Admin: every worker serves its internal socket (`admin.runtime`); worker 0
is the admin process, serving the CLI's control socket and the web manager
(a respawned worker 0 takes over). The pause flag is shared memory made
before the fork. Started as root with `server.user` set, the process drops
to that user after binding and preparing data_dir (`server.privileges`).
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goniec.admin.contract import ListenerRow
from goniec.config.load import config_warnings, load_config
from goniec.config.schema import Config
from goniec.errors import ConfigError
from goniec.obs.log import log_event, parse_level, setup_from_config, trail_from_config
from goniec.policy.build import build_rules
from goniec.protocol import ServerOptions
from goniec.server import privileges, sdnotify
from goniec.server import tls as tlsmod
from goniec.server.context import ListenerSpec, ServerContext, Settings, Timeouts
from goniec.server.limits import SharedConnectionCounter
from goniec.server.listener import bind_socket, serve_listener
from goniec.server.mailauth_step import MailAuthRuntime
from goniec.server.mailauth_step import build_settings as mailauth_settings
from goniec.server.pause import PauseFlag
from goniec.server.pidfile import PidFile, ServerRunning, pid_path
from goniec.server.rates import SharedRates
from goniec.server.supervisor import Supervisor, remember_hup, restart_needed, take_pending_hup

log = logging.getLogger("goniec.app")

# Seconds that running sessions get to finish after SIGTERM before they are cut.
SHUTDOWN_GRACE = 10.0

@dataclass
class _Shared:
    """What every process of one server shares: made before the fork."""

    counter: SharedConnectionCounter
    rates: SharedRates
    pause: PauseFlag
    main_pid: int
    started: float  # epoch seconds
    listeners: list[ListenerRow]


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


def _make_delivery(config: Config, store: Any, ctx: ServerContext, index: int) -> Any:
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
        self.admin: Any = None  # the Admin of the admin process: it sees the new config too
        self.delivery: Any = None  # this process's DeliveryService: routes follow reloads

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
        changed = (new.delivery != self.config.delivery
                   or new.remote_domains != self.config.remote_domains)
        if self.delivery is not None and changed:
            try:
                self.delivery.reconfigure(new.delivery, settings.rules.directory.domains)
            except ValueError as exc:  # a password file that cannot be read: keep the old
                log_event(log, "reload_failed", level=logging.ERROR, config=self.source,
                          reason=str(exc), kept="old rules")
                return
        ctx.settings = settings
        ctx.counter.total_limit = new.limits.connections
        ctx.counter.per_ip_limit = new.limits.connections_per_ip
        logging.getLogger().setLevel(parse_level(new.server.log_level))
        self.config = new
        if self.admin is not None:
            self.admin.config = new
        level = logging.INFO if self.announce else logging.DEBUG
        log_event(log, "reloaded", level=level, config=self.source,
                  generation=settings.generation, pid=os.getpid(),
                  restart_needed=",".join(pending) or "-")


async def _serve(config: Config, source: Path | None, sockets: list[socket.socket],
                 shared: _Shared, ssl_ctx: Any, announce: bool, index: int) -> None:
    from goniec.admin.runtime import Runtime, WorkerService, start_services

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
        counter=shared.counter,
        settings=build_settings(config),
        rates=shared.rates,
        mailauth=mailauth,
    )
    server = _Server(config, source, ctx, announce)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if take_pending_hup():
        on_hup()
    servers = [
        await serve_listener(ctx, spec, sock, shared.pause)
        for spec, sock in zip(listener_specs(config), sockets, strict=True)
    ]
    delivery = _make_delivery(config, store, ctx, index) if config.delivery.enabled else None
    if delivery is not None:
        ctx.queued = delivery.queued  # accepted here: delivered here, without a scan
    runtime = Runtime(main_pid=shared.main_pid, started=shared.started,
                      workers=config.worker_count, listeners=shared.listeners,
                      pause=shared.pause, run_dir=config.data_path / "run",
                      local=WorkerService(ctx, index, delivery.runner.reschedule
                                          if delivery is not None else None))
    services = await start_services(ctx, config, source, store, runtime, stop)
    server.admin = services.admin
    server.delivery = delivery
    delivery_task = None
    if delivery is not None:
        delivery_task = loop.create_task(delivery.run(stop))
    await stop.wait()
    for srv in servers:
        srv.close()
    await services.close()
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
            shared: _Shared, ssl_ctx: Any, announce: bool, index: int = 0) -> None:
    main = _serve(config, source, sockets, shared, ssl_ctx, announce, index)
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
    specs = listener_specs(config)
    sockets = [bind_socket(s.host, s.port) for s in specs]
    counter = SharedConnectionCounter(config.limits.connections, config.limits.connections_per_ip,
                                      workers=config.worker_count)
    shared = _Shared(counter, SharedRates(), PauseFlag(), os.getpid(), time.time(), [])
    for spec, sock in zip(specs, sockets, strict=True):
        name = sock.getsockname()
        address = f"[{name[0]}]:{name[1]}" if ":" in name[0] else f"{name[0]}:{name[1]}"
        shared.listeners.append(ListenerRow(spec.name, address, spec.tls, spec.auth))
        log_event(log, "listening", listener=spec.name, address=address,
                  tls=spec.tls, auth=spec.auth)
    _drop_privileges(config)
    for warning in config_warnings(config):
        log_event(log, "config_warning", level=logging.WARNING, warning=warning)
    workers = config.worker_count
    log_event(log, "started", hostname=config.server.hostname, workers=workers, pid=os.getpid(),
              config=source)
    sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}")  # Type=notify: the ports listen now
    if workers <= 1:
        _worker(config, source, sockets, shared, ssl_ctx, True)
    else:
        def run_worker(cfg: Config, index: int) -> None:
            _worker(cfg, source, sockets, shared, ssl_ctx, False, index)

        Supervisor(config, source, shared.counter, pidfile, run_worker).run(workers)


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
        privileges.preload(bool(config.admin.web_listen))
    privileges.drop(config.server.user, config.server.group, config.data_path, extra)
