"""One serving process: listeners, sessions, delivery and admin services, reload.

Owns what runs inside a worker (or the only process, with `server.workers = 1`)
once `goniec.app` has bound the sockets, made the shared counters and, with
several workers, forked: the `ServerContext` and its reloadable `Settings`,
serving the listeners, this process's queue runner, its admin sockets (and,
in worker 0, the control socket and web manager), SIGHUP reloads
(`_Server`), and stopping gracefully on SIGTERM/SIGINT. The concrete
backends come from the composition root (`goniec.app.make_store`, ...).

It is imported after the fork, so that the parent, which only binds, forks
and restarts, never holds the serving stack (policy, sessions, DNS, mail
authentication, delivery, the web manager): tests/meta/test_import_budget.py.
Raises what the listeners or the backends raise at start-up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goniec.app import make_delivery, make_store, make_users
from goniec.config.load import load_config
from goniec.config.schema import Config
from goniec.errors import ConfigError
from goniec.obs.log import log_event, parse_level
from goniec.policy.build import build_rules
from goniec.protocol import ServerOptions
from goniec.server.context import ListenerSpec, ServerContext, Settings, Timeouts
from goniec.server.listener import serve_listener
from goniec.server.mailauth_step import MailAuthRuntime
from goniec.server.mailauth_step import build_settings as mailauth_settings
from goniec.server.supervisor import restart_needed, take_pending_hup

if TYPE_CHECKING:
    from goniec.app import Shared

log = logging.getLogger("goniec.app")

# Seconds that running sessions get to finish after SIGTERM before they are cut.
SHUTDOWN_GRACE = 10.0


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
                 shared: Shared, ssl_ctx: Any, announce: bool, index: int) -> None:
    from goniec.admin.runtime import Runtime, WorkerService, start_services

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = make_store(config)
    mailauth = MailAuthRuntime(config.server.hostname)  # one DnsView/checker per worker
    ctx = ServerContext(
        hostname=config.server.hostname,
        queue=store,
        users=make_users(config),
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
    delivery = make_delivery(config, store, ctx, index) if config.delivery.enabled else None
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


def run_worker(config: Config, source: Path | None, sockets: list[socket.socket],
               shared: Shared, ssl_ctx: Any, announce: bool, index: int = 0) -> None:
    """Serve on `sockets` until SIGTERM or SIGINT; SIGHUP reloads `source`."""
    main = _serve(config, source, sockets, shared, ssl_ctx, announce, index)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
