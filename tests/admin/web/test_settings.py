"""goniec.admin.settings: the Settings tabs' read, validate and save, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from goniec.admin import settings as st
from goniec.config.load import load_config

ORIGINAL = """\
# Goniec on the test box
[server]
hostname = "mx.example.test"   # the public name
data_dir = "data"

[relay]
# who may relay
networks = ["127.0.0.0/8"]

[domains]
local = ["example.test"]
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "goniec.toml"
    path.write_text(ORIGINAL)
    path.chmod(0o640)
    return path


def form_of(current: st.SettingsFile, tab: str, **changes: str) -> dict[str, str]:
    form = {s.form_name: v for s, v in zip(st.TABS[tab][1], current.values(tab).values(),
                                           strict=True)}
    form.update({k.replace(".", "__"): v for k, v in changes.items()})
    return form


def test_every_tab_shows_the_defaults() -> None:
    current = st.SettingsFile.read(None)
    assert not current.writable
    for tab in st.TABS:
        values = current.values(tab)
        assert set(values) == {s.key for s in st.TABS[tab][1]}
    assert current.values("delivery")["delivery.retry"] == "15m\n30m\n1h\n4h"
    assert current.values("messages")["limits.message_size"] == "10MB"
    assert current.values("access")["relay.networks"] == "127.0.0.0/8\n::1"


def test_save_keeps_comments_and_changes_only_what_changed(conf: Path) -> None:
    current = st.SettingsFile.read(conf)
    form = form_of(current, "access", **{"relay.networks": "127.0.0.0/8\r\n192.0.2.0/24\r\n",
                                        "relay.authenticated": "false"})
    result = st.save(conf, "access", form, current.version)
    assert result.ok and sorted(result.changed) == ["relay.authenticated", "relay.networks"]
    text = conf.read_text()
    assert text.startswith("# Goniec on the test box\n")
    assert 'hostname = "mx.example.test"   # the public name' in text
    assert "# who may relay\n" in text
    assert 'networks = ["127.0.0.0/8", "192.0.2.0/24"]' in text
    assert "access" not in text  # untouched sections are not written out
    config = load_config(conf)
    assert not config.relay.authenticated
    assert oct(conf.stat().st_mode & 0o777) == oct(0o640)  # mode kept
    assert [p.name for p in conf.parent.iterdir() if p.name.startswith(".")] == []


def test_bad_value_is_the_loaders_message_next_to_the_field(conf: Path) -> None:
    current = st.SettingsFile.read(conf)
    form = form_of(current, "access", **{"relay.networks": "10.0.0.1/8"})
    result = st.save(conf, "access", form, current.version)
    assert not result.ok
    assert "has host bits set" in result.errors["relay.networks"]
    assert str(conf) in result.errors["relay.networks"]  # the real name, not the temp file
    assert conf.read_text() == ORIGINAL
    assert [p.name for p in conf.parent.iterdir() if p.name.startswith(".")] == []


def test_wrong_type_and_cross_checks(conf: Path) -> None:
    current = st.SettingsFile.read(conf)
    result = st.save(conf, "messages", {"limits__recipients": "lots"}, current.version)
    assert "must be an integer" in result.errors["limits.recipients"]
    result = st.save(conf, "messages", {"limits__message_size": "20MB",
                                        "limits__session_size": "1MB"}, current.version)
    assert "limits.session_size" in result.errors
    result = st.save(conf, "domains", {"domains__aliases": "alias.example = nowhere.example"},
                     current.version)
    assert "not in domains.local" in result.errors["domains.aliases"]
    result = st.save(conf, "domains", {"domains__aliases": "no equals sign"}, current.version)
    assert "expected name = value" in result.errors["domains.aliases"]
    assert conf.read_text() == ORIGINAL


def test_maps_sizes_durations_and_restart_flags(conf: Path) -> None:
    current = st.SettingsFile.read(conf)
    result = st.save(conf, "domains", form_of(current, "domains", **{
        "domains.local": "example.test\nmail.example.test",
        "domains.aliases": "example.org = example.test"}), current.version)
    assert result.ok, result
    current = st.SettingsFile.read(conf)
    assert current.config.domains.aliases == {"example.org": "example.test"}
    result = st.save(conf, "delivery", form_of(current, "delivery", **{
        "delivery.retry": "5m\n1h", "delivery.expire": "3d"}), current.version)
    assert result.ok and result.restart == []  # the retry schedule follows a reload
    current = st.SettingsFile.read(conf)
    assert current.config.delivery.retry == (300.0, 3600.0)
    result = st.save(conf, "delivery", form_of(current, "delivery", **{
        "delivery.connections": "50"}), current.version)
    assert result.ok and result.restart == ["delivery.connections"]  # the pool: a restart
    current = st.SettingsFile.read(conf)
    assert current.values("delivery")["delivery.expire"] == "3d"
    result = st.save(conf, "messages", form_of(current, "messages", **{
        "limits.message_size": "25MB"}), current.version)
    assert result.ok and st.SettingsFile.read(conf).config.limits.message_size == 25_000_000


def test_nothing_changed_writes_nothing(conf: Path) -> None:
    before = conf.stat().st_mtime_ns
    current = st.SettingsFile.read(conf)
    result = st.save(conf, "general", form_of(current, "general"), current.version)
    assert result.ok and result.changed == []
    assert conf.stat().st_mtime_ns == before


def test_a_file_changed_meanwhile_is_not_overwritten(conf: Path) -> None:
    current = st.SettingsFile.read(conf)
    conf.write_text(ORIGINAL + "\n[limits]\nrecipients = 50\n")
    result = st.save(conf, "messages", {"limits__recipients": "10"}, current.version)
    assert not result.ok and "changed since" in result.general[0]
    assert "recipients = 50" in conf.read_text()


def test_a_broken_file_is_read_only(conf: Path) -> None:
    conf.write_text("[server]\nhostnme = 'x'\n")
    current = st.SettingsFile.read(conf)
    assert not current.writable and "hostnme" in current.error
    result = st.save(conf, "general", {"server__greeting": "hi"}, current.version)
    assert not result.ok


def test_relative_paths_resolve_as_after_the_rename(tmp_path: Path) -> None:
    conf = tmp_path / "goniec.toml"
    (tmp_path / "certs").mkdir()
    conf.write_text('[server]\ndata_dir = "data"\n')
    current = st.SettingsFile.read(conf)
    result = st.save(conf, "general", {"server__greeting": "Hello there"}, current.version)
    assert result.ok
    assert load_config(conf).server.data_dir == tmp_path / "data"
    assert os.listdir(tmp_path) == ["certs", "goniec.toml"] or sorted(os.listdir(tmp_path)) == [
        "certs", "goniec.toml"]
