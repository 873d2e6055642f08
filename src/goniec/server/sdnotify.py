"""systemd's readiness protocol (sd_notify), without libsystemd.

Owns `notify(state)`: one datagram to the AF_UNIX socket named by
$NOTIFY_SOCKET (an abstract one when it starts with "@"), as sd_notify(3)
describes; nothing at all when the variable is unset (not under systemd,
or Type=simple). The server sends READY=1 once its sockets listen, so a
unit with Type=notify starts the units after it only then. Raises nothing:
a failure to notify must never stop the server.
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(state: str) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", ...); True when it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(target)
        s.sendall(state.encode())
        return True
    return False
