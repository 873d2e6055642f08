"""Run opendkim-testmsg against a DNS server of our own, in a private network namespace.

opendkim-testmsg asks the system resolver (libresolv, /etc/resolv.conf,
port 53). Started with `unshare --net --mount`, this script brings up the
namespace's own loopback, bind-mounts a resolv.conf naming 127.0.0.1 over
/etc/resolv.conf (visible in this namespace only), serves the zone on
127.0.0.1:53 and verifies the message. Nothing leaves the namespace.

usage: unshare --net --mount python opendkim_helper.py ZONE.json MESSAGE RESOLV.CONF
Prints opendkim-testmsg's output; exits with its status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dnsserver import ZoneServer  # noqa: E402


def main() -> int:
    zone_file, message_file, resolv = sys.argv[1:4]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
    zone = {name: [tuple(e) for e in entries] for name, entries in
            json.loads(Path(zone_file).read_text()).items()}
    server = ZoneServer(zone, port=53).start()
    try:
        with open(message_file, "rb") as message:
            done = subprocess.run(["opendkim-testmsg"], stdin=message, capture_output=True,
                                  timeout=30)
    finally:
        server.stop()
    sys.stdout.write(done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace"))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
