"""server.sdnotify: READY=1 to $NOTIFY_SOCKET (path or abstract), silence without it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from goniec.server.sdnotify import notify


@pytest.mark.parametrize("abstract", [False, True])
def test_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    name = f"@goniec-test-{id(tmp_path)}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind("\0" + name[1:] if abstract else name)
        sink.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert notify("READY=1")
        assert sink.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not notify("READY=1")  # nobody listening: no error
