"""Server CPU per accepted message: a quick before/after harness for the accept path.

`bench/accept.py` compares Goniec with Postfix, but on this 2-core VM its
figures move 25-40 % between runs (for Postfix as much as for Goniec), too
much to see a 10 % change. This harness measures one thing steadily: it
starts `goniec serve` (workers from `--workers`, delivery off), drives it
with Postfix's `smtp-source` over loopback, and reports per scenario the
median rate and the server processes' user and system CPU per message (from
/proc), over `--rounds` rounds on one fresh spool that nothing deletes
between rounds. Run it for the old and the new code alternately.

Run by hand: `python bench/accept_cpu.py [--rounds 3] [--workers 2]
[--sessions 10] [--count N] [--sign rsa|ed25519] [--server goniec|postfix]
[scenario ...]` with scenarios `1k-new 1k-reuse 100k-new 100k-reuse`
(default: the two 1k ones). `--sign` adds a DKIM key for bench.test, so every
message is signed (the cost of issue 6's signing, same measure). `--server
postfix` measures a private Postfix instance the same way (its master and
every process it starts, reaped ones included). Needs `smtp-source`
(apt-get install postfix) and `goniec` on PATH. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import procmem  # noqa: E402
from servers import HOST, free_port, wait_banner  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SIZES = {"1k": 1024, "100k": 102400}


def config(workdir: Path, port: int, workers: int, sign: str) -> str:
    extra = ""
    if sign:
        from goniec.mailauth.keys import keygen

        key, _ = keygen(workdir, "bench.test", "bench", sign)
        extra = f'[[mailauth.dkim]]\ndomain = "bench.test"\nselector = "bench"\nkey_file = "{key}"\n'
    return extra + f"""\
[server]
hostname = "bench-goniec.test"
data_dir = "{workdir / 'data'}"
workers = {workers}

[[listeners]]
name = "bench"
address = "{HOST}:{port}"
tls = "none"
auth = "none"

[domains]
local = ["bench.test"]

[relay]
networks = ["127.0.0.0/8", "::1"]

[delivery]
enabled = false

[admin]
web_listen = ""

[limits]
message_size = "200MB"
connections = 5000
connections_per_ip = 5000
"""


def cpu_seconds(roots: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by the trees under `roots`: each live
    process's own time plus what its reaped children used (Postfix's master
    replaces its smtpd and cleanup processes as they exit; their time must count)."""
    user = system = 0
    for pid in procmem.descendants(roots):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone since the scan: its time is in its parent's cutime now
        user += int(stat[11]) + int(stat[13])
        system += int(stat[12]) + int(stat[14])
    return user / TICKS, system / TICKS


def run_scenario(name: str, port: int, roots: list[int], a: argparse.Namespace) -> str:
    size = SIZES[name.split("-")[0]]
    count = a.count or (3000 if size == 1024 else 600)
    args = ["smtp-source", "-s", str(a.sessions), "-l", str(size), "-f", "sender@bench.test",
            "-t", "rcpt@bench.test", "-M", "client.bench.test"]
    if name.endswith("reuse"):
        args.append("-d")
    subprocess.run([*args, "-m", "50", f"{HOST}:{port}"], check=True, timeout=300)  # warm up
    rates, users, systems = [], [], []
    for _ in range(a.rounds):
        u0, s0 = cpu_seconds(roots)
        t0 = time.perf_counter()
        subprocess.run([*args, "-m", str(count), f"{HOST}:{port}"], check=True, timeout=600)
        elapsed = time.perf_counter() - t0
        u1, s1 = cpu_seconds(roots)
        rates.append(count / elapsed)
        users.append((u1 - u0) / count * 1e3)
        systems.append((s1 - s0) / count * 1e3)
    return (f"{a.server:7} {name:10} {statistics.median(rates):7.0f} msg/s [{min(rates):.0f}-{max(rates):.0f}]"
            f"  server CPU per message: user {statistics.median(users):.3f} ms,"
            f" system {statistics.median(systems):.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", default=["1k-new", "1k-reuse"],
                    help="1k-new, 1k-reuse, 100k-new, 100k-reuse")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--count", type=int, default=0, help="messages per round (default by size)")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--server", choices=("goniec", "postfix"), default="goniec",
                    help="postfix: the same measure for a private Postfix instance (root)")
    ap.add_argument("--sign", choices=("rsa", "ed25519"), default="",
                    help="DKIM-sign every message with a key of this kind")
    a = ap.parse_args()
    for name in a.scenarios:
        if name not in ("1k-new", "1k-reuse", "100k-new", "100k-reuse"):
            ap.error(f"unknown scenario {name!r}")
    if shutil.which("smtp-source") is None or shutil.which("goniec") is None:
        sys.exit("needs smtp-source (apt-get install postfix) and goniec on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="goniec-cpu-", dir=a.workdir))
    try:
        if a.server == "postfix":
            run_postfix(workdir, a)
        else:
            run_goniec(workdir, a)
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def run_goniec(workdir: Path, a: argparse.Namespace) -> None:
    port = free_port()
    (workdir / "goniec.toml").write_text(config(workdir, port, a.workers, a.sign))
    with open(workdir / "serve.log", "wb") as log:
        proc = subprocess.Popen(["goniec", "serve", "-c", str(workdir / "goniec.toml")],
                                stdout=log, stderr=log, start_new_session=True)
    try:
        wait_banner(port, 30.0)
        time.sleep(0.5)  # the workers are forked after the sockets listen
        for name in a.scenarios:
            print(run_scenario(name, port, [proc.pid], a), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def run_postfix(workdir: Path, a: argparse.Namespace) -> None:
    """The same measure for a private Postfix instance accepting into its queue
    (bench/postfix_instance.py; needs root): master and every process it starts."""
    from postfix_instance import Postfix

    server = Postfix()
    server.start(workdir)
    try:
        for name in a.scenarios:
            print(run_scenario(name, server.port, server.roots(), a), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
