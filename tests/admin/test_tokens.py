"""admin.tokens: API tokens stored as SHA-256 only, checked in constant time, atomic 0600 file."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from goniec.admin.tokens import TokenError, TokenStore
from goniec.errors import ConfigError


def test_add_check_list_delete(tmp_path: Path) -> None:
    path = tmp_path / "d" / "admin-tokens"
    store = TokenStore(path)
    secret = store.add("ci", now=1_795_000_000.0)
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    text = path.read_text()
    assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.check(secret) == "ci"
    assert store.check(secret + "x") is None and store.check("") is None
    other = TokenStore(path).add("grafana")  # another process: seen at once
    assert store.check(other) == "grafana"
    assert [(r.name, r.created) for r in store.list()][0] == ("ci", 1_795_000_000.0)
    assert [r.name for r in store.list()] == ["ci", "grafana"]
    store.delete("ci")
    assert store.check(secret) is None and [r.name for r in store.list()] == ["grafana"]
    assert not list(path.parent.glob(".admin-tokens.*.tmp"))  # no temp file left over


def test_refusals(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    store.add("ci")
    with pytest.raises(TokenError, match="already exists"):
        store.add("ci")
    with pytest.raises(TokenError, match="no such token"):
        store.delete("nope")
    with pytest.raises(TokenError, match="token name"):
        store.add("bad:name")
    assert store.add("ci2") != store.add("ci3")  # random every time


def test_malformed_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\nci:nothex:1\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: expected"):
        TokenStore(path).list()
    assert TokenStore(tmp_path / "missing").list() == []
