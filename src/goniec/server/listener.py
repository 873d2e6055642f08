"""Listening sockets and the asyncio servers on them.

Owns binding (IPv4 and IPv6, one socket per listener, created before worker
processes fork so all of them share it) and turning each accepted connection
into a `Session` task. Raises `OSError` with the address when a bind fails.
"""

from __future__ import annotations

import asyncio
import socket

from goniec.server.context import ListenerSpec, ServerContext
from goniec.server.session import Session
from goniec.server.stream import ClientStream


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]" means IPv6 only; a second listener on 0.0.0.0 serves IPv4.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def serve_listener(
    ctx: ServerContext, spec: ListenerSpec, sock: socket.socket
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    tasks = ctx.tasks

    def on_connect(stream: ClientStream) -> None:
        session = Session(ctx, spec, stream)
        task = loop.create_task(session.run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    implicit = spec.tls == "implicit"
    return await loop.create_server(
        lambda: ClientStream(on_connect),
        sock=sock,
        ssl=ctx.tls_context if implicit else None,
        ssl_handshake_timeout=ctx.settings.timeouts.tls_handshake if implicit else None,
        backlog=1024,
    )
