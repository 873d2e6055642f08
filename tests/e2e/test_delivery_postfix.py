"""Postfix on both sides of the real `goniec serve`, where Postfix is installed.

- As a destination: Postfix's `smtp-sink` on 127.0.0.1 dumps every transaction
  it receives to a file; goniec A looks up the MX through the loopback DNS
  server and delivers there, with the sender's DSN parameters passed on.
- As a sender: a private Postfix instance in a temporary directory (its own
  config, queue and data directories; no smtpd, no DNS, relayhost a loopback
  goniec) takes a message from its `sendmail -C <dir>` and relays it through
  goniec B, which keeps it in its spool.

Skipped cleanly when the programs are missing (the private instance also needs
root, to start Postfix's master). Every process started here is stopped by its
own pid or through its own config directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from goniec.testing.dnsserver import ZoneServer
from goniec.testing.process import free_port, make_server

from mailpeers import (  # isort: skip
    DEST_HOST, SENDER_HOST, logs_of, maildir, sender_server, split_trace, spool, wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTFIX_SENDMAIL = "/usr/sbin/sendmail"

ORIGINAL = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: bob@sink.test, carol@sink.test\r\n"
    b"Subject: to postfix smtp-sink\r\n"
    b"Message-ID: <sink-1@sender.test>\r\n"
    b"\r\n"
    b"Hello, Postfix.\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b"last line\r\n"
)


def wait_banner(port: int, alive: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert alive(), "the peer exited during start-up"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.makefile("rb").readline().startswith(b"220"):
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no 220 on 127.0.0.1:{port}"
        time.sleep(0.05)


# --- Postfix's smtp-sink as the destination ------------------------------------------------

@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("smtp-sink not installed (Debian package postfix)")
    dumps = tmp_path / "sink"
    dumps.mkdir()
    port = free_port()
    # As root smtp-sink must be told which user to become (-u); the dump files are
    # written as that user, into a directory it owns.
    user = ["-u", "root"] if os.geteuid() == 0 else []
    with open(tmp_path / "sink.log", "wb") as log:
        proc = subprocess.Popen([SMTP_SINK, *user, "-d", f"{dumps}/msg.", f"127.0.0.1:{port}",
                                 "10"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_banner(port, lambda: proc.poll() is None)
        yield port, dumps
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def sink_dump(data: bytes) -> tuple[dict[str, list[str]], bytes]:
    """smtp-sink's own header lines (X-Mail-Args, X-Rcpt-Args, ...), and what follows its
    three-line Received: header: the message as received, with LF line ends."""
    fields: dict[str, list[str]] = {}
    lines = data.split(b"\n")
    i = 0
    while not lines[i].startswith(b"Received: "):
        name, _, value = lines[i].decode().partition(": ")
        fields.setdefault(name, []).append(value)
        i += 1
    assert b"(smtp-sink)" in lines[i + 1]
    return fields, b"\n".join(lines[i + 3:])


def test_delivery_to_postfix_smtp_sink(tmp_path: Path, dns: ZoneServer, zone: dict[str, Any],
                                       smtp_sink: tuple[int, Path]) -> None:
    port, dumps = smtp_sink
    zone["sink.test"] = {"MX": [(10, "mx.sink.test")]}
    zone["mx.sink.test"] = {"A": ["127.0.0.1"]}
    (tmp_path / "a").mkdir()
    a = sender_server(tmp_path / "a", dns, port).start()
    try:
        with smtplib.SMTP("127.0.0.1", a.port, timeout=10) as client:
            client.ehlo("client.sender.test")
            refused = client.sendmail("alice@sender.test", ["bob@sink.test", "carol@sink.test"],
                                      ORIGINAL, mail_options=["RET=HDRS", "ENVID=env-42"],
                                      rcpt_options=["NOTIFY=FAILURE,DELAY"])
            assert not refused
        wait_until(lambda: any(dumps.iterdir()) and not a.spool_ids(), "smtp-sink's dump file",
                   logs=logs_of(a))
    finally:
        a.stop()
    [dump] = list(dumps.iterdir())
    fields, message = sink_dump(dump.read_bytes())
    assert fields["X-Helo-Args"] == [SENDER_HOST]
    assert fields["X-Client-Proto"] == ["ESMTP"]
    # One transaction for both recipients of the domain, DSN parameters passed on
    # (smtp-sink announces DSN; RFC 3461 4: the relaying MTA keeps them).
    [mail_args] = fields["X-Mail-Args"]
    assert mail_args.startswith("<alice@sender.test>")
    assert "RET=HDRS" in mail_args and "ENVID=env-42" in mail_args
    rcpt_args = fields["X-Rcpt-Args"]
    assert [r.split()[0] for r in rcpt_args] == ["<bob@sink.test>", "<carol@sink.test>"]
    assert all("NOTIFY=FAILURE,DELAY" in r for r in rcpt_args)
    # The message: A's Received: header, then the original (smtp-sink writes LF line ends
    # and one empty line after the message).
    expected = ORIGINAL.replace(b"\r\n", b"\n") + b"\n"
    assert message.endswith(b"\n" + expected)
    trace = message[: -len(expected)]
    assert trace.startswith(b"Received: from client.sender.test (unknown [127.0.0.1])\n")
    assert f"by {SENDER_HOST} (Goniec) with ESMTP id".encode() in trace
    assert trace.count(b"Received:") == 1
    # smtp-sink offers DSN, so it takes the duty over: no "relayed" report, no other report.
    assert not maildir(a, "sender.test", "alice")


# --- a private Postfix instance relaying through goniec ---------------------------------------

MAIN_CF = """\
# A private instance written by tests/e2e/test_delivery_postfix.py
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.sender.test
mydomain = sender.test
myorigin = sender.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# Everything goes to goniec on loopback; no DNS at all (numeric relayhost in brackets).
relayhost = [127.0.0.1]:{port}
default_transport = smtp
relay_transport = smtp
local_transport = error:this test instance delivers nothing locally
smtp_dns_support_level = disabled
smtp_tls_security_level = may
smtp_tls_loglevel = 1
alias_maps =
alias_database =
local_recipient_maps =
notify_classes =
in_flow_delay = 0
biff = no
maillog_file = {workdir}/maillog
maillog_file_prefixes = {workdir}
"""

# No smtpd: this instance only sends. tlsmgr for STARTTLS to goniec.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixSender:
    """A throw-away Postfix that relays everything to [127.0.0.1]:port.

    Its config, queue and data directories are inside `workdir` (checked with
    postconf before start), so the system instance is never touched."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.etc = workdir / "etc"
        self.queue = workdir / "queue"
        self.data = workdir / "data"
        self.port = port
        self.master_pid: int | None = None

    def start(self) -> PostfixSender:
        postfix_user = pwd.getpwnam("postfix")
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True)
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        (self.etc / "main.cf").write_text(MAIN_CF.format(
            queue=self.queue, data=self.data, port=self.port, workdir=self.workdir))
        (self.etc / "master.cf").write_text(MASTER_CF)
        past = time.time() - 10  # Postfix waits for a main.cf written in the last second
        for name in ("main.cf", "master.cf"):
            os.utime(self.etc / name, (past, past))
        resolved = subprocess.run(
            [POSTCONF, "-c", str(self.etc), "-h", "config_directory", "queue_directory",
             "data_directory", "relayhost"],
            capture_output=True, text=True, timeout=30, check=True).stdout.split()
        assert resolved == [str(self.etc), str(self.queue), str(self.data),
                            f"[127.0.0.1]:{self.port}"], resolved
        run = subprocess.run([POSTFIX, "-c", str(self.etc), "start"], capture_output=True,
                             text=True, timeout=30, check=False)
        pid_file = self.queue / "pid" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            self.master_pid = int(pid_file.read_text().strip())
        assert run.returncode == 0, f"postfix start: {run.stderr}{run.stdout}\n{self.log()}"
        wait_until(pid_file.exists, "Postfix's master", timeout=10, logs=self.log)
        self.master_pid = int(pid_file.read_text().strip())
        return self

    def sendmail(self, sender: str, rcpts: list[str], message: bytes) -> None:
        run = subprocess.run([POSTFIX_SENDMAIL, "-C", str(self.etc), "-f", sender, "-i",
                              *rcpts], input=message, capture_output=True, timeout=30,
                             check=False)
        assert run.returncode == 0, run.stderr

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "maillog").read_text(errors="replace")[-6000:]
        return ""

    def stop(self) -> None:
        for action in ("stop", "abort"):
            subprocess.run([POSTFIX, "-c", str(self.etc), action], capture_output=True,
                           timeout=30, check=False)
            if self.master_pid is None or _gone(self.master_pid, 10):
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.master_pid, signal.SIGKILL)  # the master we started, by its pid


