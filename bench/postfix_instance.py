"""A private, throw-away Postfix instance that only accepts mail into its queue.

Owns: writing main.cf/master.cf into <workdir>/etc, starting it with
`postfix -c <workdir>/etc start`, counting queue files, and stopping it.

Safety: config_directory, queue_directory and data_directory all live in the
temporary workdir (checked with `postconf -c` before start, so the system
instance in /etc/postfix and /var/spool/postfix is never touched); smtpd
listens on 127.0.0.1:<port> only; every message is put on HOLD at end of data
(so nothing reaches the queue manager, let alone a delivery agent), and the
transports are error:/discard: anyway, so it can never relay. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import procmem
from servers import HOST, Server, Unavailable, count_files, tail, wait_banner

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"

MAIN_CF = """\
# Private benchmark instance written by bench/postfix_instance.py
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-postfix.test
mydomain = bench.test
myorigin = bench.test
mydestination = bench.test
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# Accept any local part of bench.test; no alias or passwd look-ups.
local_recipient_maps =
alias_maps =
alias_database =
# Measure acceptance only: every message goes to the hold queue at end of data.
smtpd_end_of_data_restrictions = check_client_access static:HOLD
# Belt and braces: should anything leave hold, it is never relayed anywhere.
default_transport = error:benchmark instance never relays
relay_transport = error:benchmark instance never relays
local_transport = discard:benchmark
notify_classes =
# No DNS: the client is on loopback and the NETWORK RULE forbids lookups.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
# Nothing is delivered, so inbound flow control would only add sleeps.
in_flow_delay = 0
message_size_limit = {max_size}
mailbox_size_limit = 0
default_process_limit = 100
smtputf8_enable = no
biff = no
maillog_file = {workdir}/maillog
"""

SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

QUEUES = ("incoming", "active", "deferred", "hold")


class Postfix(Server):
    name = "postfix"

    def __init__(self, smtpd_limit: int = 1100, max_size: int = 200 * 1024 * 1024) -> None:
        super().__init__()
        self.smtpd_limit = smtpd_limit
        self.max_size = max_size
        self.master_pid: int | None = None
        self._started = False

    @property
    def etc(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "etc"

    @property
    def queue(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "queue"

    def _launch(self) -> None:
        assert self.workdir is not None
        if not os.path.exists(POSTFIX):
            raise Unavailable("postfix not installed (apt-get install postfix)")
        if os.geteuid() != 0:
            raise Unavailable("a private postfix instance needs root")
        try:
            pf = pwd.getpwnam("postfix")
        except KeyError:
            raise Unavailable("no 'postfix' user") from None
        data = self.workdir / "data"
        for d in (self.etc, self.queue, data):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # postfix daemons must traverse to queue/
        os.chown(data, pf.pw_uid, pf.pw_gid)
        (self.etc / "main.cf").write_text(
            MAIN_CF.format(
                queue=self.queue, data=data, host=HOST,
                max_size=self.max_size, workdir=self.workdir,
            )
        )  # fmt: skip
        smtpd = f"{HOST}:{self.port} inet n - n - {self.smtpd_limit} smtpd\n"
        (self.etc / "master.cf").write_text(smtpd + SERVICES)
        # Postfix re-reads a main.cf modified in the last second until it is
        # older (~2 s lost per start); back-date the files we just wrote.
        past = time.time() - 10
        for cf in ("main.cf", "master.cf"):
            os.utime(self.etc / cf, (past, past))
        self._check_private()
        self._started = True  # from here on stop() must run, even if start is interrupted
        run = subprocess.run(
            [POSTFIX, "-c", str(self.etc), "start"], capture_output=True, timeout=60, check=False
        )
        if run.returncode != 0:
            msg = (run.stderr or run.stdout).decode(errors="replace").strip()
            self.stop()
            raise Unavailable(f"postfix start failed: {msg[-300:]} {self.log_tail()}")
        try:
            wait_banner(self.port, 30.0)
        except Unavailable as exc:
            self.stop()
            raise Unavailable(f"{exc}; maillog: {self.log_tail()}") from None

    def _check_private(self) -> None:
        """Refuse to start unless every directory resolves inside our workdir."""
        out = subprocess.run(
            [POSTCONF, "-c", str(self.etc), "-h", "config_directory", "queue_directory",
             "data_directory", "inet_interfaces"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()  # fmt: skip
        assert self.workdir is not None
        want = [str(self.etc), str(self.queue), str(self.workdir / "data"), HOST]
        if out != want:
            raise Unavailable(f"postconf resolves to {out}, expected {want}; refusing to start")

    def roots(self) -> list[int]:
        if self.master_pid is None:
            try:
                self.master_pid = int((self.queue / "pid" / "master.pid").read_text().strip())
            except (OSError, ValueError):
                return []
        return [self.master_pid]

    def raw_count(self) -> int | None:
        return count_files(*(self.queue / q for q in QUEUES))

    def stop(self) -> None:
        if not self._started:
            return
        pids = procmem.descendants(self.roots())
        for action in ("stop", "abort"):
            subprocess.run(
                [POSTFIX, "-c", str(self.etc), action],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            if procmem.wait_gone(pids, 15.0):
                break
        for pid in pids:  # what is left of the tree we started: by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        procmem.wait_gone(pids, 5.0)
        self._started = False
        self.master_pid = None

    def log_tail(self) -> str:
        assert self.workdir is not None
        return tail(self.workdir / "maillog")
