"""Delivery benchmark: messages per second from a full queue to a discarding sink.

Fills a spool with N messages (one recipient each, ~1 KB), then times the
queue runner emptying it into Postfix's `smtp-sink` on 127.0.0.1 (the
message counts only once the sink answered 250 and the spool entry is
removed, fsync included). Runs Goniec with connection reuse (up to 100
messages per connection) and without (a new connection per message), and,
when root and Postfix are available, a private Postfix instance
(`postfix_instance.py`) delivering the same number of messages, released
from its hold queue at once, to the same sink, in the same run.

Run by hand: `python bench/deliver.py [--count 5000] [--workdir /var/tmp]
[--json out.json]`. Nothing leaves loopback: the resolver is static and every
recipient domain routes to the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from servers import HOST, Unavailable, free_port, wait_banner  # noqa: E402

from goniec.config.delivery import DeliverySection  # noqa: E402
from goniec.delivery.destination import SmartHost, Target  # noqa: E402
from goniec.delivery.service import build_service  # noqa: E402
from goniec.model import Envelope, Recipient  # noqa: E402
from goniec.policy.recipients import Directory  # noqa: E402
from goniec.queue.api import SubmissionInfo  # noqa: E402
from goniec.queue.fs import FsQueueStore  # noqa: E402
from goniec.queue.submit import submit  # noqa: E402

BODY = ("From: bench@sender.test\r\nTo: user@sink.test\r\nSubject: delivery bench\r\n\r\n"
        + ("x" * 70 + "\r\n") * 12)


class SinkResolver:
    def __init__(self, port: int) -> None:
        self.port = port

    async def mx_targets(self, domain: str, port: int) -> list[Target]:
        return [Target(f"mx.{domain}", HOST, self.port)]

    async def smart_host_targets(self, spec: SmartHost, default_port: int) -> list[Target]:
        return [Target(spec.host, HOST, self.port)]


def start_sink(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    if shutil.which("smtp-sink") is None:
        raise Unavailable("smtp-sink not installed (apt-get install postfix)")
    port = free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []
    with open(workdir / "sink.log", "wb") as log:
        proc = subprocess.Popen(["smtp-sink", *user, f"{HOST}:{port}", "1000"], stdout=log,
                                stderr=subprocess.STDOUT)
    wait_banner(port, 10.0)
    return proc, port


async def fill(spool: Path, count: int, domains: int) -> None:
    store = FsQueueStore(spool, min_free_space=0)
    try:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            env = Envelope("bench@sender.test", (Recipient(f"user{i}@d{i % domains}.sink.test"),))
            async with sem:
                await submit(store, [BODY.encode()], env, SubmissionInfo("bench"))
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        store.close()


async def drain(spool: Path, port: int, reuse: bool, workers: int = 1, index: int = 0) -> float:
    store = FsQueueStore(spool, min_free_space=0)
    d = DeliverySection.model_validate({
        "mx_tls": "none", "parallel": 400, "connections_per_destination": 20,
        "messages_per_connection": 100 if reuse else 1, "scan_interval": 0.5})
    service = build_service(d, store=store, resolver=SinkResolver(port), hostname="bench.test",
                            data_dir=spool.parent, directory=Directory(), workers=workers,
                            worker_index=index)
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.ensure_future(service.runner.run(stop))
    while store.list_ids():
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    await service.transport.close()
    store.close()
    return elapsed


def _run_drain(spool: Path, port: int, reuse: bool, workers: int = 1, index: int = 0) -> float:
    try:
        import uvloop
        return uvloop.run(drain(spool, port, reuse, workers, index))
    except ImportError:
        return asyncio.run(drain(spool, port, reuse, workers, index))


def goniec_case(workdir: Path, port: int, count: int, domains: int, reuse: bool,
                processes: int = 1) -> float:
    """Seconds to empty the spool with `processes` runners, each in its own process with
    its share of the spool and of the connection limits, as `goniec serve` runs one
    runner per worker process (`server.workers`)."""
    spool = workdir / f"spool-{'reuse' if reuse else 'noreuse'}-{processes}"
    asyncio.run(fill(spool, count, domains))
    if processes == 1:
        return _run_drain(spool, port, reuse)
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_run_drain, args=(spool, port, reuse, processes, i))
             for i in range(processes)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    return time.perf_counter() - start


def postfix_case(workdir: Path, sink_port: int, count: int, domains: int) -> float:
    from postfix_instance import POSTCONF, POSTFIX, Postfix

    pf = Postfix()
    pf.start(workdir / "postfix")
    try:
        if shutil.which("smtp-source") is None:
            raise Unavailable("smtp-source not installed")
        # Route everything to the sink, but keep accepting into hold (end-of-data HOLD,
        # as in the acceptance benchmark) so the whole queue is released at once.
        subprocess.run([POSTCONF, "-c", str(pf.etc), "-e",
                        f"relayhost = [{HOST}]:{sink_port}", "default_transport = smtp",
                        "relay_transport = smtp", "smtp_tls_security_level = none",
                        "smtp_dns_support_level = disabled"], check=True, timeout=30)
        master = pf.etc / "master.cf"
        master.write_text(master.read_text()
                          + "smtp      unix  -       -       n       -       -       smtp\n")
        subprocess.run([POSTFIX, "-c", str(pf.etc), "reload"], check=True, timeout=30,
                       capture_output=True)
        time.sleep(1.5)
        per = max(1, count // domains)
        for d in range(domains):
            n = per if d < domains - 1 else count - per * (domains - 1)
            run = subprocess.run(["smtp-source", "-s", "20", "-m", str(n), "-l", "1024", "-f",
                            "bench@sender.test", "-t", f"user@d{d}.sink.test",
                            f"{HOST}:{pf.port}"], check=False, timeout=600, capture_output=True)
            if run.returncode != 0:
                raise Unavailable(f"smtp-source: {run.stderr.decode(errors='replace')[-300:]}")
        deadline = time.monotonic() + 120
        while (pf.raw_count() or 0) < count:
            if time.monotonic() > deadline:
                raise Unavailable(f"postfix held only {pf.raw_count()} of {count}")
            time.sleep(0.1)
        start = time.perf_counter()
        # -H moves held mail to the deferred queue; -f then makes qmgr try it all now.
        subprocess.run(["postsuper", "-c", str(pf.etc), "-H", "ALL"], check=True, timeout=60,
                       capture_output=True)
        subprocess.run(["postqueue", "-c", str(pf.etc), "-f"], check=True, timeout=60,
                       capture_output=True)
        deadline = time.monotonic() + float(os.environ.get("PF_LIMIT", "600"))
        while (pf.raw_count() or 0) > 0:
            if time.monotonic() > deadline:
                raise Unavailable("postfix did not empty its queue in 10 minutes")
            time.sleep(0.02)
        return time.perf_counter() - start
    finally:
        pf.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--domains", type=int, default=1, help="recipient domains (destinations)")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--json")
    ap.add_argument("--skip-postfix", action="store_true")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                    help="runner processes for the extra case (default: CPUs, as workers=auto)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="goniec-deliver-", dir=args.workdir))
    os.chmod(workdir, 0o755)  # postfix daemons must traverse to their queue
    results: dict[str, object] = {"count": args.count, "domains": args.domains}
    sink, port = start_sink(workdir)
    try:
        cases = [("goniec (connection reuse)", True, 1), ("goniec (no reuse)", False, 1)]
        if args.processes > 1:
            cases.append((f"goniec ({args.processes} workers, reuse)", True, args.processes))
        for name, reuse, procs in cases:
            secs = goniec_case(workdir, port, args.count, args.domains, reuse, procs)
            results[name] = round(args.count / secs, 1)
            print(f"{name:28s} {args.count / secs:9.1f} msg/s  ({secs:.2f} s)", flush=True)
        if not args.skip_postfix:
            try:
                secs = postfix_case(workdir, port, args.count, args.domains)
                results["postfix"] = round(args.count / secs, 1)
                print(f"{'postfix':28s} {args.count / secs:9.1f} msg/s  ({secs:.2f} s)")
            except (Unavailable, subprocess.CalledProcessError) as exc:
                results["postfix"] = f"skipped: {exc}"
                print(f"postfix: skipped: {exc}")
    finally:
        sink.terminate()
        sink.wait(10)
        if not os.environ.get("KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