def _gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited (a zombie nobody reaped yet counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def _postfix_missing() -> str | None:
    if not all(os.access(p, os.X_OK) for p in (POSTFIX, POSTCONF, POSTFIX_SENDMAIL)):
        return "postfix not installed"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master runs as root)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def test_postfix_relays_through_goniec(tmp_path: Path) -> None:
    missing = _postfix_missing()
    if missing:
        pytest.skip(missing)
    (tmp_path / "b").mkdir()
    b = make_server(tmp_path / "b", listeners=[{"name": "mx", "tls": "starttls",
                                               "auth": "optional"}],
                    server={"hostname": DEST_HOST}, domains={"local": ["dest.test"]})
    b.start()
    # Postfix's daemons open files there as the postfix user, who cannot traverse
    # pytest's private (0700) temporary root: a world-traversable directory of our own.
    workdir = Path(tempfile.mkdtemp(prefix="goniec-postfix-"))
    os.chmod(workdir, 0o755)
    postfix = PostfixSender(workdir, b.port)
    try:
        postfix.start()
        body = (b"Subject: from Postfix through goniec\n"
                b"Message-ID: <postfix-1@sender.test>\n"
                b"\n"
                b"Hello, goniec.\n.\n..two dots\n")
        postfix.sendmail("alice@sender.test", ["bob@dest.test"], body)
        wait_until(lambda: len(b.spool_ids()) == 1, "the message from Postfix in goniec's spool",
                   logs=lambda: postfix.log() + "\n" + logs_of(b)())
        wait_until(lambda: "status=sent" in postfix.log(), "Postfix's status=sent",
                   timeout=10, logs=postfix.log)
    finally:
        postfix.stop()
        b.stop()
        log = postfix.log()
        shutil.rmtree(workdir, ignore_errors=True)
    [got] = spool(b)
    assert got.record.envelope.sender == "alice@sender.test"
    assert [r.address for r in got.record.envelope.recipients] == ["bob@dest.test"]
    assert got.record.info.helo == "pf.sender.test"
    trace, rest = split_trace(got.data)
    assert len(trace) == 2, trace
    by_goniec, by_postfix = trace
    assert by_goniec.startswith(b"Received: from pf.sender.test (unknown [127.0.0.1])")
    assert b"(using TLSv1." in by_goniec  # Postfix took goniec's STARTTLS (level "may")
    assert f"by {DEST_HOST} (Goniec) with ESMTPS id".encode() in by_goniec
    assert b"by pf.sender.test (Postfix" in by_postfix
    # Postfix added From:, Date: and made the lines CRLF; the body arrived intact.
    assert b"Subject: from Postfix through goniec\r\n" in rest
    assert b"Message-ID: <postfix-1@sender.test>\r\n" in rest
    assert rest.endswith(b"\r\n\r\nHello, goniec.\r\n.\r\n..two dots\r\n")
    assert f"relay=127.0.0.1[127.0.0.1]:{b.port}" in log and "status=sent" in log
