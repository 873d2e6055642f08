"""The in-memory backend's own knob: a capacity, to test "disk full" paths above the queue."""

from __future__ import annotations

import asyncio

import pytest
from queue_helpers import SESSION, envelope

from goniec.errors import SMTPError
from goniec.queue.memory import MemoryQueueStore


def test_capacity_gives_452() -> None:
    store = MemoryQueueStore(capacity=100)

    async def main() -> None:
        w = store.new_message()
        await w.write(b"x" * 60)
        await w.commit(envelope(), SESSION)
        w2 = store.new_message()
        with pytest.raises(SMTPError) as info:
            await w2.write(b"y" * 60)
        assert (info.value.reply.code, info.value.reply.enhanced) == (452, "4.3.1")
        with pytest.raises(SMTPError):
            await w2.commit(envelope(), SESSION)
        await w2.abort()

    asyncio.run(main())
    assert len(list(store.list_messages())) == 1
    assert store.free_space_ok(40) and not store.free_space_ok(41)
