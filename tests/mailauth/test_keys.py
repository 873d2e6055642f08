"""DKIM keys: generation, files (mode 0600), the DNS record, other tools' formats."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from goniec.mailauth.keys import (
    KeyError_,
    generate,
    keygen,
    load_dkim_key,
    parse_private_key,
    public_record,
    zone_line,
)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_keygen_writes_a_private_file_and_returns_the_record(tmp_path: Path, kind: str) -> None:
    path, record = keygen(tmp_path / "keys", "Example.TEST.", "s2024", kind)  # type: ignore[arg-type]
    assert path == tmp_path / "keys" / "example.test.s2024.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert record.startswith(f"v=DKIM1; k={kind}; p=")
    key = load_dkim_key(path, "example.test", "s2024")
    assert public_record(key.private_key) == record
    # dkimpy reads the record as a usable key of the right size
    _pk, size, ktag, _ = dkim.evaluate_pk(b"s2024._domainkey.example.test.", record.encode())
    assert ktag == kind.encode() and size == (2048 if kind == "rsa" else 256)


def test_keygen_does_not_overwrite_unless_asked(tmp_path: Path) -> None:
    path, first = keygen(tmp_path, "example.test", "a", "ed25519")
    with pytest.raises(FileExistsError):
        keygen(tmp_path, "example.test", "a", "ed25519")
    _, second = keygen(tmp_path, "example.test", "a", "ed25519", overwrite=True)
    assert second != first and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_other_tools_key_formats_load() -> None:
    rsa_key = generate("rsa")
    pkcs1 = rsa_key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    assert isinstance(parse_private_key(pkcs1), rsa.RSAPrivateKey)  # opendkim-genkey
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    loaded = parse_private_key(base64.b64encode(seed) + b"\n")  # dkimpy's dknewkey
    assert public_record(loaded) == public_record(ed)
    for bad in (b"not a key", base64.b64encode(b"short"), b"-----BEGIN PRIVATE KEY-----\nxx\n"):
        with pytest.raises(KeyError_):
            parse_private_key(bad)


def test_small_rsa_keys_are_refused() -> None:
    with pytest.raises(KeyError_):
        generate("rsa", 512)


def test_zone_line_splits_long_records_into_255_octet_strings() -> None:
    record = public_record(generate("rsa", 4096))
    line = zone_line("example.test", "big", record)
    strings = line.split("( ")[1].rstrip(" )").split('" "')
    assert all(len(s.strip('"')) <= 255 for s in strings)
    assert "".join(s.strip('"') for s in strings) == record
    assert line.startswith("big._domainkey.example.test. IN TXT (")
