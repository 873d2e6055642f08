"""admin.service: queue rows for `goniec queue list`, and the user store for a config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goniec.admin.service import iso_time, open_users, queue_rows
from goniec.config import load_config
from goniec.model import Envelope, Recipient

records = pytest.importorskip("goniec.queue.records")


def message(qid: str, sender: str, *states: object) -> object:
    rcpts = tuple(s.recipient for s in states)  # type: ignore[attr-defined]
    return records.QueuedMessage(
        id=qid,
        created=1_795_000_000.0,
        envelope=Envelope(sender, rcpts),
        recipients=states,
        info=records.SubmissionInfo("s1", "127.0.0.1"),
        size=1234,
    )


def test_queue_rows() -> None:
    status = records.RecipientStatus
    msg = message(
        "Q1", "",
        records.RecipientState(Recipient("a@example.test")),
        records.RecipientState(Recipient("b@example.test"), status.DEFERRED, 2, 1_795_000_600.0,
                               "451 4.4.1 timeout"),
    )
    [row] = queue_rows([msg])  # type: ignore[list-item]
    assert (row.id, row.created, row.size, row.sender) == ("Q1", iso_time(1_795_000_000.0), 1234, "")
    assert row.created.endswith("Z")
    a, b = row.recipients
    assert (a.address, a.status, a.attempts, a.next_attempt) == ("a@example.test", "pending", 0, None)
    assert (b.status, b.attempts, b.last_reply) == ("deferred", 2, "451 4.4.1 timeout")
    assert b.next_attempt == iso_time(1_795_000_600.0)
    data = json.loads(json.dumps(row.to_json()))
    assert data["recipients"][1]["status"] == "deferred"
    assert (data["held"], data["hold_reason"]) == (False, "")
    held = records.with_hold(msg, True, "dmarc quarantine")  # type: ignore[arg-type]
    [row] = queue_rows([held])
    assert (row.to_json()["held"], row.to_json()["hold_reason"]) == (True, "dmarc quarantine")


def test_open_users(tmp_path: Path) -> None:
    path = tmp_path / "goniec.toml"
    path.write_text('[server]\ndata_dir = "d"\n')
    config = load_config(path)
    assert open_users(config).path == tmp_path / "d" / "users"
