"""Goniec acceptance benchmark: how fast do we accept mail, against Postfix?

Run by hand, not by the test suite:

    python bench/accept.py [--quick] [--servers goniec,aiosmtpd,aiosmtpd-fsync,postfix]
                           [--json out.json] [--workers N] [--workers-sweep]

For every scenario and every server: start the server fresh on a free
127.0.0.1 port with a temporary data directory, warm it up, drive the load,
check the server's own count of accepted messages, record peak memory, stop
it. A server that cannot start (goniec before `goniec serve` exists, Postfix
when not installed or not root) is reported as skipped and the run goes on.
See bench/README.md for what is measured and the targets.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import report
import scenarios
from postfix_instance import Postfix
from servers import Aiosmtpd, AiosmtpdFsync, Goniec, Server, Unavailable

ALL_SERVERS = ("goniec", "aiosmtpd", "aiosmtpd-fsync", "postfix")
LIVE: list[Server] = []  # started and not yet known to be stopped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small counts; whole run < ~1 min")
    p.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma list of: %(default)s")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="goniec workers")
    p.add_argument("--workers-sweep", action="store_true", help="also run goniec with workers=1")
    p.add_argument("--mailauth", action="store_true",
                   help="also run goniec-sign (DKIM, RSA), goniec-sign-ed (Ed25519) and"
                        " goniec-inbound (sender checks)")
    p.add_argument("--tool", choices=["auto", "smtp-source", "loadgen"], default="auto",
                   help="load driver (auto: smtp-source when installed)")  # fmt: skip
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only scenarios matching (repeatable), e.g. '1KB/s10/*'")  # fmt: skip
    p.add_argument("--count-small", type=int, help="messages per 1 KB scenario (2000; quick 200)")
    p.add_argument("--count-large", type=int, help="messages per 100 KB scenario (500; quick 50)")
    p.add_argument("--big-mb", type=int, help="size of the huge message in MiB (100; quick 20)")
    p.add_argument("--idle", type=int, help="idle connections to hold (1000; quick 200)")
    p.add_argument(
        "--rounds", type=int, help="timed rounds per load scenario, median reported (3; quick 1)"
    )
    p.add_argument("--round-budget", type=float, default=20.0,
                   help="start another round only within this many seconds (%(default)s)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=120.0, help="cap per load round, seconds")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                   help="parent of the temporary directory; use a real disk, not tmpfs")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)
    quick = a.quick
    a.count_small = a.count_small or (200 if quick else 2000)
    a.count_large = a.count_large or (50 if quick else 500)
    a.big_mb = a.big_mb or (20 if quick else 100)
    a.idle = a.idle or (200 if quick else 1000)
    a.rounds = a.rounds or (1 if quick else 3)
    names = [s.strip() for s in a.servers.split(",") if s.strip()]
    unknown = set(names) - set(ALL_SERVERS)
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}; choose from {ALL_SERVERS}")
    a.server_names = names
    return a


def factories(a: argparse.Namespace) -> dict[str, Callable[[], Server]]:
    """label -> a function making a fresh, unstarted server."""
    out: dict[str, Callable[[], Server]] = {}
    for name in a.server_names:
        if name == "goniec":
            out["goniec"] = lambda: Goniec(a.workers, "goniec")
            if a.workers_sweep and a.workers != 1:
                out["goniec-w1"] = lambda: Goniec(1, "goniec-w1")
            if a.mailauth:
                out["goniec-sign"] = lambda: Goniec(a.workers, "goniec-sign", "sign")
                out["goniec-sign-ed"] = lambda: Goniec(a.workers, "goniec-sign-ed",
                                                       "sign-ed25519")
                out["goniec-inbound"] = lambda: Goniec(a.workers, "goniec-inbound", "inbound",
                                                       a.dns_port)
        elif name == "aiosmtpd":
            out[name] = Aiosmtpd
        elif name == "aiosmtpd-fsync":
            out[name] = AiosmtpdFsync
        elif name == "postfix":
            out[name] = lambda: Postfix(smtpd_limit=a.idle + 100)
    return out


def raise_nofile(want: int = 65536) -> int:
    """Idle connections need file descriptors, here and in the servers we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return max(new, soft)


