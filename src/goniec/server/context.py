"""What every session of one server process shares: settings, stores, counters.

Owns the per-process `ServerContext` built by app.py and `Settings`, the part
a reload replaces as one object (policy rules, per-listener protocol options,
greeting, timeouts, the reverse-DNS resolver, the [mailauth] settings with
the DKIM keys). A session takes `ctx.settings` when it connects and again at
each new MAIL, so a reload reaches running sessions at their next
transaction and never changes rules in the middle of one. Holds no protocol
rules.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from goniec.policy.rules import Rules
from goniec.protocol import ServerOptions
from goniec.server.limits import SharedConnectionCounter
from goniec.server.mailauth_step import OFF, MailAuthRuntime, MailAuthSettings
from goniec.server.rates import SharedRates

if TYPE_CHECKING:
    from goniec.queue.api import QueueStore
    from goniec.server.rdns import ReverseResolver


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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a reload may change, swapped as a whole."""

    rules: Rules
    options: Mapping[str, ServerOptions]  # by listener name
    greeting: str = ""
    timeouts: Timeouts = field(default_factory=Timeouts)
    resolver: ReverseResolver | None = None  # only when the rules need reverse DNS
    mailauth: MailAuthSettings = OFF  # sender checks and DKIM keys ([mailauth])
    generation: int = 0  # 0 at start, +1 per successful reload


@dataclass(slots=True)
class ServerContext:
    hostname: str
    queue: QueueStore
    users: Any  # goniec.admin.users.UserStore | None; verify() runs in a thread
    tls_context: ssl.SSLContext | None
    counter: SharedConnectionCounter
    settings: Settings
    rates: SharedRates = field(default_factory=SharedRates)
    clock: Callable[[], float] = time.monotonic  # rates and lockouts; system-wide
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("goniec.server"))
    sessions: set[Any] = field(default_factory=set)  # live Session objects
    tasks: set[Any] = field(default_factory=set)  # their asyncio tasks
    mailauth: MailAuthRuntime | None = None  # the checker and held-body budget of this process
    queued: Callable[[str], None] | None = None  # told each accepted queue id (the runner)
