"""The delivery side of one server process, built from config (layer 4 shell).

Owns `DeliveryService` (the queue runner, the Pickup folder scanner and the
outbound transport of one process, started and stopped together) and
`build_service()`, which makes them from the `[delivery]` section, the
domains and recipient tables of `goniec.policy`, a queue store and a
`Resolver`. It reads the smart host's and the routes' password files (the
only I/O while building). It names no concrete backend: the caller (app.py)
passes the store and the resolver (DESIGN 2).

Raises `ValueError` for settings that cannot work (a password file that
cannot be read names its path); nothing after start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from goniec.config.delivery import DeliverySection
from goniec.delivery.badmail import Badmail
from goniec.delivery.destination import OAuth2Login, PasswordLogin, parse_smart_host
from goniec.delivery.local import LocalDelivery
from goniec.delivery.oauth import ClientCredentialsTokens
from goniec.delivery.pickup import PickupFolder
from goniec.delivery.pool import ConnectionPool
from goniec.delivery.resolver import Resolver
from goniec.delivery.router import DomainRoute, RoutingTable, tls_route
from goniec.delivery.runner import Runner
from goniec.delivery.schedule import Timing
from goniec.delivery.session import ClientTimeouts
from goniec.delivery.smtp_client import ClientPolicy
from goniec.delivery.transport import SmtpTransport, Transport
from goniec.delivery.worker import ArcKeyFor, MessageWorker, WorkerSettings
from goniec.policy.domains import Domains, RemoteDomain
from goniec.policy.recipients import Directory, Resolution, resolve
from goniec.queue.api import QueueStore

log = logging.getLogger("goniec.delivery")


def _password(path: Path | str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read password file {path}: {exc.strerror or exc}") from None


def _domain_route(entry: RemoteDomain, ca_file: str | None) -> DomainRoute:
    login = (PasswordLogin(entry.username, _password(entry.password_file))
             if entry.username else None)
    hop = parse_smart_host(entry.smart_host) if entry.smart_host else None
    return DomainRoute(hop, entry.port, tls_route(entry.tls, esmtp=not entry.use_helo,
                                                  login=login, ca_file=ca_file))


def routing_table(d: DeliverySection, domains: Domains) -> RoutingTable:
    """The router's facts: remote-domain routes with their logins loaded."""
    ca_file = str(d.ca_file) if d.ca_file is not None else None
    routes = {e.name: _domain_route(e, ca_file)
              for e in (*domains.remote.values(), *domains.remote_wildcards.values())}
    login: PasswordLogin | OAuth2Login | None = None
    if d.smart_host_username and d.smart_host_password_file is not None:
        login = PasswordLogin(d.smart_host_username, _password(d.smart_host_password_file))
    elif d.smart_host_username and d.smart_host_oauth_client_secret_file is not None:
        tokens = ClientCredentialsTokens(
            d.smart_host_oauth_token_url, d.smart_host_oauth_client_id,
            _password(d.smart_host_oauth_client_secret_file),
            d.smart_host_oauth_scope or None,
            verify=True if d.ca_file is None else ssl.create_default_context(cafile=str(d.ca_file)))
        login = OAuth2Login(d.smart_host_username, tokens)
    return RoutingTable(
        domains=domains, routes=routes,
        smart_host=parse_smart_host(d.smart_host) if d.smart_host else None,
        smart_host_route=tls_route(d.smart_host_tls, login=login, ca_file=ca_file),
        direct_first=d.direct_first, mx_route=tls_route(d.mx_tls, ca_file=ca_file),
        port=d.port)


def client_policy(d: DeliverySection, hostname: str) -> ClientPolicy:
    # command_timeout caps every wait for a reply; the end of data may take twice as
    # long (RFC 5321 4.5.3.2.6 suggests 10 minutes there, 5 for the others).
    base, t = ClientTimeouts(), d.command_timeout
    caps = {f.name: min(getattr(base, f.name), t) for f in dataclasses.fields(base)
            if f.name not in ("connect", "data_done")}
    timeouts = ClientTimeouts(connect=d.connect_timeout, data_done=min(base.data_done, 2 * t),
                              **caps)
    return ClientPolicy(helo_name=d.helo_name or hostname, port=d.port, timeouts=timeouts,
                        masquerade_domain=d.masquerade_domain or None)


