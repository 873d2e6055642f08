"""admin.control: JSON lines over a Unix socket, long paths, stale files, errors, progress."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from goniec.admin import control


async def _handler(op: str, args: dict[str, Any], progress: control.Progress) -> Any:
    if op == "echo":
        return args
    if op == "count":
        for i in range(1, 4):
            progress(i, 3)
        return "counted"
    if op == "missing":
        raise KeyError("no message Q1")
    raise control.ControlError(f"unknown op {op!r}")


def _serve_and_call(path: Path, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    async def main() -> list[Any]:
        server, sock = await control.serve(path, _handler, "test")
        out: list[Any] = []
        try:
            for op, args in calls:
                seen: list[tuple[int, int]] = []
                try:
                    result = await control.request(path, op, args,
                                                   on_progress=lambda d, t, seen=seen: seen.append((d, t)))
                    out.append((result, seen) if seen else result)
                except control.ControlError as exc:
                    out.append(exc)
            # the blocking client too (the CLI), from a thread
            out.append(await asyncio.to_thread(control.call, path, "echo", {"via": "call"}))
        finally:
            server.close()
            control.remove_socket(path, sock)
        return out

    return asyncio.run(main())


def test_round_trip_errors_and_progress(tmp_path: Path) -> None:
    path = tmp_path / "run" / "c.sock"
    path.parent.mkdir()
    path.parent.chmod(0o755)
    path.write_bytes(b"")  # not a socket: left alone, so bind fails loudly
    with pytest.raises(OSError):
        control.bind_unix(path)
    path.unlink()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on: replaced
    echo, counted, missing, unknown, via_call = _serve_and_call(
        path, [("echo", {"a": [1, "x"]}), ("count", {}), ("missing", {}), ("nope", {})])
    assert echo == {"a": [1, "x"]}
    assert counted == ("counted", [(1, 3), (2, 3), (3, 3)])
    assert isinstance(missing, control.ControlError) and str(missing) == "no message Q1"
    assert str(unknown) == "unknown op 'nope'"
    assert via_call == {"via": "call"}
    assert not path.exists()  # removed at close


def test_a_path_longer_than_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(os.fsencode(path)) > control.SUN_PATH_MAX
    results: list[Any] = []

    async def main() -> None:
        server, sock = await control.serve(path, _handler, "long")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(deep).st_mode) != 0  # the directory already existed
        results.append(await control.request(path, "echo", {"long": True}))
        results.append(await asyncio.to_thread(control.call, path, "echo", {"n": 2}))
        server.close()
        control.remove_socket(path, sock)

    asyncio.run(main())
    assert results == [{"long": True}, {"n": 2}]


def test_nothing_listening_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(control.Unreachable):
        control.call(tmp_path / "none.sock", "status", timeout=1)
    with pytest.raises(control.Unreachable):
        asyncio.run(control.request(tmp_path / "none.sock", "status", timeout=1))
    with pytest.raises(control.ControlError, match="at most 107 bytes"), \
            control.unix_address(tmp_path / ("x" * 120)):
        pass
