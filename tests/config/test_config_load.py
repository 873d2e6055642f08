"""load_config: defaults, the relative-path rule, discovery, and one clear message per error."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path

import pytest

from goniec.config import Config, find_config_file, load_config
from goniec.config.load import check_files, find_line
from goniec.config.values import format_size, parse_size
from goniec.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def write(tmp_path: Path, text: str, name: str = "goniec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message[len(str(path)) :]


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.data_path == tmp_path / "goniec-data"
    assert config.spool_path == tmp_path / "goniec-data" / "spool"
    assert config.tls_path == tmp_path / "goniec-data" / "tls"
    assert config.users_path == tmp_path / "goniec-data" / "users"
    assert config.log_path is None and config.server.log_level == "info"
    assert config.server.workers == "auto" and config.worker_count == max(1, os.cpu_count() or 1)
    [lst] = config.listeners
    assert (lst.name, lst.address, lst.tls, lst.auth) == ("smtp", "127.0.0.1:2525", "starttls", "optional")
    assert (lst.host, lst.port, lst.family) == ("127.0.0.1", 2525, socket.AF_INET)
    assert config.listener_endpoint(lst) == ("127.0.0.1", 2525)
    assert config.tls_paths() == (None, None) and config.tls.self_signed
    assert config.tls.min_version == "1.2" and config.tls.ciphers == ""
    assert config.auth.allow_plaintext is False
    assert config.message_size_bytes == 10_000_000 and config.min_free_space_bytes == 100_000_000
    assert (config.limits.connections, config.limits.connections_per_ip) == (1000, 50)
    assert (config.limits.bad_commands, config.limits.recipients) == (20, 100)
    t = config.timeouts
    assert (t.command, t.data_block, t.data_end, t.tls_handshake) == (300, 180, 600, 30)
    assert config.local_domains == frozenset({"localhost"})
    assert config.relay_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.relay.authenticated is True
    assert config.relay.trusts("127.0.0.5") and config.relay.trusts("::ffff:127.0.0.1")
    assert not config.relay.trusts("192.0.2.1")
    assert config.server.hostname  # getfqdn() or "localhost"


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config.model_validate(
        {}, context={"base_dir": tmp_path, "default_hostname": lambda: load_config(None).server.hostname}
    )


def test_docs_example_loads(tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = re.search(r"## A full example.*?```toml\n(.*?)```", text, re.S)
    assert example
    config = load_config(write(tmp_path, example.group(1)))
    assert config.server.hostname == "mx.example.test"
    assert config.server.workers == "auto" and config.worker_count == max(1, os.cpu_count() or 1)
    assert [x.name for x in config.listeners] == ["smtp", "smtp6", "submission", "submissions"]
    assert (config.listeners[1].host, config.listeners[1].family) == ("::", socket.AF_INET6)
    assert config.users_path == Path("/etc/goniec/users")
    assert config.log_path == Path("/var/log/goniec/goniec.log")
    assert config.message_size_bytes == 25_000_000 and config.min_free_space_bytes == 10**9
    assert config.local_domains == {"example.test", "mail.example.test"}


def test_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    monkeypatch.chdir(tmp_path)
    path = write(sub, '[server]\ndata_dir = "data"\nlog_file = "../log/g.log"\n'
                      '[tls]\ncertificate = "c.pem"\nkey = "/k.pem"\n')
    config = load_config(Path("etc/goniec.toml"))
    assert config.data_path == sub / "data"
    assert config.users_path == sub / "data" / "users"
    assert config.log_path == tmp_path / "log" / "g.log"
    assert config.tls_paths() == (sub / "c.pem", Path("/k.pem"))
    assert path.exists()


def test_users_file_and_home_expansion(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[auth]\nusers_file = "~/goniec-users"\n'))
    assert config.users_path == Path.home() / "goniec-users"


def test_ipv6_listener_and_hostname_normalised(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nhostname = "MX.Bücher.Example."\n'
                                         '[[listeners]]\nname = "v6"\naddress = "[::1]:2525"\n'))
    assert config.server.hostname == "mx.xn--bcher-kva.example"
    [lst] = config.listeners
    assert (lst.host, lst.port, lst.family, lst.address) == ("::1", 2525, socket.AF_INET6, "[::1]:2525")


def test_default_hostname_from_getfqdn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda: "Host.Example.TEST")
    assert load_config(None).server.hostname == "host.example.test"
    monkeypatch.setattr(socket, "getfqdn", lambda: "not_a_name!")
    assert load_config(None).server.hostname == "localhost"


def test_domains_and_networks_normalised(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[domains]\nlocal = ["Example.TEST.", "bücher.example"]\n'
                                         '[relay]\nnetworks = ["10.0.0.0/8", "2001:db8::1"]\n'))
    assert config.local_domains == {"example.test", "xn--bcher-kva.example"}
    assert config.domains.is_local("EXAMPLE.test") and config.domains.is_local("Bücher.example")
    assert config.relay_networks[1] == ipaddress.ip_network("2001:db8::1/128")


@pytest.mark.parametrize(
    ("text", "value"),
    [("512", 512), ('"512"', 512), ('"10MB"', 10_000_000), ('"10 mb"', 10_000_000),
     ('"10MiB"', 10 * 2**20), ('"1.5KB"', 1500), ('"2GiB"', 2 * 2**30), ('"3B"', 3), ("0", 0)],
)
def test_sizes(tmp_path: Path, text: str, value: int) -> None:
    config = load_config(write(tmp_path, f"[limits]\nmessage_size = {text}\n"))
    assert config.message_size_bytes == value


def test_format_size_is_exact() -> None:
    for n in (0, 1, 999, 1000, 1024, 10_000_000, 10 * 2**20, 1536, 10**9 + 1):
        out = format_size(n)
        assert parse_size(out) == n


# (file text, expected message after "<file>", with ":<line>" when the line is known)
ERRORS = [
    ('[[listeners]]\nname = "smtp"\naddress = "0.0.0.0:25"\ntls = "yes"\n',
     ':4: listeners[0].tls: must be one of "none", "starttls", "implicit" (got "yes")'),
    ("[server]\nhostname = \n", ":2:12: TOML syntax error: Invalid value"),
    ('[server]\nhostname = "a"\nhostname = "b"\n', ":3:15: TOML syntax error: Cannot overwrite a value"),
    ('[server]\nhostnme = "mx.example.test"\n',
     ':2: server.hostnme: unknown key (did you mean "hostname"?)'),
    ('[sever]\nhostname = "x"\n', ':1: sever: unknown section (did you mean "server"?)'),
    ("top = 1\n", ":1: top: unknown key (known keys: server, listeners, tls, auth, limits,"
                  " timeouts, domains, relay, queue, access, recipients, remote_domains, rates,"
                  " peers, dns, delivery, mailauth, admin, log)"),
    ('[server]\nworkers = "two"\n', ':2: server.workers: must be a number from 1 to 1024 or "auto" (got "two")'),
    ('[limits]\nconnections = "5"\n', ':2: limits.connections: must be an integer (got "5")'),
    ("[limits]\nconnections = -1\n", ":2: limits.connections: must be >= 0 (got -1)"),
    ("[limits]\nrecipients = 0\n", ":2: limits.recipients: must be >= 1 (got 0)"),
    ("[auth]\nallow_plaintext = 1\n", ":2: auth.allow_plaintext: must be true or false (got 1)"),
    ("[server]\nhostname = 5\n", ":2: server.hostname: must be a string (got 5)"),
    ('[server]\nhostname = "bad_name"\n', ':2: server.hostname: is not a valid domain name'),
    ('[server]\ngreeting = "two\\nlines"\n', ":2: server.greeting: must be at most 200 printable"),
    ('[server]\nlog_level = "loud"\n', ':2: server.log_level: must be one of "debug", "info"'),
    ('[server]\ndata_dir = ""\n', ':2: server.data_dir: must be a non-empty path (got "")'),
    ('server = "x"\n', ':1: server: must be a table (got "x")'),
    ('[[listeners]]\nname = "a"\naddress = "0.0.0.0"\n',
     ':3: listeners[0].address: must be "host:port", e.g. "0.0.0.0:25" (got "0.0.0.0")'),
    ('[[listeners]]\nname = "a"\naddress = "0.0.0.0:0"\n',
     ':3: listeners[0].address: port must be a number from 1 to 65535 (got "0")'),
    ('[[listeners]]\nname = "a"\naddress = "0.0.0.0:65536"\n', ":3: listeners[0].address: port must be"),
    ('[[listeners]]\nname = "a"\naddress = "0.0.0.0:smtp"\n', ":3: listeners[0].address: port must be"),
    ('[[listeners]]\nname = "a"\naddress = "mail.example.test:25"\n',
     ':3: listeners[0].address: "mail.example.test" is not an IP address'),
    ('[[listeners]]\nname = "a"\naddress = "::1:25"\n',
     ':3: listeners[0].address: IPv6 addresses need brackets, e.g. "[::1]:25"'),
    ('[[listeners]]\nname = "a"\naddress = "[127.0.0.1]:25"\n',
     ':3: listeners[0].address: "127.0.0.1" is not an IPv6 address'),
    ('[[listeners]]\nname = "a"\naddress = "300.1.1.1:25"\n', ':3: listeners[0].address: "300.1.1.1" is not an IP'),
    ('[[listeners]]\nname = "a"\n', ":1: listeners[0].address: is required"),
    ('[[listeners]]\nname = "a b"\naddress = "127.0.0.1:25"\n', ":2: listeners[0].name: must be 1 to 64"),
    ('[[listeners]]\nname = "a"\naddress = "127.0.0.1:25"\n[[listeners]]\nname = "a"\naddress = "127.0.0.1:26"\n',
     ':5: listeners[1].name: duplicate listener name "a" (also listeners[0])'),
    ('[[listeners]]\nname = "a"\naddress = "127.0.0.1:25"\n[[listeners]]\nname = "b"\naddress = "127.0.0.1:25"\n',
     ':6: listeners[1].address: duplicate address "127.0.0.1:25" (also listeners[0])'),
    ('[[listeners]]\nname = "a"\naddress = "[::]:25"\n[[listeners]]\nname = "b"\naddress = "[::1]:25"\n',
     ':6: listeners[1].address: "[::1]:25" overlaps listeners[0] ("[::]:25")'),
    ("listeners = []\n", ":1: listeners: at least one [[listeners]] table is needed"),
    ('[listeners]\nname = "a"\n', ":1: listeners: must be an array of tables: write [[listeners]]"),
    ('[[listeners]]\nname = "a"\naddress = "0.0.0.0:25"\ntls = "none"\nauth = "required"\n',
     ':5: listeners[0].auth: "required" on a listener without TLS means no client can ever log in'),
    ('[tls]\ncertificate = "c.pem"\n', ":1: tls.key: certificate and key go together"),
    ('[tls]\nmin_version = "1.1"\n', ':2: tls.min_version: must be one of "1.2", "1.3" (got "1.1")'),
    ('[tls]\nciphers = "NOT-A-CIPHER"\n', ':2: tls.ciphers: OpenSSL accepts none of these ciphers (got "NOT-A-CIPHER")'),
    ("[timeouts]\ncommand = 0\n", ":2: timeouts.command: must be more than 0 seconds (got 0)"),
    ('[timeouts]\ncommand = "5m"\n', ':2: timeouts.command: must be a number of seconds (got "5m")'),
    ('[limits]\nmessage_size = "10XB"\n', ":2: limits.message_size: must be a number of bytes or a string with a unit"),
    ("[limits]\nmessage_size = -5\n", ":2: limits.message_size: must not be negative (got -5)"),
    ('[queue]\nmin_free_space = true\n', ':2: queue.min_free_space: must be a size in bytes'),
    ('[domains]\nlocal = "example.test"\n', ':2: domains.local: must be an array of domain names'),
    ('[domains]\nlocal = ["ok.test", "-bad.test"]\n',
     ':2: domains.local[1]: "-bad.test" is not a valid domain name: label "-bad"'),
    ('[relay]\nnetworks = [\n  "10.0.0.0/8",\n  "10.0.0.1/8",\n]\n',
     ':2: relay.networks[1]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?'),
    ('[relay]\nnetworks = ["localhost"]\n',
     ':2: relay.networks[0]: "localhost" is not an IP address or a network in CIDR notation'),
    ('[relay]\nnetworks = [10]\n', ":2: relay.networks[0]: must be an address or network string (got 10)"),
    ('[mailauth]\ninbound = "record"\n', ':2: mailauth.inbound: must be one of "on", "off" (got "record")'),
    ('[mailauth]\ndmarc = "reject"\n', ':2: mailauth.dmarc: must be one of "record", "enforce"'),
    ('[mailauth]\nmax_size = "20MB"\nmemory = "10MB"\n', ":3: mailauth.memory: must be at least max_size"),
    ('[mailauth]\nmax_size = 0\n', ":2: mailauth.max_size: must be more than 0 bytes"),
    ('[mailauth.dkim]\ndomain = "a.test"\n', ":1: mailauth.dkim: must be an array of tables: write [[mailauth.dkim]]"),
    ('[[mailauth.dkim]]\ndomain = "a.test"\nselector = "s"\n', ":1: mailauth.dkim[0].key_file: is required"),
    ('[[mailauth.dkim]]\ndomain = "a.test"\nselector = "s_1"\nkey_file = "k"\n',
     ':3: mailauth.dkim[0].selector: must be a DKIM selector'),
    ('[[mailauth.dkim]]\ndomain = "-a.test"\nselector = "s"\nkey_file = "k"\n',
     ':2: mailauth.dkim[0].domain: "-a.test" is not a valid domain name'),
    ('[[mailauth.dkim]]\ndomain = "a.test"\nselector = "s"\nkey_file = "k"\n'
     '[[mailauth.dkim]]\ndomain = "A.test."\nselector = "S"\nkey_file = "k2"\n',
     ':7: mailauth.dkim[1].selector: "S" of "a.test" is listed twice (also dkim[0])'),
    ('[[mailauth.dkim]]\ndomain = "a.test"\nselector = "s"\nkey_file = "missing.key"\n',
     ':4: mailauth.dkim[0].key_file: DKIM key '),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_error_messages(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(expected), message
    assert "\n" not in message  # one problem, one line
    assert "pydantic" not in message and "Input should" not in message


def test_several_errors_one_line_each(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[server]\nworkers = 0\n[limits]\nconnections = "x"\n')
    lines = message.split("\n")
    assert len(lines) == 2
    assert lines[0].startswith(":2: server.workers") and f"{tmp_path}" in lines[1]
    assert ":4: limits.connections" in lines[1]


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: no such file$"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[server]\ngreeting = "\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml:2: not valid UTF-8"):
        load_config(bad)


def test_check_files_reports_missing_certificate(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[tls]\ncertificate = "c.pem"\nkey = "k.pem"\n'))
    problems = check_files(config, "goniec.toml")
    assert len(problems) == 2 and "tls.certificate" in problems[0] and "does not exist" in problems[0]
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    assert check_files(config) == []


def test_check_files_reports_missing_smart_host_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[delivery]\nsmart_host = "relay.example.test"\n'
                                         'smart_host_username = "u"\n'
                                         'smart_host_password_file = "pw"\n'))
    [problem] = check_files(config, "goniec.toml")
    assert problem.startswith("goniec.toml: delivery.smart_host_password_file: ")
    assert problem.endswith("does not exist")
    (tmp_path / "pw").write_text("secret")
    assert check_files(config) == []


def test_find_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GONIEC_CONFIG", raising=False)
    assert find_config_file(None) is None
    write(tmp_path, "")
    assert find_config_file(None) == Path("goniec.toml")
    monkeypatch.setenv("GONIEC_CONFIG", "/elsewhere.toml")
    assert find_config_file(None) == Path("/elsewhere.toml")
    assert find_config_file("x.toml") == Path("x.toml")
    monkeypatch.setenv("GONIEC_CONFIG", "")
    assert find_config_file(None) == Path("goniec.toml")


def test_find_line() -> None:
    text = ('# comment\n[server]\nhostname = "x"\n\n[[listeners]]\nname = "a"\n'
            '[[listeners]]\n"name" = "b"\naddress = "c"\n[relay]\nnetworks = [\n "x",\n]\n')
    assert find_line(text, ("server", "hostname")) == 3
    assert find_line(text, ("server", "data_dir")) == 2
    assert find_line(text, ("listeners", 0, "name")) == 6
    assert find_line(text, ("listeners", 1, "name")) == 8
    assert find_line(text, ("listeners", 1, "tls")) == 7
    assert find_line(text, ("relay", "networks", 0)) == 11
    assert find_line(text, ("queue", "min_free_space")) is None


# --------------------------------------------------------------------------- [mailauth]


def dkim_config(key_file: str, extra: str = "") -> str:
    return (f'[mailauth]\ndmarc = "enforce"\n{extra}\n'
            f'[[mailauth.dkim]]\ndomain = "Example.TEST"\nselector = "s2024"\n'
            f'key_file = "{key_file}"\nsubdomains = true\n')


def test_mailauth_defaults_and_keys(tmp_path: Path) -> None:
    from goniec.mailauth.keys import keygen

    defaults = load_config(write(tmp_path, "")).mailauth
    assert (defaults.inbound, defaults.dmarc, defaults.spf_fail, defaults.temperror) == (
        "off", "record", "record", "accept")
    assert defaults.max_size == 10_000_000 and defaults.dkim == ()
    keys = tmp_path / "keys"
    keygen(keys, "example.test", "s2024", "ed25519")
    config = load_config(write(tmp_path, dkim_config("keys/example.test.s2024.key")))
    entry = config.mailauth.dkim[0]
    assert entry.domain == "example.test" and entry.selector == "s2024" and entry.subdomains
    assert entry.key_file == keys / "example.test.s2024.key"  # relative to the config file
    assert config.mailauth.dmarc == "enforce"


@pytest.mark.parametrize(("content", "why"), [
    (b"not a key\n", "is not usable: not a PEM key and not a base64 Ed25519 key"),
    (None, "does not exist"),
    ("ec", "is not usable: DKIM keys are RSA or Ed25519"),
])
def test_unusable_dkim_key_is_named(tmp_path: Path, content: bytes | str | None, why: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "k.key"
    if isinstance(content, bytes):
        key.write_bytes(content)
    elif content is not None:
        private = ec.generate_private_key(ec.SECP256R1())
        key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    message = error_of(tmp_path, dkim_config("k.key"))
    assert message == f":7: mailauth.dkim[0].key_file: DKIM key {str(key)!r} {why}", message


def test_unreadable_dkim_key(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    key = tmp_path / "k.key"
    key.write_text("x")
    key.chmod(0)
    assert "cannot read DKIM key" in error_of(tmp_path, dkim_config("k.key"))


def test_mailauth_warnings(tmp_path: Path) -> None:
    from goniec.config.load import config_warnings

    config = load_config(write(tmp_path, '[mailauth]\ndmarc = "enforce"\n'))
    assert config_warnings(config) == [
        'mailauth.inbound = "off": dmarc = "enforce" has no effect (no message is checked)']
    on = '[mailauth]\ninbound = "on"\ndmarc = "enforce"\n'
    assert config_warnings(load_config(write(tmp_path, on))) == []


def test_arc_flag_needs_an_rsa_key(tmp_path: Path) -> None:
    from goniec.mailauth.keys import keygen
    from goniec.server.mailauth_step import build_settings

    keygen(tmp_path / "keys", "example.test", "s2024", "ed25519")
    key = tmp_path / "keys" / "example.test.s2024.key"
    message = error_of(tmp_path, dkim_config("keys/example.test.s2024.key") + "arc = true\n")
    assert message == (f":9: mailauth.dkim[0].arc: DKIM key {str(key)!r} (s2024._domainkey."
                       "example.test) is Ed25519; arc = true needs an RSA key"), message
    keygen(tmp_path / "keys", "example.test", "r2024", "rsa")
    config = load_config(write(tmp_path, dkim_config("keys/example.test.r2024.key")
                               .replace("s2024", "r2024") + "arc = true\n"))
    assert config.mailauth.dkim[0].arc
    settings = build_settings(config)
    arc_key = settings.arc_key("Example.test", 1000)
    assert arc_key is not None and arc_key.selector == "r2024"
    assert settings.arc_key("other.test", 1000) is None
    assert settings.arc_key("example.test", config.mailauth.max_size + 1) is None  # never checked
    assert build_settings(load_config(write(tmp_path, ""))).arc_keys == {}


def test_mailauth_domain_policies(tmp_path: Path) -> None:
    from goniec.config.load import config_warnings
    from goniec.mailauth.decision import InboundPolicy
    from goniec.server.mailauth_step import build_settings

    text = ('[domains]\nlocal = ["example.test"]\naliases = {"alias.test" = "example.test"}\n'
            '[mailauth]\ninbound = "on"\nquarantine = "accept"\n'
            '[mailauth.domains."Example.TEST"]\ndmarc = "enforce"\n'
            '[mailauth.domains."remote.test"]\nspf_fail = "reject"\n')
    config = load_config(write(tmp_path, text))
    assert set(config.mailauth.domains) == {"example.test", "remote.test"}
    assert config_warnings(config) == [
        'mailauth.domains."remote.test": not in domains.local, so no mail is checked under'
        " this policy"]
    ma = build_settings(config)
    strict = InboundPolicy(dmarc="enforce", quarantine="accept")
    assert ma.policy_for(["a@example.test"]) == strict
    assert ma.policy_for(["a@ALIAS.test"]) == strict  # follows its target domain
    assert ma.policy_for(["a@other.test"]) == ma.policy == InboundPolicy(quarantine="accept")
    both = ma.policy_for(["a@other.test", "b@remote.test", "c@example.test"])
    assert both == InboundPolicy(dmarc="enforce", quarantine="accept", spf_fail="reject")
    twice = '[mailauth.domains."a.test"]\n[mailauth.domains."A.test"]\n'
    assert "is listed twice" in error_of(tmp_path, twice)
    off = load_config(write(tmp_path, '[mailauth.domains."a.test"]\ndmarc = "enforce"\n'))
    assert config_warnings(off)[-1] == ('mailauth.inbound = "off": [mailauth.domains] has no'
                                         " effect (no message is checked)")


def test_delivery_keys_that_need_a_restart(tmp_path: Path) -> None:
    from goniec.config.delivery import restart_keys
    from goniec.server.supervisor import restart_needed

    old = load_config(write(tmp_path, '[delivery]\nsmart_host = "a.example.test"\n'))
    routes = load_config(write(tmp_path, '[delivery]\nsmart_host = "b.example.test"\n'
                                         'retry = ["5m"]\nhelo_name = "out.example.test"\n'))
    assert restart_keys(old.delivery, routes.delivery) == []
    assert restart_needed(old, routes) == []  # routes, schedule, HELO: applied by a reload
    pace = load_config(write(tmp_path, '[delivery]\nsmart_host = "a.example.test"\n'
                                       'parallel = 10\nconnections = 5\n'))
    assert restart_needed(old, pace) == ["delivery.connections", "delivery.parallel"]