def meta(a: argparse.Namespace, tool: str) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            return out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    versions = {}
    for mod in ("aiosmtpd", "uvloop", "goniec"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            versions[mod] = None
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": version(["postconf", "-dh", "mail_version"]) or None,
        "tool": tool,
        "goniec_workers": a.workers,
        "counts": {"1KB": a.count_small, "100KB": a.count_large},
        "rounds": a.rounds,
        **{f"{k}_version": v for k, v in versions.items()},
    }


def run_one(
    make: Callable[[], Server], sc: scenarios.Scenario, tool: str, root: Path, a: argparse.Namespace
) -> dict[str, Any]:
    server = make()
    row: dict[str, Any] = {"scenario": sc.name, "server": server.name, "kind": sc.kind,
                           "target": sc.target}  # fmt: skip
    workdir = root / server.name / sc.name.replace("/", "_")
    LIVE.append(server)
    try:
        server.start(workdir)
        row.update(scenarios.run_scenario(server, sc, tool, a.timeout, a.rounds, a.round_budget))
        row["status"] = "ran"
        if not row["ok"]:
            row["log_tail"] = server.log_tail()
    except Unavailable as exc:
        row.update(status="skipped", reason=str(exc))
    finally:
        server.stop()
        LIVE.remove(server)
    return row


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through every finally: servers get stopped


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    tool = scenarios.pick_tool(a.tool)
    nofile = raise_nofile()
    if nofile < a.idle + 200:
        print(f"warning: RLIMIT_NOFILE is {nofile}; the idle scenario may fail", file=sys.stderr)
    plan = [
        sc
        for sc in scenarios.matrix(a.count_small, a.count_large, a.big_mb, a.idle)
        if not a.only or any(fnmatch.fnmatch(sc.name, g) for g in a.only)
    ]
    dns = None
    if a.mailauth:  # the sender domain's records, served from a child process
        from mailauth import DnsProcess

        dns = DnsProcess({"bench.test": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
                          "_dmarc.bench.test": [("TXT", "v=DMARC1; p=none")]})
    a.dns_port = dns.port if dns else 0
    makers = factories(a)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    a.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="goniec-bench-", dir=a.workdir))
    os.chmod(root, 0o755)  # Postfix daemons (user postfix) must reach their queue below it
    print(f"load driver: {tool}; servers: {', '.join(makers)}; {len(plan)} scenarios; "
          f"workdir {root}", flush=True)  # fmt: skip
    rows: list[dict[str, Any]] = []
    skip: dict[str, str] = {}
    started = time.monotonic()
    interrupted = False
    try:
        # Scenario-major, so slow drift of the machine hits every server alike.
        for sc in plan:
            for label, make in makers.items():
                if label in skip:
                    rows.append({"scenario": sc.name, "server": label, "kind": sc.kind,
                                 "target": sc.target, "status": "skipped",
                                 "reason": skip[label]})  # fmt: skip
                    continue
                row = run_one(make, sc, tool, root, a)
                rows.append(row)
                if row["status"] == "skipped":
                    skip[label] = row["reason"]
                elapsed = time.monotonic() - started
                print(f"[{elapsed:6.1f}s] {sc.name:<18} {label:<15} {report.result_text(row)}",
                      flush=True)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: servers stopped; partial results follow", file=sys.stderr)
    finally:
        # A second Ctrl-C must not leave a server (a daemonized Postfix) running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while LIVE:
            LIVE.pop().stop()
        if dns is not None:
            dns.stop()
        if a.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(report.table(rows))
    if extra := report.notes(rows):
        print(f"\n{extra}")
    print(f"\ntotal {time.monotonic() - started:.0f}s; ratios are goniec/other (higher is better "
          f"for goniec); RSS = summed over the server's process tree")  # fmt: skip
    if a.json:
        report.write_json(a.json, meta(a, tool), rows)
        print(f"wrote {a.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
