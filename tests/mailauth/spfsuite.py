"""The RFC 7208 SPF test suite (rfc7208-tests.yml from the pyspf sdist), as zones and cases.

The YAML is the openspf.org suite: scenarios, each with its own zone data and
test cases. `fetch_suite()` gets it with pip (`pip download --no-binary :all:
--no-deps pyspf==<installed version>`) into a cache directory, once; the
zone conversion follows pyspf's own runner (test/testspf.py): an "SPF"
record is also published as TXT when the name has no TXT record, "NONE"
values are left out, "TIMEOUT" makes the name time out (here: SERVFAIL,
which check_host() treats the same, RFC 7208 4.4) for types not listed
before it, and names under "error." that are not in the zone time out.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUITE = "rfc7208-tests.yml"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "goniec-tests"


def fetch_suite() -> Path | None:
    """The path of rfc7208-tests.yml, downloading the sdist if needed; None if impossible."""
    override = os.environ.get("GONIEC_SPF_SUITE")
    if override:
        return Path(override) if Path(override).is_file() else None
    version = importlib.metadata.version("pyspf")
    target = cache_dir() / f"pyspf-{version}"
    found = list(target.glob(f"*/test/{SUITE}")) if target.is_dir() else []
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                        "--no-deps", "-d", str(target), f"pyspf=={version}"],
                       check=True, capture_output=True, timeout=180)
    except (subprocess.SubprocessError, OSError):
        return None
    for archive in target.glob("pyspf-*.tar.gz"):
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(f"test/{SUITE}")]
            tar.extractall(target, members=members, filter="data")
    found = list(target.glob(f"*/test/{SUITE}"))
    return found[0] if found else None


@dataclass
class Case:
    name: str
    scenario: str
    host: str
    mailfrom: str
    helo: str
    results: tuple[str, ...]
    explanation: str | None = None
    strict: bool | int = True
    spec: str = ""


@dataclass
class Scenario:
    description: str
    zone: dict[str, list[Any]] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)


def _entries(name: str, items: list[Any]) -> list[Any]:
    """One name's records in the server's format, as testspf.getrdata builds them."""
    out: list[Any] = []
    generated: list[Any] = []
    has_txt = False
    for item in items:
        if not isinstance(item, dict):
            out.append(item)  # "TIMEOUT"
            continue
        for rtype, value in item.items():
            if rtype in ("TXT", "SPF") and isinstance(value, str):
                value = [value]
            if rtype == "TXT":
                has_txt = True
            elif rtype == "SPF":
                generated.append(("TXT", value))
            if value != ["NONE"]:
                out.append((rtype, tuple(value) if rtype == "MX" else value))
    if not has_txt:
        out += generated
    return out


def load(path: Path) -> list[Scenario]:
    scenarios = []
    with path.open("rb") as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            sc = Scenario(doc.get("description", ""))
            for name, items in (doc.get("zonedata") or {}).items():
                sc.zone[name.lower().rstrip(".")] = _entries(name, items)
            for name, t in doc["tests"].items():
                result = t["result"]
                sc.cases.append(Case(
                    name, sc.description, t["host"], t.get("mailfrom", ""), t.get("helo", ""),
                    tuple(result) if isinstance(result, list) else (result,),
                    t.get("explanation"), t.get("strict", True), str(t.get("spec", ""))))
            scenarios.append(sc)
    return scenarios


def missing(name: str) -> list[Any] | None:
    """testspf: a name under "error." that is not in the zone times out."""
    return ["TIMEOUT"] if name.startswith("error.") else None
