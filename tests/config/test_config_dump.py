"""dump_config: the effective config as TOML that loads back into an equal Config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from goniec.config import dump_config, load_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

ODD = r'''
[server]
hostname = "mx.example.test"
data_dir = "dir with spaces/and \"quotes\" and \\ backslash"
workers = "auto"
greeting = "say \"hi\" \\o/"
log_level = "debug"

[[listeners]]
name = "v4"
address = "0.0.0.0:25"
tls = "none"
auth = "none"

[[listeners]]
name = "v6"
address = "[0:0::1]:587"
auth = "required"

[limits]
message_size = 1536
recipients = 1

[timeouts]
command = 0.5

[tls]
ciphers = "ECDHE+AESGCM"
min_version = 1.3

[queue]
min_free_space = "10MiB"

[domains]
local = []

[relay]
networks = []
authenticated = false
'''


def docs_example() -> str:
    m = re.search(r"## A full example.*?```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert m
    return m.group(1)


@pytest.mark.parametrize("text", ["", ODD, docs_example()], ids=["defaults", "odd", "docs"])
def test_round_trip(tmp_path: Path, text: str) -> None:
    first = tmp_path / "a" / "goniec.toml"
    first.parent.mkdir()
    first.write_text(text, encoding="utf-8")
    config = load_config(first)
    dumped = dump_config(config)
    tomllib.loads(dumped)  # valid TOML
    # Loaded from another directory, the absolute paths still mean the same.
    second = tmp_path / "b" / "c" / "again.toml"
    second.parent.mkdir(parents=True)
    second.write_text(dumped, encoding="utf-8")
    again = load_config(second)
    assert again == config
    assert dump_config(again) == dumped


def test_dump_shows_effective_values(tmp_path: Path) -> None:
    path = tmp_path / "goniec.toml"
    path.write_text(ODD, encoding="utf-8")
    data = tomllib.loads(dump_config(load_config(path)))
    assert data["server"]["data_dir"] == str(tmp_path / 'dir with spaces/and "quotes" and \\ backslash')
    assert data["auth"]["users_file"].endswith("backslash/users")
    assert data["server"]["log_file"] == "" and data["tls"]["certificate"] == ""
    assert data["listeners"][1]["address"] == "[::1]:587"
    assert data["limits"]["message_size"] == 1536
    assert data["queue"]["min_free_space"] == "10MiB"
    assert data["tls"]["min_version"] == "1.3"
    assert data["timeouts"]["command"] == 0.5 and data["timeouts"]["data_block"] == 180
    assert set(data) == {"server", "listeners", "tls", "auth", "limits", "timeouts", "domains",
                         "relay", "queue", "access", "rates", "peers", "dns", "delivery",
                         "mailauth", "admin", "log"}


def test_round_trip_with_dkim_keys(tmp_path: Path) -> None:
    from goniec.mailauth.keys import keygen

    keygen(tmp_path / "keys", "example.test", "rsa1")
    keygen(tmp_path / "keys", "example.test", "ed1", "ed25519")
    first = tmp_path / "goniec.toml"
    first.write_text("""
[mailauth]
inbound = "off"
max_size = "1MB"
authserv_aliases = ["mx2.example.test"]

[[mailauth.dkim]]
domain = "example.test"
selector = "rsa1"
key_file = "keys/example.test.rsa1.key"

[[mailauth.dkim]]
domain = "example.test"
selector = "ed1"
key_file = "keys/example.test.ed1.key"
subdomains = true
""", encoding="utf-8")
    config = load_config(first)
    dumped = dump_config(config)
    data = tomllib.loads(dumped)
    assert [k["selector"] for k in data["mailauth"]["dkim"]] == ["rsa1", "ed1"]
    assert data["mailauth"]["dkim"][0]["key_file"] == str(tmp_path / "keys/example.test.rsa1.key")
    assert data["mailauth"]["max_size"] == "1MB"
    second = tmp_path / "b" / "again.toml"
    second.parent.mkdir()
    second.write_text(dumped, encoding="utf-8")
    again = load_config(second)
    assert again == config and dump_config(again) == dumped


def test_round_trip_with_domain_policies(tmp_path: Path) -> None:
    src = tmp_path / "goniec.toml"
    src.write_text('[domains]\nlocal = ["example.test"]\n[mailauth]\ninbound = "on"\n'
                   '[mailauth.domains."example.test"]\ndmarc = "enforce"\n', "utf-8")
    config = load_config(src)
    text = dump_config(config)
    assert '[mailauth.domains."example.test"]\ndmarc = "enforce"\n\n' in text
    again = tmp_path / "again.toml"
    again.write_text(text, "utf-8")
    assert load_config(again) == config