@dataclass
class DeliveryService:
    runner: Runner
    transport: Transport
    pickup: PickupFolder | None = None
    pickup_interval: float = 1.0
    hostname: str = ""

    def reconfigure(self, delivery: DeliverySection, domains: Domains) -> None:
        """After a reload: new routes (smart host, per-domain routes, TLS, logins), retry
        schedule and reports, and client settings (HELO name, masquerade, port,
        timeouts), for every attempt that starts from now on. Attempts under way finish
        with what they had; idle connections of a route whose TLS or login changed are
        not reused (the route is part of their key). Raises ValueError (an unreadable
        password file) and changes nothing then."""
        d = delivery
        table = routing_table(d, domains)
        worker = self.runner.worker
        old_login = getattr(worker.table.smart_host_route, "login", None)
        worker.table = table
        worker.settings = dataclasses.replace(
            worker.settings, remote=Timing(d.retry, d.delay_notice, d.expire),
            local=Timing(d.local_retry, d.local_delay_notice, d.local_expire),
            delay_without_notify=d.delay_notice_without_notify, ndr_copy_to=d.ndr_copy_to)
        if isinstance(self.transport, SmtpTransport):
            self.transport.policy = client_policy(d, self.hostname)
        tokens = getattr(old_login, "tokens", None)
        if tokens is not None and tokens is not getattr(table.smart_host_route.login, "tokens",
                                                        None):
            task = asyncio.get_running_loop().create_task(tokens.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def wake(self) -> None:
        self.runner.wake()

    def queued(self, queue_id: str) -> None:
        """A message this process has just accepted: deliver it without waiting for a scan."""
        self.runner.offer(queue_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver (and scan the Pickup folder) until `stop` is set, then close connections."""
        tasks = [asyncio.ensure_future(self.runner.run(stop))]
        if self.pickup is not None:
            tasks.append(asyncio.ensure_future(self.pickup.run(stop, self.pickup_interval)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await self.transport.close()


def build_service(delivery: DeliverySection, *, store: QueueStore, resolver: Resolver,
                  hostname: str, data_dir: Path,
                  directory: Directory | Callable[[], Directory],
                  transport: Transport | None = None, workers: int = 1,
                  worker_index: int = 0, clock: Callable[[], float] = time.time,
                  arc_key: ArcKeyFor | None = None) -> DeliveryService:
    """Everything one process needs to deliver. With `workers` processes each running a
    service, each gets its share of the connection limits (leases keep them apart).

    `directory` may be a callable giving the current one (after a reload): aliases
    and forwards then follow it; the routing table is rebuilt by `reconfigure`.
    `arc_key` gives the key that ARC-seals a copy forwarded for a domain (RFC 8617);
    None: forwarded copies are never sealed."""
    d = delivery
    paths = d.paths(data_dir)
    if transport is None:
        share = max(1, workers)
        pool = ConnectionPool(max_connections=max(1, d.connections // share),
                              max_per_destination=max(1, d.connections_per_destination // share),
                              max_messages_per_connection=d.messages_per_connection,
                              idle_timeout=d.idle_timeout)
        transport = SmtpTransport(resolver, pool, client_policy(d, hostname))
    badmail = Badmail(paths.badmail_dir, max_size=d.badmail.max_size, max_age=d.badmail.max_age,
                      clock=clock)
    local = LocalDelivery(d.local.mode, maildir_root=paths.maildir_root,
                          drop_dir=paths.drop_dir, hostname=hostname,
                          delivered_to=d.local.delivered_to)
    current = directory if callable(directory) else (lambda: directory)
    first = current()

    def resolve_fn(address: str) -> Resolution | None:
        return resolve(current(), address)

    settings = WorkerSettings(
        hostname=hostname,
        remote=Timing(d.retry, d.delay_notice, d.expire),
        local=Timing(d.local_retry, d.local_delay_notice, d.local_expire),
        delay_without_notify=d.delay_notice_without_notify, ndr_copy_to=d.ndr_copy_to)
    worker = MessageWorker(store, table=routing_table(d, first.domains), transport=transport,
                           local=local, resolve=resolve_fn, badmail=badmail, settings=settings,
                           clock=clock, arc_key=arc_key)
    runner = Runner(store, worker, clock=clock, scan_interval=d.scan_interval,
                    parallel=d.parallel, share=(worker_index, max(1, workers)))
    pickup = None
    if paths.pickup_dir is not None:
        pickup = PickupFolder(paths.pickup_dir, store, badmail, hostname=hostname,
                              dot_stuffed=d.pickup.dot_stuffed, on_queued=runner.wake,
                              clock=clock)
    return DeliveryService(runner, transport, pickup, d.pickup.scan_interval, hostname)
