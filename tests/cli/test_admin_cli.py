"""The operator commands through click's CliRunner, with no server running: tokens,
manager users, clear failures of live commands, and the spool fallback of queue list/show."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from goniec.admin.tokens import TokenStore
from goniec.admin.users import UserStore
from goniec.cli import main as climain
from goniec.config import load_config


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GONIEC_CONFIG", raising=False)
    monkeypatch.setattr(climain, "password_hasher",
                        lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "goniec.toml"
    path.write_text('[server]\nhostname = "mx.example.test"\ndata_dir = "data"\n')
    return path


def run(*args: str, input: str | None = None) -> click.testing.Result:  # noqa: A002
    return CliRunner().invoke(climain.cli, list(args), input=input, catch_exceptions=False)


def test_tokens(config_file: Path) -> None:
    r = run("token", "add", "ci", "-c", str(config_file))
    assert r.exit_code == 0 and "shown only" not in r.stdout
    secret = r.stdout.strip()
    store = TokenStore(config_file.parent / "data" / "admin-tokens")
    assert store.check(secret) == "ci"
    assert run("token", "add", "ci", "-c", str(config_file)).exit_code == 1
    assert [t["name"] for t in json.loads(run("token", "list", "--json", "-c",
                                              str(config_file)).stdout)] == ["ci"]
    assert "ci" in run("token", "list", "-c", str(config_file)).stdout
    assert run("token", "delete", "ci", "-c", str(config_file)).exit_code == 0
    assert store.check(secret) is None
    assert run("token", "list", "-c", str(config_file)).stdout == "no tokens\n"
    r = run("token", "delete", "ci", "-c", str(config_file))
    assert r.exit_code == 1 and "no such token" in r.stderr


def test_admin_users_are_a_separate_file(config_file: Path) -> None:
    r = run("user", "add", "boss", "--admin", "--password-stdin", "-c", str(config_file),
            input="secret\n")
    assert r.exit_code == 0, r.output
    admins = UserStore(config_file.parent / "data" / "admin-users")
    assert admins.list() == ["boss"] and admins.verify("boss", "secret")
    assert run("user", "list", "-c", str(config_file)).stdout == ""
    assert run("user", "list", "--admin", "-c", str(config_file)).stdout == "boss\n"
    assert run("user", "delete", "boss", "--admin", "-c", str(config_file)).exit_code == 0
    assert admins.list() == []


@pytest.mark.parametrize("args", [["status"], ["sessions"], ["sessions", "disconnect", "x"],
                                  ["pause"], ["resume"], ["stop"], ["queue", "retry", "Q1"]])
def test_live_commands_fail_clearly_without_a_server(config_file: Path, args: list[str]) -> None:
    r = run(*args, "-c", str(config_file))
    assert r.exit_code == 1
    assert r.stderr.startswith("goniec: the server is not running (nothing answers at ")


def test_bulk_actions_need_ids_a_filter_or_all(config_file: Path) -> None:
    r = run("queue", "hold", "-c", str(config_file))
    assert r.exit_code == 2 and "--all" in r.stderr
    r = run("queue", "list", "--older-than", "soon", "-c", str(config_file))
    assert r.exit_code == 2 and "--older-than" in r.stderr


def test_queue_list_and_show_read_the_spool(config_file: Path) -> None:
    from goniec.model import Envelope, Recipient
    from goniec.queue.fs import FsQueueStore
    from goniec.queue.records import SubmissionInfo

    config = load_config(config_file)

    async def enqueue(rcpt: str) -> str:
        store = FsQueueStore(config.spool_path)
        try:
            writer = store.new_message()
            await writer.write(b"Subject: hello there\r\n\r\nbody\r\n")
            envelope = Envelope("s@example.test", (Recipient(rcpt),))
            return str(await writer.commit(envelope, SubmissionInfo("sess", "127.0.0.1")))
        finally:
            store.close()

    a = asyncio.run(enqueue("a@one.example"))
    b = asyncio.run(enqueue("b@two.example"))
    r = run("queue", "list", "--json", "--domain", "two.example", "-c", str(config_file))
    assert r.exit_code == 0 and "server is not running" in r.stderr
    assert [m["id"] for m in json.loads(r.stdout)] == [b]
    assert [m["id"] for m in json.loads(run("queue", "list", "--json", a, "-c",
                                            str(config_file)).stdout)] == [a]
    r = run("queue", "show", a, "-c", str(config_file))
    assert r.exit_code == 0 and "a@one.example" in r.stdout and "Subject: hello there" in r.stdout
    assert json.loads(run("queue", "show", a, "--json", "-c", str(config_file)).stdout)["id"] == a
    r = run("queue", "show", "nosuchid", "-c", str(config_file))
    assert r.exit_code == 1 and "no message nosuchid" in r.stderr
