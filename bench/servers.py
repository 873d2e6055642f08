"""Servers under test: start on a loopback port, wait for 220, count, stop.

Owns: the lifecycle of each server the benchmark measures (goniec, the aiosmtpd
baselines; Postfix lives in postfix_instance.py) and how each one reports how
many messages it really accepted, so errors are never counted as speed.

Every server listens on 127.0.0.1 only, runs in its own session/process group
so Ctrl-C in the terminal does not race the harness, and is stopped by pid or
process group of the process the harness started, never by name. Start-up
problems raise Unavailable (skip this server, with the reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import procmem

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


class Unavailable(Exception):
    """The server cannot run here (not installed, does not start): skip it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_banner(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> str:
    """Connect until the server greets with 220; raise Unavailable on timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise Unavailable("server process exited during start-up")
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                s.settimeout(max(deadline - time.monotonic(), 0.5))
                line = s.makefile("rb").readline().decode("latin-1").strip()
                if line.startswith("220"):
                    s.sendall(b"QUIT\r\n")
                    return line
                last = line or "connection closed"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise Unavailable(f"no 220 on {HOST}:{port} within {timeout:.0f}s ({last})")


def count_files(*dirs: Path) -> int:
    total = 0
    for d in dirs:
        for _root, _dirs, files in os.walk(d):
            total += len(files)
    return total


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Server:
    """Base class. Subclasses set `name` and implement _launch/_stop/_raw_count."""

    name = "server"
    files_per_message: float | None = 1.0

    def __init__(self) -> None:
        self.workdir: Path | None = None
        self.port = 0

    def start(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._launch()

    def stop(self) -> None:
        raise NotImplementedError

    def roots(self) -> list[int]:
        raise NotImplementedError

    def _launch(self) -> None:
        raise NotImplementedError

    def raw_count(self) -> int | None:
        """Server-side evidence of accepted messages (files, counters) or None."""
        return None

    def accepted(self) -> int | None:
        raw = self.raw_count()
        if raw is None or not self.files_per_message:
            return None
        return round(raw / self.files_per_message)

    def calibrate(self, send_one: Callable[[], object]) -> None:
        """Learn how many spool files one message makes (goniec's layout may change)."""
        before = self.raw_count()
        send_one()
        after = self.raw_count()
        if before is not None and after is not None and after > before:
            self.files_per_message = after - before
        else:
            self.files_per_message = None

    def log_tail(self) -> str:
        return ""


class SubprocessServer(Server):
    """A server that is one child process (plus any children it forks)."""

    start_timeout = 30.0

    def __init__(self) -> None:
        super().__init__()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def _launch(self) -> None:
        assert self.workdir is not None
        self.log = self.workdir / f"{self.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        try:
            wait_banner(self.port, self.start_timeout, lambda: self.proc.poll() is None)  # type: ignore[union-attr]
        except Unavailable as exc:
            self.stop()
            last = [ln for ln in self.log_tail().splitlines() if ln.strip()]
            raise Unavailable(f"{exc}: {last[-1].strip() if last else 'empty log'}") from None

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = procmem.descendants([self.proc.pid])
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)  # our child's own process group
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if procmem.wait_gone(pids, 2.0):
                break
        for pid in pids:  # forked workers that left the group: ours, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self) -> str:
        return tail(self.log) if self.log else ""


class Aiosmtpd(SubprocessServer):
    name = "aiosmtpd"
    mode = "discard"

    def __init__(self) -> None:
        super().__init__()
        try:
            import aiosmtpd  # noqa: F401
        except ImportError:
            self.missing = "aiosmtpd not installed (pip install aiosmtpd)"
        else:
            self.missing = ""

    def _launch(self) -> None:
        if self.missing:
            raise Unavailable(self.missing)
        super()._launch()

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [
            sys.executable, str(HERE / "aiosmtpd_server.py"), "--port", str(self.port),
            "--mode", self.mode, "--spool", str(self.workdir / "spool"),
            "--stats", str(self.workdir / "stats"),
        ]  # fmt: skip

    def raw_count(self) -> int | None:
        """Ask the child for its counter (SIGUSR1 -> stats file)."""
        if self.proc is None or self.workdir is None:
            return None
        stats = self.workdir / "stats"
        stats.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                return int(stats.read_text())
            except (OSError, ValueError):
                time.sleep(0.02)
        return None


class AiosmtpdFsync(Aiosmtpd):
    name = "aiosmtpd-fsync"
    mode = "fsync"

    def raw_count(self) -> int | None:
        assert self.workdir is not None
        return count_files(self.workdir / "spool" / "queue")


class Goniec(SubprocessServer):
    """goniec serve -c <workdir>/goniec.toml with a temporary data_dir.

    mailauth "sign": an RSA-2048 DKIM key for bench.test, so every message (from
    127.0.0.1, a trusted client) is signed ("sign-ed25519": an Ed25519 key, RFC 8463); "inbound": the load generator is not
    trusted (empty relay list) and every message gets SPF/DKIM/DMARC/ARC checks
    against the DNS server on `dns_port`.
    """

    files_per_message: float | None = None  # learnt by calibrate()

    def __init__(self, workers: int, label: str = "goniec", mailauth: str = "",
                 dns_port: int = 0) -> None:
        super().__init__()
        self.workers = workers
        self.name = label
        self.mailauth = mailauth
        self.dns_port = dns_port
        script = shutil.which("goniec")
        self.base = [script] if script else [sys.executable, "-m", "goniec.cli.main"]

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [*self.base, "serve", "-c", str(self.workdir / "goniec.toml")]

    def _launch(self) -> None:
        assert self.workdir is not None
        probe = subprocess.run(
            [*self.base, "serve", "--help"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode != 0:
            why = (probe.stderr or probe.stdout).decode(errors="replace").strip().splitlines()
            last = why[-1] if why else f"exit status {probe.returncode}"
            raise Unavailable(f"`{' '.join(self.base)} serve` not usable yet: {last}")
        extra = ""
        if self.mailauth in ("sign", "sign-ed25519"):
            from goniec.mailauth.keys import keygen

            algorithm = "ed25519" if self.mailauth == "sign-ed25519" else "rsa"
            key, _ = keygen(self.workdir, "bench.test", "bench", algorithm)
            extra = ('[[mailauth.dkim]]\ndomain = "bench.test"\nselector = "bench"\n'
                     f'key_file = "{key}"\n')
        elif self.mailauth == "inbound":
            extra = ('[mailauth]\ninbound = "on"\n\n'
                     f'[dns]\nnameservers = ["{HOST}"]\nport = {self.dns_port}\ntimeout = 2\n')
        config = self.config()
        if self.mailauth == "inbound":
            config = config.replace('networks = ["127.0.0.0/8", "::1"]', "networks = []")
        (self.workdir / "goniec.toml").write_text(config + extra)
        super()._launch()

    def config(self) -> str:
        assert self.workdir is not None
        data_dir = self.workdir / "data"
        return f"""\
# written by bench/accept.py for one benchmark run
[server]
hostname = "bench-goniec.test"
data_dir = "{data_dir}"
workers = {self.workers}

[[listeners]]
name = "bench"
address = "{HOST}:{self.port}"
tls = "none"
auth = "none"

[domains]
local = ["bench.test"]

[relay]
networks = ["127.0.0.0/8", "::1"]

[delivery]
enabled = false   # measure acceptance only: Postfix's queue is on hold too

[limits]
message_size = "200MB"
connections = 5000
connections_per_ip = 5000
"""

    def raw_count(self) -> int | None:
        assert self.workdir is not None
        queue = self.workdir / "data" / "spool" / "queue"
        return count_files(queue) if queue.is_dir() else None
