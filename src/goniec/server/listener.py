"""The asyncio servers on the listening sockets.

Owns turning each connection accepted on a socket (bound by `server.sockets`
before the workers fork, so all of them share it) into a `Session` task, or,
while the server is paused (`pause.PauseFlag`), into one `421 4.3.2` reply
and a close. Remembers when each session connected (`connected_at`) for the
admin's session list. Raises nothing of its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import weakref

from goniec.obs.log import log_event
from goniec.server.context import ListenerSpec, ServerContext
from goniec.server.pause import PauseFlag, paused_reply
from goniec.server.session import Session, new_session_id
from goniec.server.stream import ClientStream

# When each live session connected (epoch seconds); entries go with their session.
_connected: weakref.WeakKeyDictionary[Session, float] = weakref.WeakKeyDictionary()


def connected_at(session: Session) -> float:
    """When `session` connected (epoch seconds); now for a session this module did not start."""
    return _connected.get(session, time.time())


def _turn_away(ctx: ServerContext, spec: ListenerSpec, stream: ClientStream) -> None:
    """Paused: answer 421 instead of the greeting and close (RFC 5321 3.8: a server
    that must stop serving answers 421 and closes; RFC 3463 X.3.2: not accepting)."""
    peer = stream.extra("peername") or ("?", 0)
    log_event(ctx.log, "reject", level=logging.INFO, session=new_session_id(), stage="connect",
              client=str(peer[0]), listener=spec.name, reason="paused")
    if stream.transport is not None:
        stream.transport.write(paused_reply(ctx.hostname).to_bytes())
    stream.close()


async def serve_listener(
    ctx: ServerContext, spec: ListenerSpec, sock: socket.socket, pause: PauseFlag | None = None
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    tasks = ctx.tasks

    def on_connect(stream: ClientStream) -> None:
        if pause is not None and pause.paused:
            _turn_away(ctx, spec, stream)
            return
        session = Session(ctx, spec, stream)
        _connected[session] = time.time()
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
