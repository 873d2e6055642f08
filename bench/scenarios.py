"""Benchmark scenarios and how one is run against one started server.

Owns: the scenario matrix (sessions x size x connection mode, plus the huge
message and the idle-connections scenarios), driving the load with Postfix's
smtp-source when installed (else bench/loadgen.py), timing it, sampling the
server's memory, and checking the server-side count of accepted messages.

smtp-source flags used (see `man smtp-source`, Postfix 3.7): -s parallel
sessions, -m total messages, -l body length in octets, -d "don't disconnect"
(many messages per connection; without it, one connection per message),
-f/-t envelope sender/recipient, -M the HELO name. It sends HELO, not EHLO, and
does not pipeline; it exits non-zero at the first unexpected reply.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import loadgen
import procmem
from servers import HOST, Server

KB = 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "load" | "big" | "idle"
    sessions: int = 1
    size: int = KB
    count: int = 1
    reuse: bool = False

    @property
    def target(self) -> str:
        if self.kind == "load" and self.size <= KB and self.sessions == 10:
            return ">=2x postfix"
        if self.kind == "load" and self.size >= 100 * KB:
            return ">=1x postfix"
        if self.kind == "big":
            return "peak RSS <100 MB"
        if self.kind == "idle":
            return "probe gets through"
        return ""


def matrix(
    small: int, large: int, big_mb: int, idle: int, sessions: tuple[int, ...] = (1, 10, 50)
) -> list[Scenario]:
    out = []
    for size, count, label in ((KB, small, "1KB"), (100 * KB, large, "100KB")):
        for s in sessions:
            for reuse in (False, True):
                mode = "reuse" if reuse else "newconn"
                out.append(Scenario(f"{label}/s{s}/{mode}", "load", s, size, count, reuse))
    out.append(Scenario(f"big/{big_mb}MB", "big", 1, big_mb * MiB, 1))
    out.append(Scenario(f"idle/{idle}", "idle", idle, KB, 1))
    return out


def smtp_source_cmd(port: int, sc: Scenario, count: int) -> list[str]:
    cmd = [
        "smtp-source", "-s", str(sc.sessions), "-m", str(count), "-l", str(sc.size),
        "-f", loadgen.SENDER, "-t", loadgen.RCPT, "-M", loadgen.HELO,
    ]  # fmt: skip
    if sc.reuse:
        cmd.append("-d")
    return [*cmd, f"{HOST}:{port}"]


def drive(port: int, sc: Scenario, count: int, tool: str, timeout: float) -> dict[str, Any]:
    """Send `count` messages as the scenario says; returns client-side figures."""
    if tool == "smtp-source":
        start = time.perf_counter()
        try:
            run = subprocess.run(
                smtp_source_cmd(port, sc, count), capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return {"seconds": time.perf_counter() - start, "client_ok": None,
                    "errors": [f"smtp-source timed out after {timeout:.0f}s"]}  # fmt: skip
        seconds = time.perf_counter() - start
        err = (run.stderr + run.stdout).decode(errors="replace").strip()
        ok = count if run.returncode == 0 else None
        return {"seconds": seconds, "client_ok": ok,
                "errors": [err[-300:]] if run.returncode else []}  # fmt: skip
    res = loadgen.run(loadgen.run_load(HOST, port, sc.sessions, sc.size, count, sc.reuse, timeout))
    return {"seconds": res.seconds, "client_ok": res.accepted, "errors": res.errors}


def pick_tool(requested: str) -> str:
    if requested == "auto":
        return "smtp-source" if shutil.which("smtp-source") else "loadgen"
    if requested == "smtp-source" and not shutil.which("smtp-source"):
        raise SystemExit("smtp-source not found (apt-get install postfix)")
    return requested


def run_scenario(
    server: Server, sc: Scenario, tool: str, timeout: float, rounds: int = 1, budget: float = 20.0
) -> dict[str, Any]:
    """Run one scenario against an already started server."""
    if server.files_per_message is None:
        server.calibrate(lambda: drive(server.port, Scenario("cal", "load"), 1, "loadgen", 30))
    if sc.kind == "load":
        return _run_load(server, sc, tool, timeout, rounds, budget)
    before = server.accepted()
    # The huge message may take well under a second: sample memory more often.
    with procmem.TreeSampler(server.roots, interval=0.01 if sc.kind == "big" else 0.05) as mem:
        if sc.kind == "big":
            out = loadgen.run(loadgen.send_big(HOST, server.port, sc.size, timeout))
        else:
            out = loadgen.run(loadgen.idle_probe(HOST, server.port, sc.sessions, 60.0, 15.0))
    after = server.accepted()
    out["server_count"] = after - before if before is not None and after is not None else None
    out.update(mem.result())
    out["ok"] = bool(out.get("ok") or out.get("probe_ok")) and out["server_count"] in (None, 1)
    if sc.kind == "big":
        out["mb_per_s"] = round(sc.size / MiB / out["seconds"], 1) if out["ok"] else None
        out["score"] = out["mb_per_s"]
    return out


def _run_load(
    server: Server, sc: Scenario, tool: str, timeout: float, rounds: int, budget: float
) -> dict[str, Any]:
    """Warm up, then up to `rounds` timed rounds (more only while within `budget` s).

    The reported rate is the median round; every round is checked against the
    server's own count, so a rejected or lost message fails the row.
    """
    warm = min(2 * sc.sessions, 100)
    drive(server.port, sc, warm, tool, timeout)  # fork/spawn and caches, not timed
    done: list[dict[str, Any]] = []
    start = time.monotonic()
    with procmem.TreeSampler(server.roots) as mem:
        while len(done) < rounds and (not done or time.monotonic() - start < budget):
            before = server.accepted()
            client = drive(server.port, sc, sc.count, tool, timeout)
            after = server.accepted()
            verified = after - before if before is not None and after is not None else None
            counted = verified if verified is not None else client["client_ok"]
            secs = client["seconds"]
            done.append({
                "seconds": round(secs, 3),
                "client_ok": client["client_ok"],
                "server_count": verified,
                "errors": client["errors"],
                "ok": counted == sc.count and not client["errors"],
                "msgs_per_s": round((counted or 0) / secs, 1) if secs else 0.0,
            })  # fmt: skip
            if not done[-1]["ok"]:
                break
    rates = sorted(r["msgs_per_s"] for r in done)
    median = statistics.median(rates)
    bad = next((r for r in done if not r["ok"]), None)
    out: dict[str, Any] = {
        **(bad or min(done, key=lambda r: abs(r["msgs_per_s"] - median))),
        "count": sc.count,
        "tool": tool,
        "rounds": done,
        "ok": bad is None,
        "msgs_per_s": median,
        "spread_pct": round(100 * (rates[-1] - rates[0]) / median) if median else None,
    }
    out["score"] = median if out["ok"] else None
    out.update(mem.result())
    return out
