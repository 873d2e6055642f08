"""`goniec dkim keygen` and `goniec dns check`, as the lead registers them on the main group."""

from __future__ import annotations

import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from goniec.cli.mailauth_cmds import dkim_group, dns_group
from goniec.mailauth.keys import load_private_key, public_record

from .dnsserver import ZoneServer


@click.group()
def cli() -> None:
    """Stand-in for goniec.cli.main.cli."""


cli.add_command(dkim_group)
cli.add_command(dns_group)


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GONIEC_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def test_keygen_prints_the_record_and_keeps_the_key_private(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["dkim", "keygen", "Example.TEST", "s1", "--type", "ed25519",
                               "--dir", str(tmp_path / "keys")])
    assert done.exit_code == 0, done.output
    path = tmp_path / "keys" / "example.test.s1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = public_record(load_private_key(path))
    assert f"s1._domainkey.example.test:\n  {record}\n" in done.output
    assert 's1._domainkey.example.test. IN TXT ( "v=DKIM1; k=ed25519; p=' in done.output
    again = runner.invoke(cli, ["dkim", "keygen", "example.test", "s1", "--dir",
                                str(tmp_path / "keys")])
    assert again.exit_code == 1 and "exists" in again.output


def dns_check(server: ZoneServer, *args: str) -> tuple[int, str]:
    done = CliRunner().invoke(cli, ["dns", "check", "-n", "127.0.0.1", "--port",
                                    str(server.port), "--timeout", "1", *args])
    return done.exit_code, done.output


def test_dns_check_reports_published_and_missing_records(dns_server: ZoneServer,
                                                         tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["dkim", "keygen", "example.test", "s1", "--dir", str(tmp_path)])
    key_file = tmp_path / "example.test.s1.key"
    code, out = dns_check(dns_server, "example.test", "--mail-host", "mx.goniec.test",
                          "-s", "s1")
    assert code == 1
    assert "MX     MISSING  example.test" in out
    assert "publish: example.test. IN MX 10 mx.goniec.test." in out
    assert "SPF    MISSING" in out and "DKIM   MISSING  s1._domainkey.example.test" in out
    assert "DMARC  MISSING  _dmarc.example.test" in out

    dns_server.add("example.test", "MX", (10, "mx.goniec.test"))
    dns_server.add("example.test", "TXT", "v=spf1 ip4:198.51.100.25 -all")
    dns_server.add("s1._domainkey.example.test", "TXT",
                   public_record(load_private_key(key_file)))
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=quarantine")
    code, out = dns_check(dns_server, "example.test", "--mail-host", "mx.goniec.test",
                          "--key", f"s1={key_file}", "--ip", "198.51.100.25")
    assert code == 0, out
    assert out.count(" OK ") == 4
    assert "note: 198.51.100.25: pass" in out and "note: p=quarantine pct=100" in out


def test_dns_check_finds_wrong_records(dns_server: ZoneServer, tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["dkim", "keygen", "example.test", "s1", "--dir", str(tmp_path)])
    dns_server.add("example.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("example.test", "TXT", "v=spf1 -all")
    dns_server.add("example.test", "TXT", "v=spf1 mx -all")
    dns_server.add("s1._domainkey.example.test", "TXT", "v=DKIM1; k=ed25519; p=AAAA")
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    dns_server.zone["s2._domainkey.example.test"] = ["SERVFAIL"]
    code, out = dns_check(dns_server, "sub.example.test", "--mail-host", "mx.goniec.test")
    assert code == 1 and "DMARC  OK" in out and "inherited from example.test" in out
    code, out = dns_check(dns_server, "example.test", "--mail-host", "mx.goniec.test",
                          "--key", f"s1={tmp_path / 'example.test.s1.key'}", "-s", "s2")
    assert code == 1
    assert "MX     WRONG" in out and "mx.goniec.test is not among the MX hosts" in out
    assert "SPF    WRONG" in out and "several SPF records" in out
    assert "DKIM   WRONG    s1._domainkey.example.test" in out
    assert "DKIM   ERROR    s2._domainkey.example.test" in out


def test_dns_check_sees_a_null_mx(dns_server: ZoneServer) -> None:
    dns_server.add("nomail.test", "MX", (0, "."))
    code, out = dns_check(dns_server, "nomail.test")
    assert code == 1 and "null MX (RFC 7505)" in out


def test_dns_check_rejects_a_bad_key_option(dns_server: ZoneServer) -> None:
    code, out = dns_check(dns_server, "example.test", "--key", "nofile")
    assert code == 2 and "SELECTOR=FILE" in out
