"""Helpers of the web manager tests: a fake Admin facade, logins, CSRF tokens.

A module of its own (not conftest.py) so that test modules can import it by a
name no other test folder uses.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

with warnings.catch_warnings():  # Starlette 1.x nudges towards httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["EVIL_SUBJECT", "FakeAdmin", "TestClient", "csrf_of", "login"]

from goniec.admin.contract import ActionResult, ListenerRow, QueueFilter, SessionRow, Status
from goniec.admin.tokens import TokenStore
from goniec.admin.users import UserError, UserStore
from goniec.queue.api import MessageNotFound

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
EVIL_SUBJECT = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class FakeAdmin:
    """The facade's methods, recording calls; enough state for every page."""

    def __init__(self, workdir: Path) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.state = "running"
        self.smtp_users: dict[str, str] = {"alice": "pw"}
        self.admins = UserStore(workdir / "admin-users", FAST)
        self.tokens = TokenStore(workdir / "admin-tokens")
        self.source: Path | None = None

    async def admin_user_check(self, name: str, password: str) -> bool:
        return bool(self.admins.verify(name, password))

    def token_check(self, secret: str) -> str | None:
        found: str | None = self.tokens.check(secret)
        return found

    async def status(self) -> Status:
        return Status(state=self.state, version="0.1.0", hostname="mx.goniec.test", pid=42,
                      started="2026-11-26T16:00:00Z", uptime=3725.0, workers=1,
                      listeners=[ListenerRow("smtp", "127.0.0.1:2525", "starttls", "optional")],
                      sessions=1, queue_messages=2, queue_deferred=1, queue_held=0,
                      queue_oldest_age=600.0,
                      last_hour={"received": 12, "delivered": 9, "deferred": 2, "failed": 1},
                      per_minute={"received": [0] * 50 + [1, 2, 3, 0, 0, 1, 2, 1, 1, 1],
                                  "delivered": [0] * 60, "deferred": [], "failed": [1]})

    async def sessions(self) -> list[SessionRow]:
        return [SessionRow("s1abc", 0, "smtp", "127.0.0.1:50000", "client.test", "", "TLSv1.3",
                           "idle", "2026-11-26T16:00:00Z", 12.5, 0)]

    async def disconnect(self, session_id: str) -> bool:
        self.calls.append(("disconnect", session_id))
        return session_id == "s1abc"

    async def pause(self) -> None:
        self.calls.append(("pause",))
        self.state = "paused"

    async def resume(self) -> None:
        self.calls.append(("resume",))
        self.state = "running"

    async def reload(self) -> None:
        self.calls.append(("reload",))

    async def stop(self) -> None:
        self.calls.append(("stop",))

    async def queue_list(self, flt: QueueFilter) -> list[dict[str, Any]]:
        self.calls.append(("queue_list", flt))
        return [{"id": "Q1", "created": "2026-11-26T16:00:00Z", "size": 300,
                 "sender": EVIL_SUBJECT, "held": False, "hold_reason": "",
                 "recipients": [{"address": "bob@dest.test", "status": "deferred",
                                 "attempts": 2, "next_attempt": "2026-11-26T17:00:00Z",
                                 "last_reply": "451 4.4.1 connection refused"}]}]

    async def queue_show(self, queue_id: str) -> dict[str, Any]:
        if queue_id != "Q1":
            raise MessageNotFound(queue_id)
        return {"id": "Q1", "created": "2026-11-26T16:00:00Z", "size": 300, "sender": "a@b.test",
                "held": False, "hold_reason": "", "state": "deferred",
                "submitted": {"session": "s1abc", "peer_ip": "127.0.0.1"},
                "recipients": (await self.queue_list(QueueFilter()))[0]["recipients"],
                "headers": [["Subject", EVIL_SUBJECT], ["X-Evil", "</td><script>x()</script>"]],
                "parts": [{"content_type": "text/html", "charset": "utf-8", "filename": None,
                           "disposition": None, "size": 40, "depth": 0}],
                "preview": {"content_type": "text/plain", "charset": "utf-8",
                            "text": "<b>hello</b>", "truncated": False},
                "partial": False, "notes": [],
                "trail": [{"time": "2026-11-26T16:00:00Z", "event": "received", "size": "300"}]}

    async def queue_action(self, action: str, flt: QueueFilter) -> ActionResult:
        self.calls.append(("queue_action", action, flt))
        return ActionResult(action, done=list(flt.ids) or ["Q1"])

    async def metrics_text(self) -> str:
        return "# TYPE goniec_sessions gauge\ngoniec_sessions 1\n"

    async def log_search(self, *, session: str = "", msg: str = "", address: str = "",
                         text: str = "", limit: int = 200) -> list[Any]:
        self.calls.append(("log_search", session, msg, address, text, limit))
        return [{"time": "2026-11-26T16:00:00Z", "level": "info", "event": "connect",
                 "session": session or "s1abc", "client": "<script>x</script>"},
                "2026-11-26T16:00:01Z info goniec.server event=quit"]

    async def users_list(self) -> list[str]:
        return sorted(self.smtp_users)

    async def user_add(self, name: str, password: str) -> None:
        if name in self.smtp_users:
            raise UserError(f"user {name!r} already exists")
        self.smtp_users[name] = password

    async def user_set_password(self, name: str, password: str) -> None:
        if name not in self.smtp_users:
            raise UserError(f"no such user: {name!r}")
        self.smtp_users[name] = password

    async def user_delete(self, name: str) -> None:
        if self.smtp_users.pop(name, None) is None:
            raise UserError(f"no such user: {name!r}")


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def login(client: TestClient, user: str = "root", password: str = "correct horse") -> str:
    """Log in; returns the CSRF token of the session."""
    page = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(page.text), "username": user,
                                    "password": password, "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/").text)
