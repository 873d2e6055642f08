"""Which log folder the privilege drop may hand to the server's user."""

from __future__ import annotations

from pathlib import Path

from goniec.server.privileges import log_folder


def test_own_folder_is_handed_over_a_shared_one_never(tmp_path: Path) -> None:
    own = tmp_path / "goniec"
    own.mkdir()
    log = own / "goniec.log"
    assert log_folder(log) == own  # empty: ours
    for name in ("goniec.log", "goniec.log.1", "goniec.log.2026-11-26", ".__goniec.lock"):
        (own / name).write_text("")
    assert log_folder(log) == own  # the log, its rotated copies, the rotation lock
    shared = tmp_path / "var-log"
    shared.mkdir()
    (shared / "syslog").write_text("")
    assert log_folder(shared / "goniec.log") is None  # /var/log: never changed
    assert log_folder(tmp_path / "missing" / "goniec.log") is None
