"""Cost of sender authentication per message: DKIM signing and the inbound checks.

Run by hand, not by the test suite:

    python bench/mailauth.py [--count 400] [--size 4096] [--concurrency 20] [--json out.json]

Starts a DNS server on 127.0.0.1 (dnslib, the one the tests use) holding the
sender's SPF, DKIM keys and DMARC record, then measures, per message:

* sign/rsa, sign/ed25519: `goniec.mailauth.dkim.sign` (wall = CPU, one thread);
* inbound/warm: `InboundChecker.check` (SPF of MAIL FROM and HELO, DKIM, ARC,
  DMARC) with the resolver cache warm, as for a sender that writes often;
* inbound/cold: the same with the cache off, every lookup to the DNS server;
* prepare: removing forged Authentication-Results and adding ours.
The DNS server runs in a child process, so its CPU is not counted.

For the inbound rows `--concurrency` checks run at once (like that many
sessions); "wall" is elapsed time / messages, "cpu" the process CPU time /
messages (all threads: the figure that limits a server's rate). All traffic
stays on loopback; domains are .test.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from goniec.mailauth import dkim
from goniec.mailauth.dnsview import DnsSettings, DnsView
from goniec.mailauth.inbound import InboundChecker
from goniec.mailauth.keys import DkimKey, generate, public_record

ROOT = Path(__file__).resolve().parents[1]
SENDER_IP = "192.0.2.10"


def _serve_dns(zone_json: str) -> int:
    """Child process: serve the zone on 127.0.0.1, print the port, stop at stdin's end."""
    path = ROOT / "tests" / "mailauth" / "dnsserver.py"
    spec = importlib.util.spec_from_file_location("mailauth_dnsserver", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    zone = {name: [tuple(e) for e in entries] for name, entries in json.loads(zone_json).items()}
    server = module.ZoneServer(zone).start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()
    return 0


class DnsProcess:
    """The DNS server in its own process, so that its CPU is not counted as ours."""

    def __init__(self, zone: dict[str, list[Any]]) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-dns", json.dumps(zone)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _message(size: int) -> bytes:
    head = ("From: Alice <alice@example.test>\r\nTo: <bob@goniec.test>\r\n"
            "Subject: benchmark\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            "Message-ID: <bench@example.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n")
    line = "The quick brown fox jumps over the lazy dog, again and again.\r\n"
    return (head + line * max(1, (size - len(head)) // len(line))).encode()


def _per_message(count: int, fn: Callable[[], object]) -> dict[str, float]:
    fn()  # warm up
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        fn()
    return {"wall_us": (time.perf_counter() - wall) / count * 1e6,
            "cpu_us": (time.process_time() - cpu) / count * 1e6}


async def _inbound(checker: InboundChecker, message: bytes, count: int,
                   concurrency: int) -> dict[str, float]:
    async def one() -> None:
        got = await checker.check(message, peer_ip=SENDER_IP, helo="mail.example.test",
                                  mail_from="alice@example.test")
        assert got.dmarc.result == "pass", got

    await one()  # warm up (and fills the cache, when there is one)
    semaphore = asyncio.Semaphore(concurrency)

    async def limited() -> None:
        async with semaphore:
            await one()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(limited() for _ in range(count)))
    return {"wall_us": (time.perf_counter() - wall) / count * 1e6,
            "cpu_us": (time.process_time() - cpu) / count * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=400, help="messages per row")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=20, help="inbound checks at once")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--serve-dns", metavar="ZONE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_dns:
        return _serve_dns(args.serve_dns)

    rsa_key = DkimKey("example.test", "rsa1", generate("rsa"))
    ed_key = DkimKey("example.test", "ed1", generate("ed25519"))
    message = _message(args.size)
    zone: dict[str, list[Any]] = {
        "example.test": [("TXT", f"v=spf1 ip4:{SENDER_IP} -all")],
        "mail.example.test": [("TXT", "v=spf1 a -all"), ("A", SENDER_IP)],
        "_dmarc.example.test": [("TXT", "v=DMARC1; p=reject")],
    }
    for key in (rsa_key, ed_key):
        zone[key.record_name] = [("TXT", public_record(key.private_key))]
    server = DnsProcess(zone)
    try:
        rows: dict[str, dict[str, float]] = {}
        rows["sign/rsa"] = _per_message(args.count, lambda: dkim.sign(message, rsa_key))
        rows["sign/ed25519"] = _per_message(args.count, lambda: dkim.sign(message, ed_key))
        signed = dkim.sign(message, rsa_key) + message
        settings = DnsSettings(("127.0.0.1",), server.port, 2.0)
        for label, cache in (("inbound/warm", True), ("inbound/cold", False)):
            checker = InboundChecker(DnsView(settings, cache=cache), "mx.goniec.test")
            try:
                rows[label] = asyncio.run(_inbound(checker, signed, args.count,
                                                   args.concurrency))
            finally:
                checker.close()
        checker = InboundChecker(DnsView(settings), "mx.goniec.test")
        results = asyncio.run(checker.check(signed, peer_ip=SENDER_IP,
                                            helo="mail.example.test",
                                            mail_from="alice@example.test"))
        rows["prepare"] = _per_message(args.count, lambda: checker.prepare(signed, results))
        checker.close()
    finally:
        server.stop()

    print(f"message: {len(message)} bytes, {args.count} per row,"
          f" inbound concurrency {args.concurrency}")
    print(f"{'row':<14} {'wall µs/msg':>12} {'cpu µs/msg':>12} {'msgs/s (cpu)':>13}")
    for name, row in rows.items():
        rate = 1e6 / row["cpu_us"] if row["cpu_us"] else float("inf")
        print(f"{name:<14} {row['wall_us']:>12.0f} {row['cpu_us']:>12.0f} {rate:>13.0f}")
    if args.json:
        args.json.write_text(json.dumps({"size": len(message), "count": args.count,
                                         "concurrency": args.concurrency, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
