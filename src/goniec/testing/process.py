"""Run the real `goniec` server as a child process for end-to-end tests.

Owns writing a temporary TOML config, starting `goniec serve` with it, waiting
(bounded) until every listener answers, and stopping or SIGKILLing it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Mapping[str, Any]) -> str:
    """Write a two-level dict (tables and arrays of tables) as TOML."""
    out: list[str] = []
    for section, body in config.items():
        if isinstance(body, list):
            for item in body:
                out.append(f"[[{section}]]")
                out.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
                out.append("")
        else:
            out.append(f"[{section}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in body.items())
            out.append("")
    return "\n".join(out)


@dataclass
class ServerProcess:
    workdir: Path
    config: dict[str, Any]
    ports: dict[str, int] = field(default_factory=dict)
    hosts: dict[int, str] = field(default_factory=dict)  # port -> address to reach it
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "goniec.toml"

    @property
    def data_dir(self) -> Path:
        return Path(self.config["server"]["data_dir"])

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    def spool_ids(self) -> set[str]:
        qdir = self.data_dir / "spool" / "queue"
        if not qdir.exists():
            return set()
        return {p.name.split(".")[0] for p in qdir.glob("*.msg")}

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.config_path.write_text(to_toml(self.config))
        self.log_path = self.workdir / "server.log"
        env = dict(os.environ)
        env.pop("GONIEC_CONFIG", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "goniec.cli.main", "serve", "-c", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        implicit = {int(item["address"].rsplit(":", 1)[1])
                    for item in self.config.get("listeners", []) if item.get("tls") == "implicit"}
        for port in self.ports.values():
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"goniec exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    with socket.create_connection((self.hosts.get(port, "127.0.0.1"), port),
                                                  timeout=5) as probe:
                        if port not in implicit:
                            self._finish_probe(probe)
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(f"goniec did not listen on {port}:\n{self.log()}") from None
                    time.sleep(0.05)
        # The admin process opens its control socket just after the listeners,
        # then the web manager (when on) binds its port.
        self.wait_control(max(1.0, deadline - time.monotonic()))
        listen = self.config.get("admin", {}).get("web_listen", "")
        if listen:
            host, _, port = listen.rpartition(":")
            while True:
                try:
                    socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(f"no web manager on {listen}:\n{self.log()}") from None
                    time.sleep(0.05)
        return self

    @staticmethod
    def _finish_probe(probe: socket.socket) -> None:
        """Greeting, QUIT, then wait for the server to close: the probe's session is
        over (and no longer counted against connection limits) when start() returns."""
        probe.recv(1024)
        with contextlib.suppress(OSError):
            probe.sendall(b"QUIT\r\n")
            while probe.recv(1024):
                pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def control_socket(self) -> Path:
        """The CLI's control socket (admin.control_socket, default data_dir/run/control.sock)."""
        path = self.config.get("admin", {}).get("control_socket")
        return Path(path) if path else self.data_dir / "run" / "control.sock"

    @property
    def web_url(self) -> str | None:
        """http://host:port of the web manager, None when it is off."""
        listen = self.config.get("admin", {}).get("web_listen", "")
        return f"http://{listen}" if listen else None

    def cli(self, *args: str, input: str | None = None, timeout: float = 60.0,  # noqa: A002
            ) -> subprocess.CompletedProcess[str]:
        """Run `goniec ARGS -c <this server's config>` and return its result (text)."""
        env = dict(os.environ)
        env.pop("GONIEC_CONFIG", None)
        env["COLUMNS"] = "200"  # rich tables: no wrapping in tests
        return subprocess.run(
            [sys.executable, "-m", "goniec.cli.main", *args, "-c", str(self.config_path)],
            input=input, capture_output=True, text=True, timeout=timeout, cwd=self.workdir,
            env=env)

    def wait_control(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until the control socket answers a ping."""
        from goniec.admin import control

        deadline = time.monotonic() + timeout
        while True:
            try:
                control.call(self.control_socket, "ping", timeout=2)
                return
            except control.ControlError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no control socket at {self.control_socket}:\n"
                                       f"{self.log()}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group: the server and every worker."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        # Workers die with the group but may finish a system call (an fsync) first:
        # wait until none is left, so a restart never races a dying worker.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)


def make_server(workdir: Path, *, listeners: list[dict[str, Any]] | None = None,
                **sections: dict[str, Any]) -> ServerProcess:
    """A ServerProcess with a loopback listener per entry (ports picked free).

    The web manager is off; turn it on with
    `admin={"web_listen": f"127.0.0.1:{free_port()}"}` (then `server.web_url`).
    """
    listeners = listeners or [{"name": "smtp", "tls": "starttls", "auth": "optional"}]
    ports: dict[str, int] = {}
    rendered = []
    for item in listeners:
        item = dict(item)
        if "address" not in item:
            host = item.pop("host", "127.0.0.1")
            port = free_port(host)
            item["address"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        ports[item["name"]] = int(item["address"].rsplit(":", 1)[1])
        rendered.append(item)
    config: dict[str, Any] = {
        # One process unless a test asks for more: small, and its log lines in one place.
        "server": {"hostname": "mx.goniec.test", "data_dir": str(workdir / "data"),
                   "log_level": "info", "workers": 1},
        "domains": {"local": ["goniec.test", "localhost"]},
        # Network rule: a test server never asks a real resolver. A free loopback
        # port answers nothing, so a lookup fails fast; tests that need DNS start
        # their own server and override this.
        "dns": {"nameservers": ["127.0.0.1"], "port": free_port(), "timeout": 2},
        # Tests look at the spool; those that test delivery switch it on.
        "delivery": {"enabled": False},
        # Parallel test servers must not fight over the manager's default port 2580:
        # off unless a test asks (web_listen=f"127.0.0.1:{free_port()}").
        "admin": {"web_listen": ""},
    }
    for name, body in sections.items():
        config.setdefault(name, {}).update(body)
    config["listeners"] = rendered
    hosts = {}
    for item in rendered:
        host, _, port = item["address"].rpartition(":")
        hosts[int(port)] = host.strip("[]")
    return ServerProcess(workdir, config, ports, hosts)
