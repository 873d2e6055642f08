"""The manager's pages against a fake Admin: login, CSRF, escaping, every page and button."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from webfakes import EVIL_SUBJECT, FakeAdmin, TestClient, csrf_of, login

from goniec.admin.web import auth, create_app

PAGES = ["/", "/sessions", "/queue", "/queue/Q1", "/settings/general", "/settings/access",
         "/settings/messages", "/settings/delivery", "/settings/domains", "/users", "/logs"]


def test_every_page_needs_a_login(client: TestClient, fake: FakeAdmin) -> None:
    for path in PAGES:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/")
    for path in ("/control/pause", "/sessions/disconnect", "/queue/action", "/users/add",
                 "/settings/general"):
        assert client.post(path, data={}).status_code == 403
    assert fake.calls == []


def test_login_and_every_page(client: TestClient) -> None:
    login(client)
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200, path
        assert 'href="#main"' in r.text and '<main id="main"' in r.text  # skip link
        assert "<script" not in r.text.lower()


def test_wrong_password_and_unknown_user_look_the_same(client: TestClient,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "DELAY_STEP", 0.0)
    answers = []
    for user, pw in (("root", "wrong"), ("nobody", "correct horse")):
        page = client.get("/login")
        r = client.post("/login", data={"csrf": csrf_of(page.text), "username": user,
                                        "password": pw})
        answers.append((r.status_code, re.sub(r'value="[^"]*"', "", r.text)))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and auth.LOGIN_FAILED in answers[0][1]


def test_lockout_after_repeated_failures(client: TestClient,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "DELAY_STEP", 0.0)
    csrf = csrf_of(client.get("/login").text)
    for _ in range(auth.LOCK_AFTER):
        r = client.post("/login", data={"csrf": csrf, "username": "root", "password": "x"})
        assert r.status_code == 401
    r = client.post("/login", data={"csrf": csrf, "username": "root",
                                    "password": "correct horse"})
    assert r.status_code == 429 and "Too many failed logins" in r.text


def test_failed_logins_are_slowed_down() -> None:
    now = [0.0]
    limiter = auth.LoginLimiter(clock=lambda: now[0])
    delays = [limiter.failed("192.0.2.1") for _ in range(4)]
    assert delays == [0.0, 0.25, 0.5, 0.75]
    assert not limiter.locked("192.0.2.1")
    now[0] += auth.FAILS_WINDOW + 1
    assert limiter.failed("192.0.2.1") == 0.0  # old failures forgotten


def test_login_needs_the_csrf_token(client: TestClient) -> None:
    r = client.post("/login", data={"username": "root", "password": "correct horse"})
    assert r.status_code == 403


def test_no_open_redirect_after_login(client: TestClient) -> None:
    page = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(page.text), "username": "root",
                                    "password": "correct horse", "next": "//evil.example/"},
                    follow_redirects=False)
    assert r.headers["location"] == "/"
    for bad in ("https://evil.example", "/\\evil.example", ""):
        assert auth.safe_next(bad) == "/"
    assert auth.safe_next("/queue?state=held") == "/queue?state=held"


def test_session_cookie_attributes(client: TestClient, app_config: Any) -> None:
    page = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(page.text), "username": "root",
                                    "password": "correct horse"}, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert f"max-age={int(app_config.admin.session_lifetime)}" in cookie
    assert "secure" not in cookie  # plain HTTP on loopback; HTTPS adds it (below)


def test_https_cookie_is_secure(fake: FakeAdmin, app_config: Any) -> None:
    cfg = app_config.model_copy(update={"admin": app_config.admin.model_copy(
        update={"web_tls": True})})
    with TestClient(create_app(fake, cfg), base_url="https://127.0.0.1:2580") as c:
        page = c.get("/login")
        r = c.post("/login", data={"csrf": csrf_of(page.text), "username": "root",
                                   "password": "correct horse"}, follow_redirects=False)
        assert "secure" in r.headers["set-cookie"].lower()
        assert "strict-transport-security" in r.headers


def test_login_expires_after_session_lifetime(client: TestClient,
                                              monkeypatch: pytest.MonkeyPatch,
                                              app_config: Any) -> None:
    login(client)
    later = time.time() + app_config.admin.session_lifetime + 5
    monkeypatch.setattr(auth.time, "time", lambda: later)
    r = client.get("/queue", follow_redirects=False)
    assert r.status_code == 303 and "/login" in r.headers["location"]


def test_session_secret_is_private_and_kept(tmp_path: Path) -> None:
    first = auth.session_secret(tmp_path / "d")
    assert auth.session_secret(tmp_path / "d") == first and len(first) >= 32
    assert os.stat(tmp_path / "d" / auth.SECRET_FILE).st_mode & 0o777 == 0o600


def test_csrf_is_checked_on_every_post(client: TestClient, fake: FakeAdmin) -> None:
    csrf = login(client)
    assert client.post("/control/pause", data={}).status_code == 403
    assert client.post("/control/pause", data={"csrf": "forged"}).status_code == 403
    r = client.post("/control/pause", data={"csrf": csrf},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert fake.calls == []
    r = client.post("/control/pause", data={"csrf": csrf})
    assert r.status_code == 200 and "Paused" in r.text and fake.calls == [("pause",)]


def test_attacker_controlled_text_is_shown_as_text(client: TestClient) -> None:
    login(client)
    for path in ("/queue/Q1", "/queue", "/logs?address=x"):
        html = client.get(path).text
        assert "<script" not in html.lower(), path
        assert "<img" not in html.lower(), path
    html = client.get("/queue/Q1").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;b&gt;hello&lt;/b&gt;" in html  # the text preview, too
    assert EVIL_SUBJECT not in html


def test_security_headers(client: TestClient) -> None:
    r = client.get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["cache-control"] == "no-store"
    assert client.get("/static/style.css").status_code == 200


def test_overview_charts_and_controls(client: TestClient, fake: FakeAdmin) -> None:
    csrf = login(client)
    html = client.get("/").text
    assert html.count('<svg class="chart"') == 4 and "<rect" in html
    assert "1h 2m" in html  # uptime 3725 s
    client.post("/control/pause", data={"csrf": csrf})
    html = client.get("/").text
    assert "badge-paused" in html and 'action="/control/resume"' in html
    client.post("/control/resume", data={"csrf": csrf})
    client.post("/control/reload", data={"csrf": csrf})
    assert fake.calls == [("pause",), ("resume",), ("reload",)]


def test_sessions_disconnect(client: TestClient, fake: FakeAdmin) -> None:
    csrf = login(client)
    html = client.get("/sessions").text
    assert "127.0.0.1:50000" in html and "TLSv1.3" in html
    r = client.post("/sessions/disconnect", data={"csrf": csrf, "id": "s1abc"})
    assert "disconnected" in r.text
    r = client.post("/sessions/disconnect", data={"csrf": csrf, "id": "gone"})
    assert "already gone" in r.text


def test_queue_filters_and_bad_filter(client: TestClient, fake: FakeAdmin) -> None:
    login(client)
    client.get("/queue?sender=a&domain=Dest.TEST&state=deferred&min_age=1h")
    flt = fake.calls[-1][1]
    assert (flt.sender, flt.domain, flt.state, flt.min_age) == ("a", "dest.test", "deferred",
                                                                3600.0)
    html = client.get("/queue?min_age=soon").text
    assert "min_age" in html and "flash-error" in html


def test_single_actions_and_confirmation(client: TestClient, fake: FakeAdmin) -> None:
    csrf = login(client)
    r = client.post("/queue/action", data={"csrf": csrf, "action": "retry", "id": "Q1"})
    assert "retry: 1 done" in r.text
    (call,) = [c for c in fake.calls if c[0] == "queue_action"]
    assert call[1] == "retry" and call[2].ids == ("Q1",)
    fake.calls.clear()
    r = client.post("/queue/action", data={"csrf": csrf, "action": "delete", "id": "Q1"})
    assert "Confirm: delete" in r.text and not fake.calls
    r = client.post("/queue/action", data={"csrf": csrf, "action": "delete", "id": "Q1",
                                           "confirm": "1"})
    assert "delete: 1 done" in r.text
    assert [c[1] for c in fake.calls if c[0] == "queue_action"] == ["delete"]


def test_bulk_action_on_the_filter_asks_first(client: TestClient, fake: FakeAdmin) -> None:
    csrf = login(client)
    data = {"csrf": csrf, "action": "hold", "bulk": "1", "domain": "dest.test"}
    r = client.post("/queue/action", data=data)
    assert "Confirm: hold" in r.text and "domain=dest.test" in r.text
    assert not [c for c in fake.calls if c[0] == "queue_action"]
    r = client.post("/queue/action", data={**data, "confirm": "1"})
    action = [c for c in fake.calls if c[0] == "queue_action"][-1]
    assert action[1] == "hold" and action[2].domain == "dest.test" and not action[2].ids
    r = client.post("/queue/action", data={"csrf": csrf, "action": "bounce", "bulk": "1"})
    assert "every message in the queue" in r.text


def test_users_page(client: TestClient, fake: FakeAdmin) -> None:
    csrf = login(client)
    assert "alice" in client.get("/users").text
    r = client.post("/users/add", data={"csrf": csrf, "name": "bob", "password": "pw"})
    assert "User bob added" in r.text and fake.smtp_users["bob"] == "pw"
    r = client.post("/users/add", data={"csrf": csrf, "name": "bob", "password": "pw"})
    assert "already exists" in r.text
    r = client.post("/users/password", data={"csrf": csrf, "name": "bob", "password": "new"})
    assert fake.smtp_users["bob"] == "new"
    r = client.post("/users/delete", data={"csrf": csrf, "name": "bob"})
    assert "Delete user bob?" in r.text and "bob" in fake.smtp_users
    client.post("/users/delete", data={"csrf": csrf, "name": "bob", "confirm": "1"})
    assert "bob" not in fake.smtp_users


def test_logs_page_passes_the_filters(client: TestClient, fake: FakeAdmin) -> None:
    login(client)
    html = client.get("/logs?session=s9&msg=M1&address=a@b.test&text=quit&limit=50").text
    assert fake.calls[-1] == ("log_search", "s9", "M1", "a@b.test", "quit", 50)
    assert "event=quit" in html and "&lt;script&gt;x&lt;/script&gt;" in html


def test_settings_save_reloads_and_errors_show_by_the_field(client: TestClient, fake: FakeAdmin,
                                                            tmp_path: Path) -> None:
    conf = tmp_path / "goniec.toml"
    conf.write_text(f'# mine\n[server]\ndata_dir = "{tmp_path / "data"}"\n')
    fake.source = conf
    csrf = login(client)
    page = client.get("/settings/access").text
    version = re.search(r'name="version" value="([^"]+)"', page)
    assert version and "Saved to" in page
    form = {"csrf": csrf, "version": version.group(1), "relay__networks": "10.0.0.1/8"}
    r = client.post("/settings/access", data=form)
    assert r.status_code == 400 and "has host bits set" in r.text
    assert 'aria-invalid="true"' in r.text and "10.0.0.1/8" in r.text
    assert conf.read_text().startswith("# mine\n") and "relay" not in conf.read_text()
    assert ("reload",) not in fake.calls
    form["relay__networks"] = "127.0.0.0/8\n192.0.2.0/24"
    r = client.post("/settings/access", data=form)
    assert r.status_code == 200 and "reloaded" in r.text
    assert '"192.0.2.0/24"' in conf.read_text() and ("reload",) in fake.calls


def test_settings_read_only_without_a_config_file(client: TestClient, fake: FakeAdmin) -> None:
    csrf = login(client)
    html = client.get("/settings/general").text
    assert "built-in defaults" in html and "<fieldset disabled>" in html
    r = client.post("/settings/general", data={"csrf": csrf, "server__greeting": "x"})
    assert r.status_code == 409 and ("reload",) not in fake.calls


def test_logout(client: TestClient) -> None:
    csrf = login(client)
    client.post("/logout", data={"csrf": csrf})
    assert client.get("/", follow_redirects=False).status_code == 303


def test_openapi_describes_exactly_the_api_routes() -> None:
    from starlette.routing import Route

    from goniec.admin.web import api
    from goniec.admin.web.openapi import spec

    described = {(m.upper(), p) for p, ops in spec()["paths"].items() for m in ops}
    routes = {(m, r.path) for r in api.routes() if isinstance(r, Route)
              for m in (r.methods or ()) if m != "HEAD"}
    assert routes == described
    for path, ops in spec()["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"] or "201" in op["responses"]
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(__import__("re").findall(r"{(\w+)}", path))


def test_api_with_a_token_and_without(client: TestClient, token: str, fake: FakeAdmin) -> None:
    assert client.get("/api/v1/status").status_code == 401
    r = client.get("/api/v1/status", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    r = client.get("/api/v1/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["state"] == "running"
    r = client.get("/api/v1/logs", headers={"Authorization": f"Bearer {token}"})
    assert r.json()["entries"][1].endswith("event=quit")


def test_metrics_from_elsewhere_needs_a_token(fake: FakeAdmin, app_config: Any,
                                              token: str) -> None:
    with TestClient(create_app(fake, app_config), base_url="http://mx.goniec.test",
                    client=("192.0.2.7", 40000)) as c:
        assert c.get("/metrics").status_code == 401
        r = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "goniec_sessions 1" in r.text
    with TestClient(create_app(fake, app_config), client=("127.0.0.1", 40000)) as c:
        assert c.get("/metrics").status_code == 200


def test_a_long_queue_shows_a_page_of_it(client: TestClient, fake: FakeAdmin,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from goniec.admin.web import pages

    login(client)
    monkeypatch.setattr(pages, "PAGE_ROWS", 0)
    html = client.get("/queue").text
    assert "1 message" in html and "Showing the oldest 0" in html
