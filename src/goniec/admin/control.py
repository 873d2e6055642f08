"""The local control sockets: JSON lines over Unix sockets, server and client sides.

Owns the wire of `goniec status|sessions|pause|...` (the CLI talks to the
server's admin process on `admin.control_socket`) and of the small internal
sockets each worker serves (`data_dir/run/worker-<n>.sock`), which the admin
process asks for the worker's sessions and metrics. One request per line,
`{"op": ..., "args": {...}}`; zero or more `{"progress": {"done": n,
"total": m}}` lines; then one `{"ok": true, "result": ...}` or `{"ok":
false, "error": "..."}`. Sockets are mode 0600 in a 0700 directory: only
the server's user (and root) may connect.

Unix socket paths are limited to 107 bytes (sun_path). A longer path is
reached through `/proc/self/fd/<dir fd>/<name>`, which names the same
directory in a few bytes. Raises `ControlError` for an error reply and
`Unreachable` (a subclass) when nothing answers at the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from goniec.admin.tokens import TokenError
from goniec.admin.users import UserError
from goniec.errors import ConfigError
from goniec.obs.log import log_event

log = logging.getLogger("goniec.admin.control")

SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
LINE_LIMIT = 64 << 20  # a queue listing of many messages is one line

Progress = Callable[[int, int], None]
# Failures with a reason for the operator (no such message, bad filter, bad config on
# reload, server down, user exists): answered, not logged as a bug.
_EXPECTED = (LookupError, ValueError, OSError, RuntimeError, ConfigError, UserError, TokenError)
Handler = Callable[[str, dict[str, Any], Progress], Awaitable[Any]]


class ControlError(Exception):
    """The other side answered with an error, or the exchange failed; str() says why."""


class Unreachable(ControlError):
    """Nothing listens at the socket path (no server, or a dead worker)."""


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind/connect that fits sun_path, valid inside the `with` block."""
    full = os.fsencode(path)
    if len(full) <= SUN_PATH_MAX:
        yield str(path)
        return
    if len(os.fsencode(path.name)) > SUN_PATH_MAX - 32 or not os.path.isdir("/proc/self/fd"):
        raise ControlError(f"{path}: a Unix socket path must be at most {SUN_PATH_MAX} bytes;"
                           " set admin.control_socket to a shorter path")
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def bind_unix(path: Path) -> socket.socket:
    """A listening socket at `path` (mode 0600; directory made 0700; a stale file replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # left by a process that is gone (the pid file keeps us alone)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(path) as address:
            sock.bind(address)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def remove_socket(path: Path, inode: int) -> None:
    """Remove `path` if it is still the file we bound (a respawned worker may own it now)."""
    with contextlib.suppress(OSError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=_default).encode() + b"\n"


def _default(obj: Any) -> Any:
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


async def serve(path: Path, handler: Handler, name: str) -> tuple[asyncio.AbstractServer, int]:
    """Serve `handler` at `path` until the returned server is closed; also returns the
    socket file's inode, for `remove_socket`."""
    sock = bind_unix(path)
    inode = os.lstat(path).st_ino

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(await _answer(handler, line, writer, name))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away, or sent a line past the limit
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, sock=sock, limit=LINE_LIMIT)
    return server, inode


async def _answer(handler: Handler, line: bytes, writer: asyncio.StreamWriter,
                  name: str) -> bytes:
    try:
        request = json.loads(line)
        op = request["op"]
        args = request.get("args") or {}
        if not isinstance(op, str) or not isinstance(args, dict):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        return _line({"ok": False, "error": 'bad request: want {"op": ..., "args": {...}}'})

    def progress(done: int, total: int) -> None:
        writer.write(_line({"progress": {"done": done, "total": total}}))

    try:
        result = await handler(op, args, progress)
    except ControlError as exc:
        return _line({"ok": False, "error": str(exc)})
    except Exception as exc:
        # Expected failures (no such message, bad filter, server down) carry their reason.
        if not isinstance(exc, _EXPECTED):
            log.exception("control socket %s: op %s failed", name, op)
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        log_event(log, "control_failed", level=logging.DEBUG, socket=name, op=op, error=text)
        return _line({"ok": False, "error": text or type(exc).__name__})
    return _line({"ok": True, "result": result})


def _reply(raw: bytes, on_progress: Progress | None) -> tuple[bool, Any]:
    """(final, result) for one response line; raises ControlError for an error reply."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ControlError("the server sent a line that is not JSON") from None
    if "progress" in data:
        if on_progress is not None:
            p = data["progress"]
            on_progress(int(p.get("done", 0)), int(p.get("total", 0)))
        return False, None
    if data.get("ok"):
        return True, data.get("result")
    raise ControlError(str(data.get("error") or "request failed"))


async def request(path: Path, op: str, args: dict[str, Any] | None = None, *,
                  timeout: float = 2.0, on_progress: Progress | None = None) -> Any:
    """One request over a fresh connection, from an event loop (the admin's fan-out)."""
    try:
        with unix_address(path) as address:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(address, limit=LINE_LIMIT)
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"{path}: {getattr(exc, 'strerror', None) or 'no answer'}") from None
    try:
        async with asyncio.timeout(timeout):
            writer.write(_line({"op": op, "args": args or {}}))
            while True:
                raw = await reader.readline()
                if not raw:
                    raise ControlError(f"{path}: connection closed before the answer")
                final, result = _reply(raw, on_progress)
                if final:
                    return result
    except TimeoutError:
        raise ControlError(f"{path}: no answer within {timeout:g}s") from None
    except (OSError, ValueError) as exc:  # died meanwhile, or a line past the limit
        raise ControlError(f"{path}: {exc}") from None
    finally:
        writer.close()


def call(path: Path, op: str, args: dict[str, Any] | None = None, *,
         timeout: float = 30.0, on_progress: Progress | None = None) -> Any:
    """One request, blocking (the CLI). `timeout` bounds each wait for a line."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            with unix_address(path) as address:
                sock.connect(address)
        except OSError as exc:
            raise Unreachable(f"{path}: {exc.strerror or exc}") from None
        with sock.makefile("rb") as stream:
            while True:
                try:
                    if op:
                        sock.sendall(_line({"op": op, "args": args or {}}))
                        op = ""
                    raw = stream.readline(LINE_LIMIT)
                except TimeoutError:
                    raise ControlError(f"no answer from the server within {timeout:g}s") from None
                except OSError as exc:  # the process at the other end died meanwhile
                    raise ControlError(f"connection lost: {exc.strerror or exc}") from None
                if not raw:
                    raise ControlError("the server closed the connection before answering")
                final, result = _reply(raw, on_progress)
                if final:
                    return result
    finally:
        sock.close()
