"""Fixtures for the queue tests: `store` runs a test once per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_helpers import make_store

from goniec.queue.api import QueueStore
from goniec.queue.fs import FsQueueStore


@pytest.fixture(params=["fs", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueStore]:
    s = make_store(request.param, tmp_path / "spool")
    yield s
    s.close()


@pytest.fixture
def fs_store(tmp_path: Path) -> Iterator[FsQueueStore]:
    s = FsQueueStore(tmp_path / "spool", min_free_space=0, memory_threshold=256 << 10)
    yield s
    s.close()
