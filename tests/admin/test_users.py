"""UserStore: add/verify/delete/list, atomic 0600 rewrites, reload on change, bad input."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from goniec.admin.users import UserError, UserStore, check_name
from goniec.errors import ConfigError


def cheap() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "data" / "users", cheap())


def test_add_verify_list_delete(store: UserStore) -> None:
    assert store.list() == [] and not store.verify("alice", "x")
    store.add("alice", "s3cret")
    store.add("bob@example.test", "hunter2")
    assert store.list() == ["alice", "bob@example.test"]
    assert "alice" in store and "carol" not in store
    assert store.verify("alice", "s3cret")
    assert not store.verify("alice", "wrong")
    assert not store.verify("alice", "")
    assert not store.verify("carol", "s3cret")
    assert store.verify("bob@example.test", "hunter2")
    store.delete("alice")
    assert store.list() == ["bob@example.test"]
    assert not store.verify("alice", "s3cret")


def test_file_format_and_mode(store: UserStore) -> None:
    store.add("alice", "pw")
    text = store.path.read_text()
    name, _, hashed = text.strip().partition(":")
    assert name == "alice" and hashed.startswith("$argon2id$")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700  # created by add
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["users", "users.lock"]


def test_add_existing_and_replace(store: UserStore) -> None:
    store.add("alice", "one")
    with pytest.raises(UserError, match="already exists"):
        store.add("alice", "two")
    assert store.verify("alice", "one")
    store.add("alice", "two", replace=True)
    assert store.verify("alice", "two") and not store.verify("alice", "one")
    assert store.list() == ["alice"]


def test_delete_unknown(store: UserStore) -> None:
    with pytest.raises(UserError, match="no such user"):
        store.delete("nobody")


def test_empty_password_refused(store: UserStore) -> None:
    with pytest.raises(UserError, match="password"):
        store.add("alice", "")


@pytest.mark.parametrize(
    "name", ["", "a:b", "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "#alice", "x" * 257, "a\u2028b"]
)
def test_bad_names(store: UserStore, name: str) -> None:
    with pytest.raises(UserError):
        check_name(name)
    with pytest.raises(UserError):
        store.add(name, "pw")
    assert not store.path.exists()


def test_good_names() -> None:
    for name in ("a", "alice@example.test", "Zażółć", "x" * 256, "a#b", "a.b-c_d+e"):
        assert check_name(name) == name


def test_unknown_user_costs_a_hash_check(tmp_path: Path) -> None:
    calls: list[str] = []

    class Spy(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # type: ignore[override]
            calls.append(str(hash))
            return super().verify(hash, password)

    store = UserStore(tmp_path / "users", Spy(time_cost=1, memory_cost=8, parallelism=1))
    assert not store.verify("ghost", "pw")
    assert not store.verify("ghost", "goniec-no-such-user")  # the dummy's own password
    assert len(calls) == 2 and calls[0].startswith("$argon2")


def test_comments_and_order_kept(store: UserStore) -> None:
    store.add("alice", "pw")
    original = store.path.read_text()
    store.path.write_text("# managed by hand\n\n" + original + "# trailing note\n")
    store.add("bob", "pw")
    store.delete("alice")
    lines = store.path.read_text().splitlines()
    assert lines[0] == "# managed by hand" and lines[1] == ""
    assert lines[2] == "# trailing note" and lines[3].startswith("bob:")


def test_rewrite_is_atomic(store: UserStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.add("alice", "pw")
    before = store.path.read_bytes()
    inode = store.path.stat().st_ino

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.add("bob", "pw")
    monkeypatch.undo()
    assert store.path.read_bytes() == before  # untouched
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["users", "users.lock"]
    store.add("bob", "pw")
    assert store.path.stat().st_ino != inode  # a new file was renamed into place


def test_reload_when_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    server = UserStore(path, cheap())
    admin = UserStore(path, cheap())
    assert not server.verify("alice", "pw")
    admin.add("alice", "pw")
    assert server.verify("alice", "pw")
    admin.add("alice", "new", replace=True)
    assert server.verify("alice", "new") and not server.verify("alice", "pw")
    path.unlink()
    assert server.list() == [] and not server.verify("alice", "new")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "users"
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            UserStore(path, cheap()).add(f"user{i}", "pw")  # separate stores: the file lock
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert UserStore(path, cheap()).list() == sorted(f"user{i}" for i in range(12))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "users:1: expected 'name:$argon2...'"),
        ("# ok\nalice:plain\n", "users:2: expected"),
        ("a b:$argon2id$x\n", "users:1: user name must not contain"),
        ("alice:$argon2id$x\nalice:$argon2id$y\n", "users:2: user 'alice' already defined on line 1"),
    ],
)
def test_malformed_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "users"
    path.write_text(text)
    store = UserStore(path, cheap())
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace(".", r"\.")):
        store.list()
    with pytest.raises(ConfigError):
        store.add("bob", "pw")  # never clobbers a file it cannot read
    assert path.read_text() == text


def test_corrupt_hash_is_a_failed_login(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice:$argon2id$garbage\n")
    assert not UserStore(path, cheap()).verify("alice", "pw")
