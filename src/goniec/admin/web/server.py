"""Serving the manager with uvicorn inside the running server's event loop.

Owns `serve(admin, config, stop)`: one `uvicorn.Server` on `admin.web_listen`
(HTTPS with the server's certificate, or the self-signed one, when
`admin.web_tls`), lifespan off, no signal handlers of its own (the server's
SIGTERM/SIGHUP handlers stay in charge), uvicorn's chatter kept at warning
level and routed through our logging. Returns once `stop` is set and open
HTTP connections are closed. Raises `OSError` when the address cannot be bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from goniec.admin.web.app import create_app
from goniec.config.schema import Config
from goniec.obs.log import log_event

log = logging.getLogger("goniec.admin.web")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn would install SIGINT/SIGTERM handlers of its own; the server's stay.
        yield


def _tls_files(config: Config) -> tuple[str, str]:
    cert, key = config.tls_paths()
    if cert is None or key is None:
        from goniec.server.tls import ensure_self_signed

        cert, key = ensure_self_signed(config.data_path / "tls", config.server.hostname)
    return str(cert), str(key)


def uvicorn_config(admin: Any, config: Config) -> uvicorn.Config:
    endpoint = config.admin.web_endpoint
    assert endpoint is not None
    host, port = endpoint
    tls: dict[str, Any] = {}
    if config.admin.web_tls:
        cert, key = _tls_files(config)
        tls = {"ssl_certfile": cert, "ssl_keyfile": key}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return uvicorn.Config(
        create_app(admin, config), host=host, port=port, lifespan="off", log_config=None,
        access_log=False, server_header=False, date_header=True, proxy_headers=False,
        timeout_graceful_shutdown=5, **tls)


def bind(config: Config) -> socket.socket:
    """The manager's listening socket (bound here: uvicorn would sys.exit on failure)."""
    from goniec.server.sockets import bind_socket

    endpoint = config.admin.web_endpoint
    assert endpoint is not None
    return bind_socket(*endpoint)


async def serve(admin: Any, config: Config, stop: asyncio.Event) -> None:
    """Run the manager until `stop` is set (a no-op when admin.web_listen is "")."""
    if config.admin.web_endpoint is None:
        return
    sock = bind(config)
    server = _Server(uvicorn_config(admin, config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    waiter = asyncio.create_task(stop.wait())
    try:
        while not server.started and not task.done() and not stop.is_set():
            await asyncio.sleep(0.01)
        if server.started:
            scheme = "https" if config.admin.web_tls else "http"
            log_event(log, "web_listening", url=f"{scheme}://{config.admin.web_listen}/")
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            server.should_exit = True
            await task
        else:
            task.result()
    finally:
        waiter.cancel()
        sock.close()
