"""admin.service.Admin without a running server: queue and files work, live actions say why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from goniec.admin.contract import QueueFilter
from goniec.admin.service import Admin, ServerDown
from goniec.admin.tokens import TokenError
from goniec.admin.users import UserError
from goniec.config import load_config
from goniec.model import Envelope, Recipient
from goniec.obs import trail
from goniec.queue.memory import MemoryQueueStore
from goniec.queue.records import SubmissionInfo


def cheap() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_admin_without_a_server(tmp_path: Path) -> None:
    path = tmp_path / "goniec.toml"
    path.write_text('[server]\ndata_dir = "d"\nhostname = "mx.goniec.test"\n')
    config = load_config(path)
    store = MemoryQueueStore()
    admin = Admin(config, path, store, None, hasher=cheap())

    async def main() -> None:
        writer = store.new_message()
        await writer.write(b"Subject: hi\r\n\r\nbody\r\n")
        qid = await writer.commit(Envelope("s@example.test", (Recipient("a@example.test"),)),
                                  SubmissionInfo("s1", "127.0.0.1"))
        rows = await admin.queue_list(QueueFilter())
        assert [r.id for r in rows] == [qid]
        assert await admin.queue_list(QueueFilter(recipient="nobody@")) == []
        view = await admin.queue_show(qid)
        assert view.id == qid and tuple(view.trail) == ()  # nothing happened to it yet
        status = await admin.status()
        assert (status.state, status.pid, status.queue_messages) == ("stopped", 0, 1)
        for live in (admin.pause(), admin.resume(), admin.reload(), admin.stop(),
                     admin.sessions(), admin.disconnect("x"), admin.metrics_text()):
            with pytest.raises(ServerDown, match="not running"):
                await live
        result = await admin.queue_action("hold", QueueFilter(ids=(qid,)))
        assert result.done == [qid]
        trail.current().flush()
        assert [e["event"] for e in await admin.trail(qid)] == ["held"]
        # No log file (stderr): a message id still finds its trail; anything else says why.
        [entry] = await admin.log_search(msg=qid)
        assert entry["logger"] == "trail" and entry["event"] == "held"
        assert entry["fields"]["by"] == "admin"
        with pytest.raises(ValueError, match="stderr"):
            await admin.log_search(text="x")
        # SMTP users and the manager's users are separate files
        await admin.user_add("alice", "pw1")
        await admin.admin_user_add("root", "pw2")
        assert await admin.users_list() == ["alice"]
        assert await admin.admin_users_list() == ["root"]
        assert await admin.admin_user_check("root", "pw2")
        assert not await admin.admin_user_check("alice", "pw1")
        await admin.admin_user_set_password("root", "pw3")
        assert await admin.admin_user_check("root", "pw3")
        with pytest.raises(UserError):
            await admin.user_set_password("bob", "x")
        await admin.user_delete("alice")
        await admin.admin_user_delete("root")
        assert await admin.users_list() == [] == await admin.admin_users_list()
        secret = await admin.token_add("ci")
        assert await admin.token_check(secret) == "ci"
        assert [t.name for t in await admin.token_list()] == ["ci"]
        await admin.token_delete("ci")
        assert await admin.token_check(secret) is None
        with pytest.raises(TokenError):
            await admin.token_delete("ci")

    try:
        asyncio.run(main())
    finally:
        trail.set_current(None)  # trail_from_config made this test's the process trail
    assert (tmp_path / "d" / "admin-users").exists() and (tmp_path / "d" / "admin-tokens").exists()
