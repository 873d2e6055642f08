"""A line-level SMTP client for tests: sends exactly the bytes a test wants.

smtplib refuses to send what a broken or hostile client sends (overlong lines,
bare LF, pipelined batches, injected plaintext after STARTTLS); this client
does, and reads whole (multi-line) replies. Loopback only; every read has the
socket's timeout.
"""

from __future__ import annotations

import contextlib
import socket
import ssl


class LineClient:
    def __init__(self, port: int, *, host: str = "127.0.0.1", source: str | None = None,
                 timeout: float = 10.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source, 0) if source is not None else None)
        self.buf = b""

    def reply(self) -> bytes:
        """One whole reply, its lines joined by CRLF (RFC 5321 4.2.1 multi-line form)."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError(f"closed after {lines!r}, unread {self.buf!r}")
                self.buf += data
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str | bytes) -> bytes:
        """Send one command line (CRLF added) and read its reply."""
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        reply = self.cmd("STARTTLS")
        if not reply.startswith(b"220"):
            raise AssertionError(f"STARTTLS refused: {reply!r}")
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def is_closed(self) -> bool:
        """True when the server has closed the connection (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
