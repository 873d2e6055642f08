"""The pid file: how `goniec reload` finds the server, and one server per data_dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goniec.server.pidfile import PidFile, ServerRunning, pid_path, running_pid


def test_acquire_release_and_find(tmp_path: Path) -> None:
    assert running_pid(tmp_path) is None
    pf = PidFile(pid_path(tmp_path))
    pf.acquire()
    assert pid_path(tmp_path).read_text().strip() == str(os.getpid())
    # running_pid must see it as live (the lock is held, here by this process's fd).
    child = subprocess.run([sys.executable, "-c",
                            "import sys; from pathlib import Path;"
                            "from goniec.server.pidfile import running_pid;"
                            f"print(running_pid(Path({str(tmp_path)!r})))"],
                           capture_output=True, text=True, timeout=30)
    assert child.stdout.strip() == str(os.getpid())
    pf.release()
    assert not pid_path(tmp_path).exists()


def test_stale_file_is_ignored(tmp_path: Path) -> None:
    pid_path(tmp_path).write_text("999999\n")
    assert running_pid(tmp_path) is None
    pf = PidFile(pid_path(tmp_path))
    pf.acquire()
    pf.release()


def _hold(path: Path, content: str, seconds: float) -> subprocess.Popen[bytes]:
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            f"os.pwrite(fd, {content!r}.encode(), 0)\n"
            "print('locked', flush=True)\n"
            f"time.sleep({seconds})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
    return proc


def test_a_live_server_is_refused_quickly(tmp_path: Path) -> None:
    holder = _hold(pid_path(tmp_path), f"{os.getpid()}\n", 30)  # "parent" alive: us
    try:
        start = time.monotonic()
        with pytest.raises(ServerRunning, match="is running with this data_dir"):
            PidFile(pid_path(tmp_path)).acquire()
        assert time.monotonic() - start < 2
    finally:
        holder.kill()
        holder.wait()


def test_workers_of_a_dead_server_are_waited_for(tmp_path: Path) -> None:
    # The recorded parent is gone; a "worker" still holds the lock for a moment.
    holder = _hold(pid_path(tmp_path), "999999\n", 0.5)
    try:
        start = time.monotonic()
        pf = PidFile(pid_path(tmp_path))
        pf.acquire()
        assert 0.2 < time.monotonic() - start < 5
        pf.release()
    finally:
        holder.wait()

