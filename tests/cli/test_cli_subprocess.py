"""The installed `goniec` console script, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from goniec import __version__


def goniec_script() -> str:
    beside = Path(sys.executable).with_name("goniec")
    if beside.exists():
        return str(beside)
    found = shutil.which("goniec")
    if found is None:
        pytest.skip("the goniec console script is not installed")
    return found


def goniec(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess[str]:  # noqa: A002
    env = {k: v for k, v in os.environ.items() if k != "GONIEC_CONFIG"}
    return subprocess.run([goniec_script(), *args], cwd=cwd, input=input, capture_output=True,
                          text=True, timeout=60, env=env, check=False)


def test_version(tmp_path: Path) -> None:
    result = goniec("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"goniec {__version__}"


def test_config_check_good_and_bad(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text('[server]\nhostname = "mx.example.test"\n')
    (tmp_path / "bad.toml").write_text('[[listeners]]\nname = "smtp"\naddress = "0.0.0.0:25"\ntls = "yes"\n')
    good = goniec("config", "check", "-c", "good.toml", cwd=tmp_path)
    assert good.returncode == 0 and 'hostname = "mx.example.test"' in good.stdout
    bad = goniec("config", "check", "-c", "bad.toml", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == (
        'bad.toml:4: listeners[0].tls: must be one of "none", "starttls", "implicit" (got "yes")\n'
    )


def test_user_add_and_queue_list(tmp_path: Path) -> None:
    added = goniec("user", "add", "alice", "--password-stdin", cwd=tmp_path, input="pw\n")
    assert added.returncode == 0, added.stderr
    assert goniec("user", "list", cwd=tmp_path).stdout == "alice\n"
    users = tmp_path / "goniec-data" / "users"
    assert users.stat().st_mode & 0o777 == 0o600
    listed = goniec("queue", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
