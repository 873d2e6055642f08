"""OAuth2 client credentials (RFC 6749 4.4) against a token endpoint on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from goniec.delivery.oauth import ClientCredentialsTokens, OAuthError

from .tokenserver import CLIENT_ID, CLIENT_SECRET, SCOPE, TokenServer


@pytest.fixture
def endpoint() -> Iterator[TokenServer]:
    server = TokenServer().start()
    yield server
    server.stop()


def tokens(endpoint: TokenServer, **kwargs: Any) -> ClientCredentialsTokens:
    kwargs.setdefault("trust_env", False)
    secret = kwargs.pop("secret", CLIENT_SECRET)
    return ClientCredentialsTokens(endpoint.url, CLIENT_ID, secret, SCOPE, **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_token_is_fetched_once_and_cached(endpoint: TokenServer) -> None:
    async def main() -> tuple[str, str, int]:
        source = tokens(endpoint)
        try:
            return await source.token(), await source.token(), source.fetches
        finally:
            await source.aclose()

    first, second, fetches = run(main())
    assert first == second == "tok-1" and fetches == 1
    [request] = endpoint.requests
    assert request == {"grant_type": "client_credentials", "scope": SCOPE,
                       "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


def test_refreshed_before_expiry(endpoint: TokenServer) -> None:
    endpoint.expires_in = 120
    now = [1000.0]

    async def main() -> list[str]:
        source = tokens(endpoint, refresh_margin=60, clock=lambda: now[0])
        got = [await source.token()]
        now[0] += 59  # 61 s left: still good
        got.append(await source.token())
        now[0] += 2  # 59 s left: inside the margin, fetch early
        got.append(await source.token())
        await source.aclose()
        return got

    assert run(main()) == ["tok-1", "tok-1", "tok-2"]


def test_short_lived_token_is_kept_for_half_its_lifetime(endpoint: TokenServer) -> None:
    # A 60 s token with a 60 s margin would be fetched again for every connection.
    endpoint.expires_in = 60
    now = [1000.0]

    async def main() -> list[str]:
        source = tokens(endpoint, refresh_margin=60, clock=lambda: now[0])
        got = [await source.token()]
        now[0] += 29  # less than half the lifetime gone: cached
        got.append(await source.token())
        now[0] += 2  # past half: fetched again
        got.append(await source.token())
        await source.aclose()
        return got

    assert run(main()) == ["tok-1", "tok-1", "tok-2"]


def test_short_lived_token_really_expires(endpoint: TokenServer) -> None:
    endpoint.expires_in = 2  # refreshed from 1 s on (margin 1 s)

    async def main() -> list[str]:
        source = tokens(endpoint, refresh_margin=1.0)
        first = await source.token()
        second = await source.token()
        await asyncio.sleep(1.05)
        third = await source.token()
        await source.aclose()
        return [first, second, third]

    assert run(main()) == ["tok-1", "tok-1", "tok-2"]


def test_concurrent_callers_share_one_refresh(endpoint: TokenServer) -> None:
    endpoint.delay = 0.2

    async def main() -> list[str]:
        source = tokens(endpoint)
        got = await asyncio.gather(*(source.token() for _ in range(10)))
        await source.aclose()
        return list(got)

    assert run(main()) == ["tok-1"] * 10
    assert len(endpoint.requests) == 1


def test_invalidate_fetches_a_new_token(endpoint: TokenServer) -> None:
    async def main() -> list[str]:
        source = tokens(endpoint)
        first = await source.token()
        source.invalidate("some-other-token")  # not ours: no effect
        second = await source.token()
        source.invalidate(first)
        third = await source.token()
        await source.aclose()
        return [first, second, third]

    assert run(main()) == ["tok-1", "tok-1", "tok-2"]


def test_refused_credentials_raise_with_the_reason(endpoint: TokenServer) -> None:
    async def main() -> None:
        source = tokens(endpoint, secret="wrong")
        try:
            await source.token()
        finally:
            await source.aclose()

    with pytest.raises(OAuthError, match="HTTP 400 invalid_client: AADSTS7000215"):
        run(main())


def test_basic_client_authentication(endpoint: TokenServer) -> None:
    async def main() -> str:
        source = tokens(endpoint, auth_method="basic")
        token = await source.token()
        await source.aclose()
        return token

    assert run(main()) == "tok-1"
    assert endpoint.client_auth == ["basic"]


def test_unreachable_endpoint_raises() -> None:
    from goniec.testing.process import free_port

    async def main() -> None:
        source = ClientCredentialsTokens(f"http://127.0.0.1:{free_port()}/t", "id", "s",
                                         trust_env=False, timeout=2)
        try:
            await source.token()
        finally:
            await source.aclose()

    with pytest.raises(OAuthError, match="ConnectError"):
        run(main())


def test_plain_http_only_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        ClientCredentialsTokens("http://login.example.test/token", "id", "secret")
    for url in ("http://[::1]:8080/t", "http://localhost/t", "https://login.example.test/t"):
        ClientCredentialsTokens(url, "id", "secret", trust_env=False)
