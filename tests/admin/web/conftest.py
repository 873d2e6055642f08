"""Fixtures of the web manager tests: a fake Admin facade, an app around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from goniec.admin.web import create_app
from goniec.config.load import load_config

from webfakes import FakeAdmin, TestClient  # isort: skip


@pytest.fixture
def fake(tmp_path: Path) -> FakeAdmin:
    admin = FakeAdmin(tmp_path)
    admin.admins.add("root", "correct horse")
    return admin


@pytest.fixture
def token(fake: FakeAdmin) -> str:
    secret: str = fake.tokens.add("ci")
    return secret


@pytest.fixture
def app_config(tmp_path: Path) -> Any:
    path = tmp_path / "goniec.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nhostname = "mx.goniec.test"\n')
    return load_config(path)


@pytest.fixture
def client(fake: FakeAdmin, app_config: Any) -> Iterator[TestClient]:
    with TestClient(create_app(fake, app_config), base_url="http://127.0.0.1:2580") as c:
        yield c
