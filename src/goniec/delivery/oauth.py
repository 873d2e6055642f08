"""OAuth2 access tokens for SMTP AUTH XOAUTH2 / OAUTHBEARER (layer 3).

Owns the client-credentials grant (RFC 6749 4.4) against a configured token
endpoint, as Microsoft 365 needs now that basic SMTP login is being
retired: POST grant_type=client_credentials with the client id, secret and
scope; the token is cached and fetched again `refresh_margin` seconds before
it expires; concurrent callers share one request; `invalidate()` drops a token
the SMTP server refused, so the next `token()` fetches a fresh one (the
caller retries AUTH at most once: no loop).

HTTP goes through httpx (async, typed, well kept; its AsyncClient is reused
for connection pooling). The client secret is never sent over plain HTTP
except to a loopback address (tests).

Raises `OAuthError` (network trouble, a non-200 answer with the RFC 6749 5.2
error, a reply without access_token); the delivery layer turns it into a
deferral with that reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported when a token source is made: ~5 MB per process otherwise
    import httpx

DEFAULT_LIFETIME = 300.0  # seconds, when the endpoint gives no expires_in (RFC 6749 5.1)


class OAuthError(Exception):
    """No access token could be had; the message says why."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ClientCredentialsTokens:
    """A `TokenProvider` (see `goniec.delivery.destination`) for one app registration.

    token_url: the endpoint, e.g. https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token
    scope: e.g. "https://outlook.office365.com/.default"
    auth_method: "post" sends the secret in the form (client_secret_post, as
        Microsoft documents), "basic" in an Authorization header (RFC 6749 2.3.1).
    refresh_margin: fetch a new token this many seconds before expiry.
    client: an httpx.AsyncClient to use (else one is made; `verify` and
        `trust_env` are passed to it); clock: monotonic seconds (tests).
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str,
                 scope: str | None = None, *, auth_method: Literal["post", "basic"] = "post",
                 refresh_margin: float = 60.0, timeout: float = 30.0,
                 client: httpx.AsyncClient | None = None, verify: Any = True,
                 trust_env: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        url = urlsplit(token_url)
        if url.scheme != "https" and not (url.scheme == "http" and _loopback(url.hostname or "")):
            raise ValueError(f"token endpoint must be https: {token_url}")
        self.token_url = token_url
        self._id = client_id
        self._secret = client_secret
        self._scope = scope
        self._method = auth_method
        self._margin = refresh_margin
        import httpx

        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout, verify=verify,
                                                   trust_env=trust_env)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self.fetches = 0  # requests made (for logs and tests)

    def _valid(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def token(self) -> str:
        token = self._valid()
        if token is not None:
            return token
        async with self._lock:  # one refresh for every caller waiting here
            token = self._valid()
            if token is None:
                token = await self._fetch()
            return token

    def invalidate(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def _fetch(self) -> str:
        import httpx

        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        auth = httpx.Auth()  # the base class sends the request unchanged
        if self._method == "basic":
            auth = httpx.BasicAuth(self._id, self._secret)
        else:
            form["client_id"] = self._id
            form["client_secret"] = self._secret
        self.fetches += 1
        started = self._clock()
        try:
            response = await self._client.post(
                self.token_url, data=form, auth=auth, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OAuthError(f"token endpoint {self.token_url}: {type(exc).__name__}: {exc}"
                             ) from None
        body = _json(response)
        if response.status_code != 200:
            # RFC 6749 5.2: {"error": "invalid_client", "error_description": "..."}
            error = body.get("error", "no error code")
            text = body.get("error_description", "")
            raise OAuthError(f"token endpoint refused: HTTP {response.status_code} {error}"
                             + (f": {text}" if text else ""))
        token = body.get("access_token")
        kind = str(body.get("token_type", "Bearer"))
        if not isinstance(token, str) or not token or kind.lower() != "bearer":
            raise OAuthError("token endpoint answered without a bearer access_token")
        lifetime = body.get("expires_in", DEFAULT_LIFETIME)
        try:
            seconds = float(lifetime)
        except (TypeError, ValueError):
            seconds = DEFAULT_LIFETIME
        self._token = token
        # Refresh `margin` early, but never more than half the lifetime early: a
        # short-lived token would otherwise be fetched again for every connection.
        self._refresh_at = started + seconds - min(self._margin, seconds / 2)
        return token


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
