"""OAuth2 smart-host login from the config: validation and the route it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from goniec.config import load_config
from goniec.config.delivery import DeliverySection
from goniec.delivery.destination import OAuth2Login, PasswordLogin
from goniec.delivery.oauth import ClientCredentialsTokens
from goniec.delivery.service import routing_table
from goniec.policy.build import build_rules
from goniec.policy.domains import Domains


def section(tmp_path: Path, **kw: object) -> DeliverySection:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    base: dict[str, object] = {
        "smart_host": "[127.0.0.1]:2587", "smart_host_tls": "verify",
        "smart_host_username": "relay@goniec.test",
        "smart_host_oauth_token_url": "https://login.example/tenant/oauth2/v2.0/token",
        "smart_host_oauth_client_id": "app-id",
        "smart_host_oauth_client_secret_file": str(secret),
        "smart_host_oauth_scope": "https://outlook.office365.example/.default",
    }
    base.update(kw)
    return DeliverySection.model_validate(base)


def test_oauth_settings_build_a_token_login(tmp_path: Path) -> None:
    table = routing_table(section(tmp_path), _domains())
    login = table.smart_host_route.login
    assert isinstance(login, OAuth2Login)
    assert login.username == "relay@goniec.test"
    assert isinstance(login.tokens, ClientCredentialsTokens)
    assert login.tokens.token_url.startswith("https://login.example/")


def test_password_login_still_works(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    table = routing_table(section(tmp_path, smart_host_oauth_token_url="",
                                  smart_host_oauth_client_id="",
                                  smart_host_oauth_client_secret_file="",
                                  smart_host_password_file=str(pw)), _domains())
    assert isinstance(table.smart_host_route.login, PasswordLogin)


@pytest.mark.parametrize(("changes", "message"), [
    ({"smart_host_oauth_token_url": "http://login.example/token"}, "https://"),
    ({"smart_host_oauth_client_id": ""}, "smart_host_oauth_client_id"),
    ({"smart_host_password_file": "pw"}, "not both"),
    ({"smart_host_username": ""}, "smart_host_username"),
])
def test_bad_oauth_settings_are_refused(tmp_path: Path, changes: dict[str, object],
                                        message: str) -> None:
    (tmp_path / "pw").write_text("x\n")
    changes = {k: (str(tmp_path / v) if k.endswith("_file") and v else v)
               for k, v in changes.items()}
    with pytest.raises((ValidationError, ValueError)) as err:
        section(tmp_path, **changes)
    assert message in str(err.value)


def _domains() -> Domains:
    """The domains of the built-in default config, built by the real rule builder."""
    return build_rules(load_config(None)).domains
