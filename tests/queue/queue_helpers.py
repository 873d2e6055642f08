"""Helpers for the queue tests (a module of its own so spawned processes can import it)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from goniec.model import Envelope, MailParams, Recipient, SessionInfo
from goniec.queue import ids
from goniec.queue.api import QueueStore
from goniec.queue.fs import FsQueueStore
from goniec.queue.memory import MemoryQueueStore

SESSION = SessionInfo(session_id="s1", peer_ip="192.0.2.7", peer_port=40000, helo="client.test",
                      esmtp=True, auth_user="alice")


def make_store(kind: str, root: Path) -> QueueStore:
    if kind == "fs":
        return FsQueueStore(root, min_free_space=0, memory_threshold=256 << 10)
    return MemoryQueueStore()


def envelope(*addresses: str, sender: str = "alice@example.org") -> Envelope:
    rcpts = addresses or ("bob@example.net",)
    return Envelope(sender, tuple(Recipient(a) for a in rcpts), MailParams(body="8BITMIME"))


async def put(store: QueueStore, body: bytes = b"Subject: hi\r\n\r\nhello\r\n",
              env: Envelope | None = None) -> str:
    w = store.new_message()
    await w.write(body)
    return await w.commit(env or envelope(), SESSION)


def spool_files(root: Path) -> dict[str, list[str]]:
    """Names in each spool directory, for "nothing was left behind" checks."""
    return {d: sorted(os.listdir(root / d)) for d in ("incoming", "queue", "corrupt")}


# -- run in spawned processes -------------------------------------------------------------

def mint_ids(n: int) -> list[str]:
    return [ids.new_id() for _ in range(n)]


def commit_many(root: str, n: int) -> list[str]:
    async def main() -> list[str]:
        store = FsQueueStore(root, min_free_space=0)
        try:
            return list(await asyncio.gather(*(put(store, b"x: %d\r\n\r\nbody\r\n" % i)
                                                for i in range(n))))
        finally:
            store.close()
    return asyncio.run(main())
