"""The control socket and the CLI against a real `goniec serve` (one and two workers).

status, sessions (and disconnecting one: the client gets 421), pause (new
connections get 421 4.3.2 while an open session still sends) and resume,
reload, merged metrics, and stop (waits until the server is gone, after
which `queue list` reads the spool directly). One server per worker count,
shared by the tests of this module; `test_stop` runs last.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from goniec.admin import control
from goniec.cli import main as climain
from goniec.testing.process import ServerProcess, make_server
from goniec.testing.smtpclient import LineClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"control-w{request.param}")
    if request.param == 2:  # sockets past the 107-byte sun_path limit: reached via /proc
        workdir = workdir / ("long-" * 16)
        workdir.mkdir()
        assert len(str(workdir / "data" / "run" / "worker-1.sock")) > 107
    srv = make_server(workdir, listeners=[{"name": "smtp", "tls": "none", "auth": "none"}],
                      server={"workers": request.param})
    srv.start()
    yield srv
    srv.stop()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(server: ServerProcess, *args: str) -> Result:
    """The real CLI code, in this process (no interpreter start: the suite stays quick)."""
    r = CliRunner().invoke(climain.cli, [*args, "-c", str(server.config_path)],
                           catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)


def cli_json(server: ServerProcess, *args: str) -> Any:
    r = cli(server, *args, "--json")
    assert r.returncode == 0, r.stderr + server.log()[-3000:]
    return json.loads(r.stdout)


def greeted(port: int, helo: str | None = None) -> LineClient:
    c = LineClient(port)
    assert c.reply().startswith(b"220")
    if helo:
        assert c.cmd(f"EHLO {helo}").startswith(b"250")
    return c


def test_status(server: ServerProcess) -> None:
    st = cli_json(server, "status")
    assert st["state"] == "running" and st["pid"] == server.proc.pid  # type: ignore[union-attr]
    assert st["workers"] == server.config["server"]["workers"]
    assert st["listeners"] == [{"name": "smtp", "address": f"127.0.0.1:{server.port}",
                                "tls": "none", "auth": "none"}]
    assert set(st["last_hour"]) == {"received", "delivered", "deferred", "failed"}
    assert all(len(v) == 60 for v in st["per_minute"].values())
    text = cli(server, "status")
    assert text.returncode == 0 and "running" in text.stdout and "mx.goniec.test" in text.stdout


def test_sessions_and_disconnect(server: ServerProcess) -> None:
    client = greeted(server.port, "held-open.client.test")
    try:
        rows = cli_json(server, "sessions")
        [row] = [r for r in rows if r["helo"] == "held-open.client.test"]
        assert row["client"].startswith("127.0.0.1:") and row["state"] == "idle"
        assert row["listener"] == "smtp" and row["worker"] in range(server.config["server"]["workers"])
        table = cli(server, "sessions")
        assert row["id"] in table.stdout and "held-open.client.test" in table.stdout
        r = cli(server, "sessions", "disconnect", row["id"])
        assert r.returncode == 0, r.stderr
        reply = client.reply()  # RFC 5321 3.8
        assert reply.startswith(b"421 4.3.2 ") and b"closed by the administrator" in reply, reply
        assert client.is_closed()
    finally:
        client.close()
    r = cli(server, "sessions", "disconnect", "nosuchsession")
    assert r.returncode == 1 and "no session" in r.stderr


def test_pause_and_resume(server: ServerProcess) -> None:
    open_session = greeted(server.port, "before-pause.client.test")
    try:
        assert cli(server, "pause").returncode == 0
        assert cli_json(server, "status")["state"] == "paused"
        for _ in range(3):  # whichever worker takes it
            late = LineClient(server.port)
            assert late.reply() == b"421 4.3.2 mx.goniec.test Service paused, try again later"
            assert late.is_closed()
            late.close()
        # A session that was open goes on: it can still send a message.
        assert open_session.cmd("MAIL FROM:<a@sender.example>").startswith(b"250")
        assert open_session.cmd("RCPT TO:<postmaster@goniec.test>").startswith(b"250")
        assert open_session.cmd("DATA").startswith(b"354")
        assert open_session.cmd(b"Subject: paused\r\n\r\nstill here\r\n.").startswith(b"250")
    finally:
        open_session.close()
        assert cli(server, "resume").returncode == 0
    assert cli_json(server, "status")["state"] == "running"
    greeted(server.port, "after.client.test").close()


def test_reload_and_metrics(server: ServerProcess) -> None:
    r = cli(server, "reload")
    assert r.returncode == 0, r.stderr
    text = control.call(server.control_socket, "metrics", timeout=10)
    workers = server.config["server"]["workers"]
    assert f"goniec_workers_reporting {workers}.0" in text
    assert "goniec_queue_messages" in text
    r = cli(server, "queue", "show", "nosuchid")
    assert r.returncode == 1 and r.stderr == "goniec: no message nosuchid in the queue\n"


def test_a_stuck_worker_is_reported_not_waited_for(server: ServerProcess) -> None:
    if server.config["server"]["workers"] < 2:
        pytest.skip("needs a second worker")
    stuck = control.call(server.data_dir / "run" / "worker-1.sock", "ping")["pid"]
    os.kill(stuck, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert cli_json(server, "sessions") == []  # worker 0's, after the 2 s timeout
        assert time.monotonic() - started < 10
        status = cli_json(server, "status")  # says whose numbers are missing
        assert list(status["workers_unreachable"]) == ["1"], status
        assert "worker 1" in cli(server, "status").stdout
    finally:
        os.kill(stuck, signal.SIGCONT)
    assert "event=worker_unreachable worker=1 op=sessions" in server.log()


def test_a_respawned_worker_0_serves_the_control_socket_again(server: ServerProcess) -> None:
    if server.config["server"]["workers"] < 2:
        pytest.skip("needs a supervisor")
    run = server.data_dir / "run"
    before = control.call(run / "worker-0.sock", "ping")
    assert before["worker"] == 0
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        try:
            after = control.call(run / "worker-0.sock", "ping", timeout=2)
            if after["pid"] != before["pid"]:
                break
        except control.ControlError:
            pass
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)
    server.wait_control()
    assert cli_json(server, "status")["state"] == "running"


def test_stop_waits_then_queue_list_reads_the_spool(server: ServerProcess) -> None:
    queued = cli_json(server, "queue", "list")
    assert len(queued) == 1  # the message of test_pause_and_resume
    r = server.cli("stop", "--timeout", "20")
    assert r.returncode == 0 and r.stdout.startswith("stopped"), r.stderr
    assert server.proc is not None and server.proc.wait(5) == 0
    assert not server.control_socket.exists()
    r = server.cli("queue", "list", "--json")
    assert r.returncode == 0 and "server is not running" in r.stderr
    assert [m["id"] for m in json.loads(r.stdout)] == [queued[0]["id"]]
    r = server.cli("queue", "show", queued[0]["id"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == queued[0]["id"]
    for args in (["status"], ["sessions"], ["pause"], ["queue", "hold", queued[0]["id"]]):
        r = server.cli(*args)
        assert r.returncode == 1 and "the server is not running" in r.stderr, (args, r.stderr)
    assert Path(server.data_dir / "spool").is_dir()
