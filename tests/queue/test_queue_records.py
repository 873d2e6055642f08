"""The envelope record format (pure) and queue ids."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from queue_helpers import SESSION, envelope

from goniec.model import Envelope, MailParams, Recipient
from goniec.queue import ids, records
from goniec.queue.records import RecipientState, RecipientStatus, RecordError

QID = ids.new_id(1_700_000_000.0)


def sample(n: int = 2) -> records.QueuedMessage:
    env = envelope(*(f"r{i}@example.net" for i in range(n)))
    return records.new_message(QID, 1_700_000_000.25, env, SESSION, 1234)


def test_format_shape() -> None:
    text = records.format_record(sample()).decode("ascii")
    lines = text.split("\n")
    assert lines[0] == "goniec-envelope 1"
    assert lines[-2:] == ["end 2", ""]
    head = json.loads(lines[1])
    assert head["id"] == QID and head["size"] == 1234 and head["session"] == "s1"
    rcpt = json.loads(lines[2])
    assert rcpt == {"rcpt": "r0@example.net", "notify": None, "orcpt": None,
                    "status": "pending", "attempts": 0, "next_attempt": 0.0,
                    "last_reply": ""}


def test_round_trip() -> None:
    msg = sample(3)
    assert records.parse_record(records.format_record(msg)) == msg


text_st = st.text(max_size=40)
recipient_st = st.builds(
    Recipient, text_st,
    st.none() | st.frozensets(st.sampled_from(["NEVER", "SUCCESS", "FAILURE", "DELAY"])),
    st.none() | text_st,
)
state_st = st.builds(
    RecipientState, recipient_st, st.sampled_from(list(RecipientStatus)),
    st.integers(0, 10**6), st.floats(0, 4e9, allow_nan=False), text_st,
)
params_st = st.builds(
    MailParams, st.none() | st.integers(0, 10**12), st.none() | st.sampled_from(["7BIT", "8BITMIME"]),
    st.booleans(), st.none() | st.sampled_from(["FULL", "HDRS"]), st.none() | text_st,
    st.none() | text_st,
)


@given(st.lists(state_st, min_size=1, max_size=5), params_st, text_st,
       st.floats(0, 4e9, allow_nan=False), st.integers(0, 10**12),
       st.builds(records.SubmissionInfo, text_st, text_st, st.none() | text_st,
                 st.none() | text_st))
def test_round_trip_property(states: list[RecipientState], params: MailParams, sender: str,
                             created: float, size: int, info: records.SubmissionInfo) -> None:
    env = Envelope(sender, tuple(s.recipient for s in states), params)
    msg = records.QueuedMessage(QID, created, env, tuple(states), info, size)
    data = records.format_record(msg)
    data.decode("ascii")  # always plain ASCII on disk
    assert records.parse_record(data) == msg


def test_every_truncation_is_refused() -> None:
    data = records.format_record(sample(3))
    for n in range(len(data)):
        with pytest.raises(RecordError):
            records.parse_record(data[:n])


@pytest.mark.parametrize("mutate", [
    lambda t: t.replace("goniec-envelope 1", "goniec-envelope 2"),
    lambda t: t.replace("goniec-envelope 1", "something-else 1"),
    lambda t: t.replace("end 2", "end 3"),
    lambda t: t.replace("end 2", "fin 2"),
    lambda t: t + "extra\n",
    lambda t: t.replace('"pending"', '"lost"', 1),
    lambda t: t.replace('"attempts":0', '"attempts":-1', 1),
    lambda t: t.replace('"attempts":0', '"attempts":true', 1),
    lambda t: t.replace('"attempts":0', '"attempts":"0"', 1),
    lambda t: t.replace('"size":1234', '"size":12.5', 1),
    lambda t: t.replace('"rcpt":', '"to":', 1),
    lambda t: t.replace('"notify":null', '"notify":[1]', 1),
    lambda t: t.replace('"params":{', '"params":[{', 1).replace('"auth":null}', '"auth":null}]'),
    lambda t: t.replace(f'"id":"{QID}"', '"id":"../../etc"'),
    lambda t: t.replace('{"rcpt"', '["rcpt"', 1),
    lambda t: t.replace('{"rcpt"', '{rcpt', 1),
])
def test_malformed_records_are_refused(mutate: object) -> None:
    text = records.format_record(sample()).decode()
    assert callable(mutate)
    bad = mutate(text)
    assert bad != text
    with pytest.raises(RecordError):
        records.parse_record(bad.encode())


def test_non_ascii_and_garbage_are_refused() -> None:
    for data in (b"", b"\n", b"\xff\xfe", "goniec-envelope 1\n\u00e9\nend 0\n".encode()):
        with pytest.raises(RecordError):
            records.parse_record(data)


def test_apply_updates_keeps_identity() -> None:
    msg = sample(2)
    new = dataclasses.replace(msg.recipients[0], status=RecipientStatus.DELIVERED)
    out = records.apply_updates(msg, {0: new})
    assert out.recipients == (new, msg.recipients[1])
    assert out.envelope == msg.envelope
    with pytest.raises(ValueError):
        records.apply_updates(msg, {-1: new})
    with pytest.raises(ValueError):
        records.apply_updates(msg, {1: new})


def test_status_finality() -> None:
    assert {s for s in RecipientStatus if s.is_final} == {RecipientStatus.DELIVERED,
                                                          RecipientStatus.FAILED}


# -- ids ----------------------------------------------------------------------------------

def test_id_shape() -> None:
    qid = ids.new_id()
    assert len(qid) == ids.ID_LENGTH == 23
    assert set(qid) <= set(ids.ALPHABET)
    assert ids.is_valid(qid)


def test_forked_processes_and_global_seeding_do_not_repeat_ids() -> None:
    import os
    import random

    random.seed(0)  # what a test framework may do: the ids must not follow it
    a = ids.new_id(1.0)
    random.seed(0)
    assert ids.new_id(1.0) != a
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: same parent state before the fork, reseeded after it
        os.write(write, ids.new_id(1.0).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert ids.is_valid(child) and child != ids.new_id(1.0)


def test_ids_sort_by_time() -> None:
    times = [0.0, 0.001, 1.0, 1_700_000_000.123, 1_700_000_000.124, 4e9, 2**48 / 1000 - 0.001]
    qids = [ids.new_id(t) for t in times]
    assert sorted(qids) == qids
    assert [ids.id_time(q) for q in qids] == pytest.approx(times, abs=0.001)


@pytest.mark.parametrize("bad", ["", "x", "0" * 22, "0" * 24, "0" * 22 + "u", "0" * 22 + "A",
                                 "../" + "0" * 20, 123, None])
def test_invalid_ids(bad: object) -> None:
    assert not ids.is_valid(bad)
    if isinstance(bad, str):
        with pytest.raises(ValueError):
            ids.id_time(bad)


def test_held_is_written_only_when_set() -> None:
    msg = records.new_message(ids.new_id(), 1.0, envelope(), SESSION, 5)
    plain = records.format_record(msg)
    assert b"held" not in plain  # older readers see exactly what they always saw
    held = records.with_hold(msg, True, "dmarc quarantine")
    data = records.format_record(held)
    head = json.loads(data.split(b"\n")[1])
    assert head["held"] is True and head["hold_reason"] == "dmarc quarantine"
    assert records.parse_record(data) == held
    assert records.parse_record(plain) == msg and not msg.held
    released = records.with_hold(held, False, "ignored")
    assert released == msg
    bad = data.replace(b'"held":true', b'"held":1')
    with pytest.raises(RecordError):
        records.parse_record(bad)
