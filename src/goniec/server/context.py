"""What every session of one server process shares: settings, stores, counters.

Owns the per-process `ServerContext` built by app.py. Holds no protocol rules.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from goniec.policy.relay import RelayRules
from goniec.protocol import ServerOptions
from goniec.server.limits import SharedConnectionCounter

if TYPE_CHECKING:
    from goniec.queue.api import QueueStore


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str
    host: str
    port: int
    tls: str  # "none" | "starttls" | "implicit"
    auth: str  # "none" | "optional" | "required"
    options: ServerOptions


@dataclass(frozen=True, slots=True)
class Timeouts:
    command: float = 300.0  # RFC 5321 4.5.3.2.7 server timeout
    data_block: float = 180.0  # RFC 5321 4.5.3.2.5
    tls_handshake: float = 30.0


@dataclass(slots=True)
class ServerContext:
    hostname: str
    greeting: str
    queue: QueueStore
    users: Any  # goniec.admin.users.UserStore | None; verify() runs in a thread
    relay: RelayRules
    tls_context: ssl.SSLContext | None
    counter: SharedConnectionCounter
    timeouts: Timeouts = field(default_factory=Timeouts)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("goniec.server"))
    sessions: set[Any] = field(default_factory=set)  # live Session objects
    tasks: set[Any] = field(default_factory=set)  # their asyncio tasks
