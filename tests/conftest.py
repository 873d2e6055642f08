"""Shared fixtures: real `goniec serve` processes on loopback with real TLS."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from goniec.testing.process import ServerProcess, make_server, to_toml


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cert = ca.issue_cert("mx.goniec.test", "127.0.0.1", "::1", "localhost")
    d = tmp_path_factory.mktemp("cert")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def add_user(server: ServerProcess, name: str, password: str) -> None:
    server.config_path.write_text(to_toml(server.config))
    subprocess.run(
        [sys.executable, "-m", "goniec.cli.main", "user", "add", name, "--password-stdin",
         "-c", str(server.config_path)],
        input=(password + "\n").encode(), check=True, capture_output=True, timeout=60,
    )


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory,
                server_cert: tuple[Path, Path]) -> Iterator[ServerProcess]:
    """One server with the three listener kinds, a TLS cert from the test CA, one user."""
    workdir = tmp_path_factory.mktemp("live")
    server = make_server(
        workdir,
        listeners=[
            {"name": "smtp", "tls": "starttls", "auth": "optional"},
            {"name": "submission", "tls": "starttls", "auth": "required"},
            {"name": "smtps", "tls": "implicit", "auth": "required"},
            {"name": "plain", "tls": "none", "auth": "none"},
        ],
        tls={"certificate": str(server_cert[0]), "key": str(server_cert[1])},
        relay={"networks": ["192.0.2.0/24"]},  # loopback is NOT trusted: relay needs a login
        limits={"connections_per_ip": 40, "bad_commands": 5},
        timeouts={"command": 3},
    )
    add_user(server, "alice", "correct horse")
    server.start()
    yield server
    server.stop()
