"""A small asyncio SMTP load generator for the acceptance benchmark.

Owns: driving SMTP sessions against one loopback server with the same knobs as
Postfix's smtp-source (parallel sessions, message size, total count, a new
connection per message or many messages per connection, no PIPELINING), plus
the two extra scenarios (one huge message; many idle connections and a probe).

Only ever connects to the host it is given; the harness passes 127.0.0.1. Every
loop is bounded by a message count and every read by a timeout. It raises no
SMTP errors: failures are counted and the first few are kept as text.

Standalone: python bench/loadgen.py --port 2525 --sessions 10 --size 1024 --count 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

SENDER = "sender@bench.test"
RCPT = "rcpt@bench.test"
HELO = "client.bench.test"
LINE = b"X" * 76 + b"\r\n"  # 78 octets, well under RFC 5321 4.5.3.1.6's 1000
READ_TIMEOUT = 30.0


def build_message(size: int) -> bytes:
    """Headers plus a body of about `size` octets, CRLF lines, ending with CRLF."""
    head = (
        f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: goniec bench\r\n"
        "Message-ID: <bench@client.bench.test>\r\n\r\n"
    ).encode()
    lines, rest = divmod(max(size, 1), len(LINE))
    tail = b"Y" * max(rest - 2, 0) + b"\r\n" if rest else b""
    return head + LINE * lines + tail


class SMTPFailure(Exception):
    """A reply that was not the expected one, or a closed connection."""


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 10.0) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 20), timeout
        )
        return cls(reader, writer)

    async def reply(self, timeout: float = READ_TIMEOUT) -> tuple[int, str]:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise SMTPFailure("connection closed by server")
            lines.append(line.decode("latin-1").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            return int(lines[-1][:3]), "\n".join(lines)
        except ValueError:
            raise SMTPFailure(f"bad reply {lines!r}") from None

    async def expect(self, code_class: int, timeout: float = READ_TIMEOUT) -> str:
        code, text = await self.reply(timeout)
        if code // 100 != code_class:
            raise SMTPFailure(text)
        return text

    async def command(self, line: str, code_class: int = 2) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await self.expect(code_class)

    async def greet(self, timeout: float = READ_TIMEOUT) -> None:
        await self.expect(2, timeout)
        await self.command(f"EHLO {HELO}")

    async def send_mail(self, message: bytes) -> None:
        await self.command(f"MAIL FROM:<{SENDER}>")
        await self.command(f"RCPT TO:<{RCPT}>")
        await self.command("DATA", 3)
        self.writer.write(message + b".\r\n")
        await self.expect(2)

    async def quit(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await self.reply(5.0)
        except (TimeoutError, OSError, SMTPFailure):
            pass
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)


@dataclass
class LoadResult:
    attempted: int = 0
    accepted: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:200])


async def _session(
    host: str, port: int, message: bytes, reuse: bool, todo: list[int], res: LoadResult
) -> None:
    client: Client | None = None
    while todo[0] > 0:
        todo[0] -= 1
        res.attempted += 1
        try:
            if client is None:
                client = await Client.connect(host, port)
                await client.greet()
            await client.send_mail(message)
            res.accepted += 1
        except (TimeoutError, OSError, SMTPFailure) as exc:
            res.fail(exc)
            if client is not None:
                await client.close()
                client = None
            continue
        if not reuse:
            await client.quit()
            client = None
    if client is not None:
        await client.quit()


async def run_load(
    host: str, port: int, sessions: int, size: int, count: int, reuse: bool, timeout: float
) -> LoadResult:
    """Send `count` messages of ~`size` octets over `sessions` parallel sessions."""
    message = build_message(size)
    res = LoadResult()
    todo = [count]
    start = time.perf_counter()
    tasks = [
        asyncio.ensure_future(_session(host, port, message, reuse, todo, res))
        for _ in range(sessions)
    ]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        res.errors.append(f"timeout after {timeout:.0f}s, {len(pending)} sessions cancelled")
        await asyncio.wait(pending, timeout=5)
    res.seconds = time.perf_counter() - start
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            res.fail(task.exception())  # type: ignore[arg-type]
    return res


async def send_big(host: str, port: int, size: int, timeout: float) -> dict[str, Any]:
    """One message of `size` octets, streamed in ~1 MiB chunks (never built whole)."""
    chunk = LINE * ((1 << 20) // len(LINE))
    start = time.perf_counter()
    out: dict[str, Any] = {"ok": False, "size": size}
    client: Client | None = None
    try:
        client = await Client.connect(host, port)
        await client.greet()
        await client.command(f"MAIL FROM:<{SENDER}> SIZE={size}")
        await client.command(f"RCPT TO:<{RCPT}>")
        await client.command("DATA", 3)
        data_start = time.perf_counter()
        client.writer.write(build_message(0))
        sent = 0
        while sent < size:
            part = chunk if size - sent >= len(chunk) else LINE * max((size - sent) // len(LINE), 1)
            client.writer.write(part)
            sent += len(part)
            await asyncio.wait_for(client.writer.drain(), timeout)
        client.writer.write(b".\r\n")
        out["reply"] = (await client.expect(2, timeout)).splitlines()[-1][:120]
        out["data_seconds"] = round(time.perf_counter() - data_start, 3)
        out["ok"] = True
        await client.quit()
    except (TimeoutError, OSError, SMTPFailure) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:200]
        if client is not None:
            await client.close()
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


async def _open_idle(
    host: str, port: int, sem: asyncio.Semaphore, deadline: float
) -> Client | None:
    async with sem:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            client = await Client.connect(host, port, timeout=left)
        except (TimeoutError, OSError):
            return None
        try:
            await client.greet(timeout=max(deadline - time.monotonic(), 0.1))
        except (TimeoutError, OSError, SMTPFailure):
            await client.close()
            return None
        return client


async def idle_probe(
    host: str, port: int, idle: int, open_timeout: float, probe_timeout: float
) -> dict[str, Any]:
    """Hold `idle` greeted connections open, then time one full transaction on a new one."""
    sem = asyncio.Semaphore(200)
    deadline = time.monotonic() + open_timeout
    start = time.perf_counter()
    opened = await asyncio.gather(*(_open_idle(host, port, sem, deadline) for _ in range(idle)))
    idlers = [c for c in opened if c is not None]
    out: dict[str, Any] = {
        "idle_wanted": idle,
        "idle_open": len(idlers),
        "open_seconds": round(time.perf_counter() - start, 3),
        "probe_ok": False,
    }
    t0 = time.perf_counter()
    try:
        probe = await asyncio.wait_for(Client.connect(host, port), probe_timeout)
        await asyncio.wait_for(probe.greet(), probe_timeout)
        await asyncio.wait_for(probe.send_mail(build_message(1024)), probe_timeout)
        out["probe_ok"] = True
        await probe.quit()
    except (TimeoutError, OSError, SMTPFailure) as exc:
        out["probe_error"] = f"{type(exc).__name__}: {exc}"[:200]
    out["probe_ms"] = round((time.perf_counter() - t0) * 1000, 1)

    async def noop(c: Client) -> bool:
        try:
            c.writer.write(b"NOOP\r\n")
            await c.expect(2, 10.0)
            return True
        except (TimeoutError, OSError, SMTPFailure):
            return False

    out["idle_alive_after"] = sum(await asyncio.gather(*(noop(c) for c in idlers)))
    await asyncio.gather(*(c.close() for c in idlers))
    return out


def run(coro: Any) -> Any:
    """Run a coroutine on uvloop when available, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--reuse", action="store_true", help="many messages per connection")
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    res = run(run_load(a.host, a.port, a.sessions, a.size, a.count, a.reuse, a.timeout))
    d = asdict(res)
    d["msgs_per_s"] = round(res.accepted / res.seconds, 1) if res.seconds else 0.0
    print(json.dumps(d, indent=2))


if __name__ == "__main__":
    main()
