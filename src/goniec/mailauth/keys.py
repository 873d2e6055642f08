"""DKIM keys: generate, write, load, and the DNS record to publish (RFC 6376, RFC 8463).

Owns key material for signing: RSA-2048 (RFC 8301 3.2: at least 1024 bits,
2048 recommended) and Ed25519 (RFC 8463) key pairs made with `cryptography`,
the private key written as PKCS#8 PEM with mode 0600, and the TXT record
text for selector._domainkey.domain (RFC 6376 3.6.1). Loading also accepts
the formats other tools write: PKCS#1 PEM ("BEGIN RSA PRIVATE KEY", as
opendkim-genkey) and a bare base64 Ed25519 seed (as dkimpy's dknewkey).

Raises `KeyError_` (a ValueError) for unreadable keys and FileExistsError
when a key file is already there; nothing else of its own.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KeyType = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
RSA_BITS = 2048
TXT_STRING_MAX = 255  # RFC 1035 3.3.14: one character-string is at most 255 octets


class KeyError_(ValueError):
    """A key file or key text that cannot be used for DKIM."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A signing key with where its public half is published: selector._domainkey.domain."""

    domain: str
    selector: str
    private_key: PrivateKey

    @property
    def algorithm(self) -> str:
        """The a= value: rsa-sha256 or ed25519-sha256 (RFC 6376 3.3, RFC 8463 3)."""
        return "ed25519-sha256" if key_type(self.private_key) == "ed25519" else "rsa-sha256"

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def key_type(key: PrivateKey) -> KeyType:
    return "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa"


def generate(kind: KeyType = "rsa", bits: int = RSA_BITS) -> PrivateKey:
    """A new private key: RSA with e=65537 and `bits` bits, or Ed25519."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind != "rsa":
        raise KeyError_(f"unknown key type {kind!r} (rsa or ed25519)")
    if bits < 1024:  # RFC 8301 3.2: verifiers must not accept less
        raise KeyError_("RSA keys must have at least 1024 bits (RFC 8301)")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_key_data(key: PrivateKey) -> str:
    """The p= value: base64 SubjectPublicKeyInfo for RSA (what opendkim-genkey and
    every verifier use), the raw 32-byte public key for Ed25519 (RFC 8463 4.2)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    else:
        raw = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(raw).decode("ascii")


def public_record(key: PrivateKey) -> str:
    """The TXT record text: "v=DKIM1; k=rsa; p=..." or "v=DKIM1; k=ed25519; p=..."."""
    return f"v=DKIM1; k={key_type(key)}; p={public_key_data(key)}"


def zone_line(domain: str, selector: str, record: str) -> str:
    """A zone-file line for the record, split into 255-octet strings (RFC 1035 3.3.14)."""
    parts = [record[i:i + TXT_STRING_MAX] for i in range(0, len(record), TXT_STRING_MAX)]
    quoted = " ".join(f'"{p}"' for p in parts)
    return f"{selector}._domainkey.{domain}. IN TXT ( {quoted} )"


def private_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the server must read it unattended)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write the key as PEM, mode 0600 from the start (never briefly world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        os.write(fd, private_pem(key))
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_private_key(data: bytes) -> PrivateKey:
    """A private key from PEM (PKCS#8 or PKCS#1) or a base64 Ed25519 seed."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyError_(f"cannot read the PEM private key: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyError_("DKIM keys are RSA or Ed25519")
        return key
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyError_("not a PEM key and not a base64 Ed25519 key") from None
    if len(seed) != 32:
        raise KeyError_("a base64 Ed25519 private key has 32 octets")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def load_private_key(path: Path) -> PrivateKey:
    return parse_private_key(Path(path).read_bytes())


def load_dkim_key(path: Path, domain: str, selector: str) -> DkimKey:
    return DkimKey(domain.lower().rstrip("."), selector, load_private_key(path))


def keygen(directory: Path, domain: str, selector: str, kind: KeyType = "rsa",
           bits: int = RSA_BITS, *, overwrite: bool = False) -> tuple[Path, str]:
    """Make a key pair, write DIRECTORY/DOMAIN.SELECTOR.key; return (path, TXT record)."""
    domain = domain.lower().rstrip(".")
    key = generate(kind, bits)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{domain}.{selector}.key"
    write_private_key(path, key, overwrite=overwrite)
    return path, public_record(key)
