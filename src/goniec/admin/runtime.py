"""The live side of a running server that the admin facade reaches: workers, pause, pids.

Owns `WorkerService` (in every worker process: its sessions as
`SessionRow`s, disconnecting one, its metrics snapshot; served on the
internal socket `data_dir/run/worker-<n>.sock`) and `Runtime` (in the
admin process, worker 0: the main pid, start time, bound listeners, the
shared pause flag, and the fan-out that asks every worker with a short
timeout, so a dead worker is reported rather than waited for). Holds no
admin rules; `service.Admin` does. Raises nothing but what it is asked to
forward.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goniec.admin import control
from goniec.admin.contract import ListenerRow, SessionRow
from goniec.obs.log import log_event

if TYPE_CHECKING:
    from goniec.admin.service import Admin
    from goniec.config.schema import Config
    from goniec.queue.api import QueueStore
    from goniec.server.context import ServerContext
    from goniec.server.pause import PauseFlag

log = logging.getLogger("goniec.admin")

WORKER_TIMEOUT = 2.0  # seconds a worker has to answer the admin process


def iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def worker_socket(run_dir: Path, index: int) -> Path:
    return run_dir / f"worker-{index}.sock"


def _client(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _state(session: Any) -> str:
    if session.conn.in_data:
        return "data"
    if getattr(session, "sender", None) is not None:
        return "mail"
    return "greeting" if session.info.helo is None else "idle"


def process_metrics() -> dict[str, Any]:
    """This process's metrics snapshot ({} when goniec.obs.metrics is not installed)."""
    try:
        from goniec.obs import metrics
    except ImportError:
        return {}
    snap: dict[str, Any] = metrics.current().snapshot()
    return snap


class WorkerService:
    """What one worker process tells the admin process about itself."""

    def __init__(self, ctx: ServerContext, index: int,
                 reschedule: Callable[[list[str]], int] | None = None) -> None:
        self.ctx = ctx
        self.index = index
        # This process's queue runner: "due now" for messages an operator retried or
        # released (None when delivery is off).
        self.reschedule = reschedule

    def sessions(self) -> list[SessionRow]:
        from goniec.server.listener import connected_at

        now = time.time()
        rows = []
        for s in list(self.ctx.sessions):
            info = s.info
            started = connected_at(s)
            rows.append(SessionRow(
                id=info.session_id, worker=self.index, listener=info.listener,
                client=_client(info.peer_ip, info.peer_port), helo=info.helo or "",
                user=info.auth_user or "", tls=info.tls_version or "", state=_state(s),
                started=iso(started), duration=round(max(0.0, now - started), 3),
                messages=int(getattr(s, "messages", 0))))
        rows.sort(key=lambda r: r.started)
        return rows

    def disconnect(self, session_id: str) -> bool:
        """End one session: it answers 421 4.3.2 and closes (RFC 5321 3.8)."""
        for s in list(self.ctx.sessions):
            if s.info.session_id == session_id:
                log_event(log, "disconnect_requested", session=session_id, by="admin",
                          client=s.info.peer_ip)
                s.disconnect()  # its read raises Interrupted: 421, close
                return True
        return False

    async def handle(self, op: str, args: dict[str, Any], progress: control.Progress) -> Any:
        if op == "sessions":
            return self.sessions()
        if op == "disconnect":
            return self.disconnect(str(args.get("id", "")))
        if op == "metrics":
            return process_metrics()
        if op == "ping":
            return {"worker": self.index, "pid": os.getpid()}
        if op == "reschedule":
            ids = [str(x) for x in args.get("ids", [])]
            return self.reschedule(ids) if self.reschedule is not None else 0
        raise control.ControlError(f"unknown worker op {op!r}")


@dataclass
class Runtime:
    """The running server as the admin process sees it."""

    main_pid: int  # the process in the pid file: signals go there
    started: float  # epoch seconds
    workers: int
    listeners: list[ListenerRow]
    pause: PauseFlag
    run_dir: Path  # where the worker sockets are
    local: WorkerService  # this process's own worker (not asked over a socket)
    timeout: float = WORKER_TIMEOUT
    unreachable: dict[int, str] = field(default_factory=dict)  # last fan-out's failures

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.started)

    async def _ask(self, index: int, op: str, args: dict[str, Any]) -> Any:
        if index == self.local.index:
            return await self.local.handle(op, args, lambda d, t: None)
        return await control.request(worker_socket(self.run_dir, index), op, args,
                                     timeout=self.timeout)

    async def collect(self, op: str, args: dict[str, Any] | None = None
                      ) -> list[tuple[int, Any]]:
        """Ask every worker at once; (index, result) for those that answered in time."""
        indices = range(self.workers)
        results = await asyncio.gather(*(self._ask(i, op, args or {}) for i in indices),
                                       return_exceptions=True)
        out, failed = [], {}
        for index, result in zip(indices, results, strict=True):
            if isinstance(result, BaseException):
                failed[index] = str(result) or type(result).__name__
                log_event(log, "worker_unreachable", level=logging.WARNING, worker=index, op=op,
                          error=failed[index])
            else:
                out.append((index, result))
        self.unreachable = failed
        return out


