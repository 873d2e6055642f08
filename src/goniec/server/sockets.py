"""Listening sockets: binding one address and port, before any worker exists.

Owns `bind_socket`, which `goniec.app` calls in the parent process (as root
when a port below 1024 is asked for, before privileges are dropped and the
workers forked, so that every worker accepts on the same sockets). Stdlib
only, so that the parent does not import the serving stack to bind.
Raises OSError naming the address when it cannot listen there.
"""

from __future__ import annotations

import socket


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]" means IPv6 only; a second listener on 0.0.0.0 serves IPv4.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock
