"""The goniec CLI through click's CliRunner: every command, exit codes, config discovery."""

from __future__ import annotations

import json
import sys
import tomllib
import types
from pathlib import Path

import click
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from goniec import __version__
from goniec.admin.service import QueueRow, RecipientRow
from goniec.admin.users import UserStore
from goniec.cli import main as climain
from goniec.config import Config, load_config


def cheap() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GONIEC_CONFIG", raising=False)
    monkeypatch.setattr(climain, "password_hasher", cheap)


def run(*args: str, input: str | None = None) -> click.testing.Result:  # noqa: A002
    return CliRunner().invoke(climain.cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "goniec.toml"
    path.parent.mkdir()
    path.write_text('[server]\nhostname = "mx.example.test"\ndata_dir = "data"\n')
    return path


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.output == f"goniec {__version__}\n"


def test_help_lists_commands() -> None:
    out = run("--help").output
    for word in ("serve", "config", "user", "queue"):
        assert word in out


def test_config_check_defaults(tmp_path: Path) -> None:
    result = run("config", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# goniec") and "built-in defaults" in result.stdout.split("\n")[0]
    data = tomllib.loads(result.stdout)
    assert data["server"]["data_dir"] == str(tmp_path / "goniec-data")


def test_config_check_good_file(config_file: Path) -> None:
    result = run("config", "check", "-c", str(config_file))
    assert result.exit_code == 0
    assert tomllib.loads(result.stdout)["server"]["data_dir"] == str(config_file.parent / "data")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\nworkers = "many"\n', ':2: server.workers: must be a number from 1 to 1024 or "auto"'),
        ("[server\n", ":1:8: TOML syntax error"),
    ],
)
def test_config_check_bad_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run("config", "check", "-c", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}{message}")
    assert "Traceback" not in result.stderr


def test_config_check_missing_file_and_files_it_names(tmp_path: Path) -> None:
    result = run("config", "check", "-c", "nope.toml")
    assert result.exit_code == 2 and result.stderr == "nope.toml: no such file\n"
    (tmp_path / "g.toml").write_text('[tls]\ncertificate = "c.pem"\nkey = "k.pem"\n')
    result = run("config", "check", "-c", "g.toml")
    assert result.exit_code == 2 and "tls.certificate" in result.stderr


def test_discovery_env_then_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       config_file: Path) -> None:
    (tmp_path / "goniec.toml").write_text('[server]\nhostname = "local.example.test"\n')
    assert 'hostname = "local.example.test"' in run("config", "check").stdout
    monkeypatch.setenv("GONIEC_CONFIG", str(config_file))
    assert 'hostname = "mx.example.test"' in run("config", "check").stdout
    monkeypatch.setenv("GONIEC_CONFIG", str(tmp_path / "missing.toml"))
    assert run("config", "check").exit_code == 2


def test_user_add_list_delete(config_file: Path) -> None:
    c = ("-c", str(config_file))
    result = run("user", "add", "alice", *c, "--password-stdin", input="s3cret pw\n")
    assert result.exit_code == 0, result.output
    assert run("user", "add", "bob", *c, input="pw2\r\n").exit_code == 0  # not a TTY: reads a line
    users = config_file.parent / "data" / "users"
    store = UserStore(users, cheap())
    assert store.verify("alice", "s3cret pw") and store.verify("bob", "pw2")
    assert run("user", "list", *c).stdout == "alice\nbob\n"

    again = run("user", "add", "alice", *c, "--password-stdin", input="x\n")
    assert again.exit_code == 1 and "already exists" in again.stderr
    replaced = run("user", "add", "alice", *c, "--password-stdin", "--replace", input="new\n")
    assert replaced.exit_code == 0 and store.verify("alice", "new")

    assert run("user", "delete", "alice", *c).exit_code == 0
    assert run("user", "list", *c).stdout == "bob\n"
    missing = run("user", "delete", "alice", *c)
    assert missing.exit_code == 1 and "no such user" in missing.stderr


def test_user_add_refuses_bad_input(config_file: Path) -> None:
    c = ("-c", str(config_file))
    bad_name = run("user", "add", "a:b", *c, "--password-stdin", input="pw\n")
    assert bad_name.exit_code == 1 and "must not contain" in bad_name.stderr
    empty = run("user", "add", "alice", *c, "--password-stdin", input="\n")
    assert empty.exit_code == 1 and "password must not be empty" in empty.stderr
    assert run("user", "list", *c).stdout == ""


def test_user_add_prompts_twice_on_a_tty(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(climain, "_stdin_is_tty", lambda: True)
    result = run("user", "add", "alice", "-c", str(config_file), input="one\ntwo\npw\npw\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert UserStore(config_file.parent / "data" / "users", cheap()).verify("alice", "pw")


def test_user_commands_report_a_broken_users_file(config_file: Path) -> None:
    users = config_file.parent / "data" / "users"
    users.parent.mkdir()
    users.write_text("garbage\n")
    result = run("user", "list", "-c", str(config_file))
    assert result.exit_code == 2 and result.stderr.startswith(f"{users}:1: ")


def test_queue_list_empty_spool(config_file: Path) -> None:
    result = run("queue", "list", "-c", str(config_file), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert run("queue", "list", "-c", str(config_file)).stdout == "queue is empty\n"


def test_queue_list_existing_empty_spool(config_file: Path) -> None:
    pytest.importorskip("goniec.queue.fs")
    (config_file.parent / "data" / "spool").mkdir(parents=True)
    result = run("queue", "list", "-c", str(config_file), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_queue_list_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        QueueRow("Q1", "2026-11-26T16:00:00Z", 1234, "", (
            RecipientRow("a@example.test", "pending", 0, None, ""),
            RecipientRow("b@example.test", "deferred", 2, "2026-11-26T16:10:00Z", "451 4.4.1"),
        )),
        QueueRow("Q22", "2026-11-26T16:01:00Z", 5, "s@example.test", (
            RecipientRow("c@example.test", "delivered", 1, None, "250 ok"),
        )),
    ]
    monkeypatch.setattr(climain, "_queue_rows", lambda config: rows)
    table = run("queue", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "CREATED", "SIZE", "SENDER", "RECIPIENTS"]
    assert table[1].split() == ["Q1", "2026-11-26T16:00:00Z", "1234", "<>", "a@example.test", "(pending)"]
    assert table[2].split() == ["b@example.test", "(deferred,", "2", "tries)"]
    assert table[2].index("b@") == table[1].index("a@")  # lined up under RECIPIENTS
    assert table[3].startswith("Q22 ") and table[-1] == "2 message(s)"
    data = json.loads(run("queue", "list", "--json").stdout)
    assert [m["id"] for m in data] == ["Q1", "Q22"]
    assert data[0]["recipients"][1] == {"address": "b@example.test", "status": "deferred",
                                        "attempts": 2, "next_attempt": "2026-11-26T16:10:00Z",
                                        "last_reply": "451 4.4.1"}
    assert (data[0]["held"], data[0]["hold_reason"]) == (False, "")


def test_queue_list_marks_held(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [QueueRow("Q1", "2026-11-26T16:00:00Z", 12, "a@example.test", (
        RecipientRow("b@example.test", "pending", 0, None, ""),), True, "dmarc quarantine")]
    monkeypatch.setattr(climain, "_queue_rows", lambda config: rows)
    table = run("queue", "list").stdout.splitlines()
    assert table[1].split() == ["Q1!", "2026-11-26T16:00:00Z", "12", "a@example.test", "held:",
                                "dmarc", "quarantine"]
    assert table[2].split() == ["b@example.test", "(pending)"]
    assert table[-1] == "1 message(s), 1 held (!)"
    [data] = json.loads(run("queue", "list", "--json").stdout)
    assert (data["held"], data["hold_reason"]) == (True, "dmarc quarantine")


def test_serve_loads_config_and_calls_app_run(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Config, Path | None]] = []
    fake = types.ModuleType("goniec.app")
    fake.run = lambda config, source=None: seen.append((config, source))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "goniec.app", fake)
    result = run("serve", "-c", str(config_file))
    assert result.exit_code == 0, result.output
    # The source goes along so that SIGHUP can re-read the same file.
    assert seen == [(load_config(config_file), config_file)]


def test_serve_bad_config_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("goniec.app")
    fake.run = lambda config, source=None: pytest.fail("must not start")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "goniec.app", fake)
    (tmp_path / "goniec.toml").write_text('[[listeners]]\nname = "x"\naddress = "localhost:25"\n')
    result = run("serve")
    assert result.exit_code == 2
    assert result.stderr.startswith('goniec.toml:3: listeners[0].address: "localhost" is not an IP')


def test_queue_list_reads_a_real_spool(config_file: Path) -> None:
    fs = pytest.importorskip("goniec.queue.fs")
    records = pytest.importorskip("goniec.queue.records")
    import asyncio

    from goniec.model import Envelope, Recipient

    config = load_config(config_file)

    async def enqueue() -> str:
        store = fs.FsQueueStore(config.spool_path)
        try:
            writer = store.new_message()
            await writer.write(b"Subject: hi\r\n\r\nbody\r\n")
            envelope = Envelope("s@example.test", (Recipient("a@example.test"), Recipient("b@x.test")))
            return str(await writer.commit(envelope, records.SubmissionInfo("sess", "127.0.0.1")))
        finally:
            store.close()

    qid = asyncio.run(enqueue())
    data = json.loads(run("queue", "list", "-c", str(config_file), "--json").stdout)
    assert [m["id"] for m in data] == [qid]
    assert data[0]["sender"] == "s@example.test" and data[0]["size"] > 0
    assert [r["address"] for r in data[0]["recipients"]] == ["a@example.test", "b@x.test"]
    assert data[0]["recipients"][0]["status"] == "pending"
    table = run("queue", "list", "-c", str(config_file)).stdout
    assert qid in table and "b@x.test (pending)" in table


def test_unwritable_users_file_is_a_clean_error(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(config_file.parent / "data"))

    monkeypatch.setattr(os, "replace", denied)
    result = run("user", "add", "alice", "-c", str(config_file), "--password-stdin", input="pw\n")
    assert result.exit_code == 1
    assert result.stderr == f"goniec: cannot write {config_file.parent / 'data'}: Permission denied\n"


def test_config_check_warns_about_an_open_relay(tmp_path: Path) -> None:
    path = tmp_path / "open.toml"
    path.write_text('[relay]\nmode = "all_except"\nnetworks = []\n'
                    '[domains]\nlocal = ["goniec.test"]\n'
                    '[recipients."goniec.test"]\nmailboxes = ["alice"]\n')
    result = run("config", "check", "-c", str(path))
    assert result.exit_code == 0
    assert "warning: relay.mode = \"all_except\"" in result.stderr
    assert "open relay" in result.stderr
    assert 'warning: recipients.goniec.test: no postmaster entry' in result.stderr
    assert '[recipients."goniec.test"]' in result.stdout


def test_reload_without_a_server_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    result = run("reload", "-c", str(path))
    assert result.exit_code == 1 and "no running server" in result.stderr