# --------------------------------------------------------------------------- the ops
def admin_handler(admin: Admin) -> control.Handler:
    """The control socket's ops, each a call into the one `Admin` (no rules of its own)."""
    from goniec.admin.contract import QueueFilter
    from goniec.queue.api import MessageNotFound

    async def handle(op: str, args: dict[str, Any], progress: control.Progress) -> Any:
        if op == "ping":
            return "pong"
        if op == "status":
            return await admin.status()
        if op == "sessions":
            return await admin.sessions()
        if op == "disconnect":
            return await admin.disconnect(str(args.get("id", "")))
        if op in ("pause", "resume", "reload", "stop"):
            await getattr(admin, op)()
            return None
        if op == "queue_list":
            return await admin.queue_list(QueueFilter.from_json(args.get("filter") or {}))
        if op == "queue_show":
            queue_id = str(args.get("id", ""))
            try:
                return await admin.queue_show(queue_id)
            except MessageNotFound:
                raise control.ControlError(f"no message {queue_id} in the queue") from None
        if op == "queue_action":
            flt = QueueFilter.from_json(args.get("filter") or {})
            return await admin.queue_action(str(args.get("action", "")), flt, progress)
        if op == "metrics":
            return (await admin.metrics_text()).decode()
        if op == "log_search":
            keys = ("session", "msg", "address", "text")
            return await admin.log_search(**{k: str(args.get(k, "")) for k in keys},
                                          limit=int(args.get("limit", 200)))
        raise control.ControlError(f"unknown op {op!r}")

    return handle


@dataclass
class ProcessServices:
    """The admin-side servers of one process, stopped together at shutdown."""

    admin: Admin | None = None
    servers: list[tuple[asyncio.AbstractServer, Path, int]] = field(default_factory=list)
    web: asyncio.Task[None] | None = None

    async def close(self) -> None:
        for server, path, inode in self.servers:
            server.close()
            control.remove_socket(path, inode)
        if self.web is not None and not self.web.done():
            try:
                await asyncio.wait_for(self.web, 10)
            except Exception:  # noqa: BLE001 - stopping: log, never hang
                log.exception("web manager did not stop cleanly")


async def start_services(ctx: ServerContext, config: Config, source: Path | None,
                         store: QueueStore, runtime: Runtime, stop: asyncio.Event
                         ) -> ProcessServices:
    """Serve this worker's socket; in the admin process (worker 0) also the control
    socket and, when `admin.web_listen` is set, the web manager."""
    out = ProcessServices()
    index = runtime.local.index
    path = worker_socket(runtime.run_dir, index)
    server, inode = await control.serve(path, runtime.local.handle, f"worker-{index}")
    out.servers.append((server, path, inode))
    if index != 0:
        return out
    from goniec.admin.service import Admin  # the admin process's alone

    admin = out.admin = Admin(config, source, store, runtime)
    assert config.admin.control_socket is not None  # filled in from data_dir by Config
    path = config.admin.control_socket
    server, inode = await control.serve(path, admin_handler(admin), "control")
    out.servers.append((server, path, inode))
    log_event(log, "control_listening", socket=path, worker=index)
    if config.admin.web_listen:
        try:
            from goniec.admin import web
        except ImportError as exc:
            log_event(log, "web_unavailable", level=logging.WARNING, error=str(exc))
        else:
            out.web = asyncio.get_running_loop().create_task(web.serve(admin, config, stop))
            out.web.add_done_callback(_web_ended)
    return out


def _web_ended(task: asyncio.Task[None]) -> None:
    # The manager failing (its port taken, ...) must not take the mail server down.
    if not task.cancelled() and task.exception() is not None:
        log_event(log, "web_failed", level=logging.ERROR, error=str(task.exception()))
