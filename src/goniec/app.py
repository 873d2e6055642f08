"""The composition root: config in, running server out.

Owns turning a validated `Config` into objects (TLS context, spool, user store,
relay rules, listeners) and running them: in this process, or in several
worker processes forked after the listening sockets are bound so they share
them. The only module that names concrete backends (DESIGN.md 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import sys
import time
from typing import Any

from goniec.config.schema import Config
from goniec.obs.log import log_event, setup_logging
from goniec.policy.relay import RelayRules, normalize_domain
from goniec.protocol import ServerOptions
from goniec.server import tls as tlsmod
from goniec.server.context import ListenerSpec, ServerContext, Timeouts
from goniec.server.limits import SharedConnectionCounter
from goniec.server.listener import bind_socket, serve_listener

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


def _make_users(config: Config) -> Any:
    from goniec.admin.users import UserStore

    return UserStore(config.users_path)


async def _serve(config: Config, sockets: list[socket.socket], counter: SharedConnectionCounter,
                 ssl_ctx: Any) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relay = RelayRules(
        local_domains=frozenset(normalize_domain(d) for d in config.domains.local),
        networks=tuple(config.relay_networks),
        authenticated_may_relay=config.relay.authenticated,
    )
    ctx = ServerContext(
        hostname=config.server.hostname,
        greeting=config.server.greeting,
        queue=_make_store(config),
        users=_make_users(config),
        relay=relay,
        tls_context=ssl_ctx,
        counter=counter,
        timeouts=Timeouts(
            command=config.timeouts.command,
            data_block=config.timeouts.data_block,
            tls_handshake=config.timeouts.tls_handshake,
        ),
    )
    servers = [
        await serve_listener(ctx, spec, sock)
        for spec, sock in zip(listener_specs(config), sockets, strict=True)
    ]
    await stop.wait()
    for server in servers:
        server.close()
    if ctx.tasks:
        log_event(log, "stopping", sessions=len(ctx.tasks))
        for session in list(ctx.sessions):
            session.shutdown()
        _, pending = await asyncio.wait(set(ctx.tasks), timeout=SHUTDOWN_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)


def _worker(config: Config, sockets: list[socket.socket], counter: SharedConnectionCounter,
            ssl_ctx: Any) -> None:
    try:
        import uvloop

        uvloop.run(_serve(config, sockets, counter, ssl_ctx))
    except ImportError:
        asyncio.run(_serve(config, sockets, counter, ssl_ctx))


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


def run(config: Config) -> None:
    """Start the server and block until SIGTERM or SIGINT."""
    setup_logging(config.server.log_level, config.log_path)
    _raise_fd_limit()
    config.data_path.mkdir(parents=True, exist_ok=True)
    ssl_ctx = tls_context(config)
    _recover(config)
    specs = listener_specs(config)
    sockets = [bind_socket(s.host, s.port) for s in specs]
    counter = SharedConnectionCounter(config.limits.connections, config.limits.connections_per_ip)
    for spec, sock in zip(specs, sockets, strict=True):
        name = sock.getsockname()
        log_event(log, "listening", listener=spec.name, address=f"{name[0]}:{name[1]}",
                  tls=spec.tls, auth=spec.auth)
    workers = config.worker_count
    log_event(log, "started", hostname=config.server.hostname, workers=workers, pid=os.getpid())
    if workers <= 1:
        _worker(config, sockets, counter, ssl_ctx)
    else:
        _supervise(config, sockets, counter, ssl_ctx, workers)
    log_event(log, "stopped")


def _spawn(config: Config, sockets: list[socket.socket], counter: SharedConnectionCounter,
           ssl_ctx: Any) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _worker(config, sockets, counter, ssl_ctx)
        except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
            logging.getLogger("goniec.app").exception("worker failed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def _supervise(config: Config, sockets: list[socket.socket], counter: SharedConnectionCounter,
               ssl_ctx: Any, workers: int) -> None:
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    children: set[int] = set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for _ in range(workers):
        children.add(_spawn(config, sockets, counter, ssl_ctx))
    restarts: list[float] = []
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if pid not in children:
            continue
        children.discard(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        log_event(log, "worker_exit", level=logging.ERROR, pid=pid, code=code)
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > 10:
            log_event(log, "giving_up", level=logging.CRITICAL, reason="workers keep dying")
            on_signal(signal.SIGTERM, None)
            sys.exit(1)
        children.add(_spawn(config, sockets, counter, ssl_ctx))
