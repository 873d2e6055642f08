"""/api/v1 against a real `goniec serve` on loopback: every action, and bad tokens.

One server for the module (web manager on a free loopback port, log file on,
delivery off so queued mail stays put), an admin user and an API token made
with the CLI, and httpx over 127.0.0.1.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from goniec.testing.process import ServerProcess, free_port, make_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("webapi")
    srv = make_server(workdir, admin={"web_listen": f"127.0.0.1:{free_port()}"},
                      server={"log_file": str(workdir / "goniec.log")})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    out = server.cli("token", "add", "tests")
    assert out.returncode == 0, out.stderr
    secret: str = out.stdout.strip().splitlines()[-1].strip()
    assert len(secret) >= 32
    return secret


@pytest.fixture(scope="module")
def api(server: ServerProcess, token: str) -> Iterator[httpx.Client]:
    assert server.web_url
    with httpx.Client(base_url=server.web_url + "/api/v1", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def send(server: ServerProcess, sender: str, rcpt: str, subject: str = "hello") -> None:
    body = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as c:
        c.sendmail(sender, [rcpt], body)


def logtext(server: ServerProcess) -> str:
    path = server.workdir / "goniec.log"
    return path.read_text(errors="replace") if path.exists() else ""


def queued(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = api.get("/queue", params=params)
    assert r.status_code == 200, r.text
    messages: list[dict[str, Any]] = r.json()["messages"]
    return messages


# ------------------------------------------------------------------ authentication


ROUTES = [("GET", "/status"), ("GET", "/sessions"), ("POST", "/sessions/x/disconnect"),
          ("POST", "/pause"), ("POST", "/resume"), ("POST", "/reload"), ("GET", "/queue"),
          ("GET", "/queue/x"), ("POST", "/queue/x/retry"), ("POST", "/queue/actions/hold"),
          ("GET", "/users"), ("POST", "/users"), ("PUT", "/users/x/password"),
          ("DELETE", "/users/x"), ("GET", "/logs")]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"},
                                     {"Authorization": "Basic cm9vdDpwdw=="},
                                     {"Authorization": "Bearer"}],
                         ids=["missing", "wrong", "basic", "empty"])
def test_every_route_refuses_without_a_good_token(server: ServerProcess,
                                                  headers: dict[str, str]) -> None:
    with httpx.Client(base_url=f"{server.web_url}/api/v1", timeout=10) as c:
        for method, path in ROUTES:
            r = c.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"] == "unauthorized"
    # nothing happened: the server still runs, unpaused
    assert "event=paused" not in logtext(server)


def test_the_web_login_cookie_does_not_authorize_the_api(server: ServerProcess) -> None:
    out = server.cli("user", "add", "boss", "--admin", "--password-stdin", input="s3cret pw\n")
    assert out.returncode == 0, out.stderr
    with httpx.Client(base_url=server.web_url or "", timeout=10, follow_redirects=True) as c:
        page = c.get("/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        r = c.post("/login", data={"csrf": csrf, "username": "boss", "password": "s3cret pw"})
        assert r.status_code == 200 and "Overview" in r.text  # logged in (after the redirect)
        assert c.get("/api/v1/status").status_code == 401


def test_openapi_lists_every_route(server: ServerProcess) -> None:
    r = httpx.get(f"{server.web_url}/api/v1/openapi.json", timeout=10)
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.1")
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for method, path in ROUTES:
        templ = (path.replace("/sessions/x/", "/sessions/{session_id}/")
                 .replace("/queue/x/retry", "/queue/{queue_id}/{action}")
                 .replace("/queue/x", "/queue/{queue_id}")
                 .replace("/queue/actions/hold", "/queue/actions/{action}")
                 .replace("/users/x/password", "/users/{name}/password")
                 .replace("/users/x", "/users/{name}"))
        assert (method, templ) in described


# ------------------------------------------------------------------ status and control


def test_status_pause_resume_reload(server: ServerProcess, api: httpx.Client) -> None:
    s = api.get("/status").json()
    assert s["state"] == "running" and s["hostname"] == "mx.goniec.test"
    assert s["listeners"][0]["name"] == "smtp"
    assert api.post("/pause").json() == {"ok": True, "action": "pause"}
    assert api.get("/status").json()["state"] == "paused"
    with smtplib.SMTP(timeout=10) as c:
        code, _ = c.connect("127.0.0.1", server.port)
        assert code == 421
    assert api.post("/resume").status_code == 200
    assert api.get("/status").json()["state"] == "running"
    assert api.post("/reload").status_code == 200
    deadline = time.monotonic() + 10
    while "event=reloaded" not in logtext(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "event=reloaded" in logtext(server)


def test_sessions_and_disconnect(server: ServerProcess, api: httpx.Client) -> None:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    client.ehlo("held-open.client.test")
    try:
        rows = api.get("/sessions").json()["sessions"]
        mine = [r for r in rows if r["helo"] == "held-open.client.test"]
        assert len(mine) == 1 and mine[0]["client"].startswith("127.0.0.1:")
        r = api.post(f"/sessions/{mine[0]['id']}/disconnect")
        assert r.status_code == 200 and r.json() == {"disconnected": mine[0]["id"]}
        with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
            client.noop()
            client.noop()
    finally:
        client.close()
    missing = api.post("/sessions/no-such-session/disconnect")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


# ------------------------------------------------------------------ queue


def test_queue_list_show_and_each_action(server: ServerProcess, api: httpx.Client) -> None:
    send(server, "alice@goniec.test", "one@remote.example", "first")
    send(server, "bob@goniec.test", "two@other.example", "second")
    everything = queued(api)
    assert len(everything) >= 2
    (one,) = queued(api, sender="alice@", recipient="one@")
    assert queued(api, domain="other.example")[0]["sender"] == "bob@goniec.test"
    assert queued(api, min_age="1d") == []
    assert api.get("/queue", params={"state": "bogus"}).status_code == 400

    view = api.get(f"/queue/{one['id']}").json()
    assert ["Subject", "first"] in view["headers"]
    assert view["recipients"][0]["address"] == "one@remote.example"
    assert api.get("/queue/NOSUCHID").status_code == 404

    qid = one["id"]
    r = api.post(f"/queue/{qid}/hold").json()
    assert r["done"] == [qid]
    assert queued(api, state="held")[0]["id"] == qid
    assert api.post(f"/queue/{qid}/release").json()["done"] == [qid]
    assert api.post(f"/queue/{qid}/retry").json()["action"] == "retry"
    assert api.post(f"/queue/{qid}/frobnicate").status_code == 404
    assert api.post(f"/queue/{qid}/delete").json()["done"] == [qid]
    assert api.get(f"/queue/{qid}").status_code == 404


def test_bulk_actions_need_a_filter_or_all(server: ServerProcess, api: httpx.Client) -> None:
    send(server, "carol@goniec.test", "x@bulk.example")
    send(server, "carol@goniec.test", "y@bulk.example")
    r = api.post("/queue/actions/hold", json={})
    assert r.status_code == 400 and r.json()["error"] == "empty_filter"
    assert api.post("/queue/actions/hold", content=b"not json").status_code == 400
    r = api.post("/queue/actions/hold", json={"domain": "bulk.example"}).json()
    assert len(r["done"]) == 2
    r = api.post("/queue/actions/bounce", json={"domain": "bulk.example", "state": "held"})
    assert len(r.json()["done"]) == 2
    assert queued(api, domain="bulk.example") == []
    # the bounce reports went to carol's local domain, and can be cleared with all=true
    r = api.post("/queue/actions/delete", json={"all": True}).json()
    assert r["action"] == "delete"
    assert queued(api) == []


# ------------------------------------------------------------------ users and logs


def test_users_add_password_delete(api: httpx.Client) -> None:
    assert api.post("/users", json={"name": "dave", "password": "pw1"}).status_code == 201
    assert "dave" in api.get("/users").json()["users"]
    assert api.post("/users", json={"name": "dave", "password": "pw"}).status_code == 409
    assert api.post("/users", json={"name": "bad name", "password": "pw"}).status_code == 400
    assert api.post("/users", json={"name": "eve"}).status_code == 400
    assert api.put("/users/dave/password", json={"password": "pw2"}).status_code == 200
    assert api.put("/users/nobody/password", json={"password": "x"}).status_code == 404
    assert api.delete("/users/dave").status_code == 200
    assert api.delete("/users/dave").status_code == 404
    assert "dave" not in api.get("/users").json()["users"]


def test_logs_search(server: ServerProcess, api: httpx.Client) -> None:
    send(server, "frank@goniec.test", "z@logs.example")
    (msg,) = queued(api, domain="logs.example")
    deadline = time.monotonic() + 10
    entries: list[Any] = []
    while time.monotonic() < deadline and not entries:
        entries = api.get("/logs", params={"msg": msg["id"]}).json()["entries"]
        time.sleep(0.1)
    assert entries and all(msg["id"] in str(e) for e in entries)
    assert api.get("/logs", params={"limit": "0"}).status_code == 400
    assert api.get("/logs", params={"limit": "x"}).status_code == 400


def test_metrics_open_on_loopback(server: ServerProcess) -> None:
    r = httpx.get(f"{server.web_url}/metrics", timeout=10)
    assert r.status_code == 200 and "goniec_" in r.text
    assert r.headers["content-type"].startswith("text/plain")


def test_security_headers_on_api_and_pages(server: ServerProcess) -> None:
    for path in ("/api/v1/status", "/login"):
        r = httpx.get(f"{server.web_url}{path}", timeout=10)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "script-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"


def test_unknown_api_route_is_json_404(api: httpx.Client) -> None:
    r = api.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = api.delete("/status")
    assert r.status_code == 405 and "error" in r.json()


def test_https_manager_with_the_servers_certificate(tmp_path_factory: pytest.TempPathFactory,
                                                    server_cert: tuple[Path, Path]) -> None:
    workdir = tmp_path_factory.mktemp("webtls")
    cert, key = server_cert
    srv = make_server(workdir, tls={"certificate": str(cert), "key": str(key)},
                      admin={"web_listen": f"127.0.0.1:{free_port()}", "web_tls": True})
    srv.start()
    try:
        assert srv.cli("user", "add", "boss", "--admin", "--password-stdin",
                       input="pw\n").returncode == 0
        base = (srv.web_url or "").replace("http://", "https://")
        with httpx.Client(base_url=base, verify=False, timeout=10) as c:  # the test CA
            page = c.get("/login")
            assert page.status_code == 200
            assert page.headers["strict-transport-security"].startswith("max-age=")
            csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
            r = c.post("/login", data={"csrf": csrf, "username": "boss", "password": "pw"})
            assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{srv.web_url}/login", timeout=5)  # plain HTTP is not served
    finally:
        srv.stop()
