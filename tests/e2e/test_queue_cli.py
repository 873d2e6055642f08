"""`goniec queue ...` end to end on deferred mail in a real server.

Delivery is on and points at a loopback port where nothing listens, so every
message defers (MX records from the loopback DNS server). Then hold, release,
retry, bounce (the report comes back to the sender's local Maildir) and
delete go through the CLI, the control socket and `Admin` to the queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from goniec.testing.dnsserver import ZoneServer
from goniec.testing.process import ServerProcess, free_port
from goniec.testing.smtpclient import LineClient

from mailpeers import logs_of, sender_server, wait_until  # isort: skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
def server(tmp_path: Path, dns: ZoneServer, zone: dict[str, Any]) -> Iterator[ServerProcess]:
    zone["dest.test"] = {"MX": [(10, "mx.dest.test")]}
    zone["mx.dest.test"] = {"A": ["127.0.0.1"]}
    srv = sender_server(tmp_path / "a", dns, free_port(), retry=["1h"])  # refused: deferred
    srv.workdir.mkdir()
    srv.start()
    yield srv
    srv.stop()


def send(port: int, rcpt: str, subject: str) -> None:
    c = LineClient(port)
    assert c.reply().startswith(b"220")
    for line in ("EHLO client.sender.test", "MAIL FROM:<alice@sender.test>", f"RCPT TO:<{rcpt}>",
                 "DATA"):
        assert c.cmd(line)[:1] in (b"2", b"3")
    assert c.cmd(f"Subject: {subject}\r\n\r\nbody\r\n.".encode()).startswith(b"250")
    c.cmd("QUIT")
    c.close()


def listing(server: ServerProcess, *args: str) -> list[dict[str, Any]]:
    r = server.cli("queue", "list", "--json", *args)
    assert r.returncode == 0, r.stderr
    rows: list[dict[str, Any]] = json.loads(r.stdout)
    return rows


def act(server: ServerProcess, *args: str, input: str | None = None) -> Any:  # noqa: A002
    r = server.cli("queue", *args, "--json", input=input)
    assert r.returncode == 0, r.stderr + r.stdout + server.log()[-3000:]
    return json.loads(r.stdout)


def test_queue_actions_on_deferred_mail(server: ServerProcess) -> None:
    for i in range(3):
        send(server.port, f"user{i}@dest.test", f"message {i}")
    wait_until(lambda: len(listing(server, "--state", "deferred")) == 3, "3 deferred messages",
               logs=logs_of(server))
    ids = [m["id"] for m in listing(server)]
    first, second, third = ids
    assert [r["status"] for r in listing(server, first)[0]["recipients"]] == ["deferred"]
    assert [m["id"] for m in listing(server, "--recipient", "user1@")] == [second]

    assert act(server, "hold", first)["done"] == [first]
    assert [m["id"] for m in listing(server, "--state", "held")] == [first]
    assert act(server, "release", first)["done"] == [first]
    r = server.cli("queue", "release", first, "--json")  # not held any more: nothing done
    assert r.returncode == 1 and json.loads(r.stdout)["skipped"].keys() == {first}
    assert act(server, "retry", first)["done"] == [first]
    # Every worker's runner is told: the retry happens now, not at the old time (1 h).
    wait_until(lambda: listing(server, first)[0]["recipients"][0]["attempts"] == 2,
               "the retried message tried again at once", logs=logs_of(server))

    view = json.loads(server.cli("queue", "show", second, "--json").stdout)
    assert view["id"] == second and view["recipients"][0]["address"] == "user1@dest.test"
    shown = server.cli("queue", "show", second)
    assert "user1@dest.test" in shown.stdout and "Subject: message 1" in shown.stdout

    r = server.cli("queue", "delete")  # neither ids nor a filter: --all is required
    assert r.returncode == 2 and "--all" in r.stderr
    r = server.cli("queue", "delete", "--all", input="n\n")  # 3 messages: asks first
    assert r.returncode == 1 and "delete 3 messages?" in r.stderr
    assert len(listing(server)) == 3

    assert act(server, "bounce", second)["done"] == [second]
    assert act(server, "delete", "--domain", "dest.test", "--yes")["done"] == [first, third]
    # The bounce report to alice@sender.test (local) is delivered to her Maildir.
    wait_until(lambda: not listing(server), "an empty queue", logs=logs_of(server))
    maildir = server.data_dir / "mail"
    reports = [p for p in maildir.rglob("*") if p.is_file() and "/new/" in str(p)]
    assert reports and any(b"user1@dest.test" in p.read_bytes() for p in reports)
    # The trail outlives the message: what happened to the bounced one, by id.
    r = server.cli("queue", "trail", second, "--json")
    assert r.returncode == 0, r.stderr
    events = [e["event"] for e in json.loads(r.stdout)]
    assert events[0] == "received" and "deferred" in events and "bounced" in events, events
    shown = server.cli("queue", "trail", second).stdout
    assert "received" in shown and "bounced" in shown and "by=admin" in shown, shown
    r = server.cli("queue", "trail", "nosuchid")
    assert r.returncode == 1 and "no trail" in r.stderr
