"""TLS for outbound connections: client `SSLContext`s (layer 3).

Owns building and caching the client contexts: TLS 1.2 as the floor (RFC 8996,
as the listeners), and either full checking (chain against the system store
or a configured CA file, and the host name; RFC 6125) or none (opportunistic
TLS: RFC 7435, encryption without authentication). Contexts are cached per
(verify, ca_file, min_version), since loading a CA store costs milliseconds.
Raises `ConfigError` when a configured CA file cannot be loaded.
"""

from __future__ import annotations

import functools
import ssl

from goniec.errors import ConfigError

MODERN_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!DSS"


@functools.lru_cache(maxsize=32)
def client_context(*, verify: bool, ca_file: str | None = None,
                   min_version: str = "1.2") -> ssl.SSLContext:
    """A shared client context; do not change the returned object."""
    if verify:
        try:
            ctx = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"delivery TLS: cannot load CA file {ca_file}: {exc}") from None
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.set_ciphers(MODERN_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def describe(obj: object) -> str | None:
    """"TLSv1.3 TLS_AES_256_GCM_SHA384" for an SSLObject/SSLSocket, else None."""
    if not isinstance(obj, (ssl.SSLObject, ssl.SSLSocket)):
        return None
    cipher = obj.cipher()
    return f"{obj.version()} {cipher[0]}" if cipher else obj.version()
