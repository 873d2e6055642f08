"""Listener variants over real sockets: IPv6, TLS version floor, connection limits."""

from __future__ import annotations

import email
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from goniec.testing.process import make_server


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_listener(tmp_path: Path) -> None:
    server = make_server(tmp_path, listeners=[{"name": "v6", "host": "::1", "tls": "none",
                                               "auth": "none"}]).start()
    try:
        with smtplib.SMTP("::1", server.port, timeout=10) as s:
            s.ehlo("c.goniec.test")
            s.mail("a@goniec.test")
            s.rcpt("b@goniec.test")
            code, text = s.data(b"Subject: v6\r\n\r\nhi\r\n")
            assert code == 250
        qid = text.decode().rsplit(" ", 1)[1]
        from test_live import stored

        data = stored(server, qid)
        assert "[IPv6:::1]" in email.message_from_bytes(data)["Received"]
    finally:
        server.stop()


def test_tls_floor_refuses_older_clients(tmp_path: Path, server_cert: tuple[Path, Path],
                                         ca: trustme.CA) -> None:
    server = make_server(tmp_path, tls={"certificate": str(server_cert[0]),
                                        "key": str(server_cert[1]), "min_version": "1.3"}).start()
    try:
        old = ssl.create_default_context()
        ca.configure_trust(old)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as s, \
                pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
            s.starttls(context=old)
        new = ssl.create_default_context()
        ca.configure_trust(new)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as s:
            s.starttls(context=new)
            assert s.sock.version() == "TLSv1.3"
    finally:
        server.stop()


def test_connection_limit_per_ip_gives_421(tmp_path: Path) -> None:
    server = make_server(tmp_path, limits={"connections_per_ip": 2},
                         listeners=[{"name": "p", "tls": "none", "auth": "none"}]).start()
    try:
        # start() has ended its probe session, so both slots are free.
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(2)]
        for sock in held:
            assert sock.recv(1024).startswith(b"220")
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert extra.recv(1024).startswith(b"421 4.7.0 mx.goniec.test")
        assert extra.recv(1024) == b""  # and closed
        extra.close()
        held.pop().close()
        # The slot is free again once a held connection ends.
        for _ in range(50):
            again = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            greeting = again.recv(1024)
            again.close()
            if greeting.startswith(b"220"):
                break
        assert greeting.startswith(b"220")
        for sock in held:
            sock.close()
    finally:
        server.stop()
