"""The pause flag shared by every worker process of one server.

Owns `PauseFlag`: one byte in shared memory, created by app.py before the
workers fork (like `rates.SharedRates`), so `goniec pause` reaches every
process at once with no message to each. While it is set the listeners turn
new connections away with `421 4.3.2 Service paused` (RFC 5321 3.8, RFC 3463
X.3.2 "system not accepting network messages") and close them; sessions in
flight and delivery go on. It is not durable: a restarted server accepts
mail. Raises nothing.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from goniec.errors import Reply
from goniec.replies import R421_PAUSED, with_hostname


def paused_reply(hostname: str) -> Reply:
    """421 4.3.2 <hostname> Service paused, try again later (RFC 5321 4.2: host first)."""
    return with_hostname(R421_PAUSED, hostname)


class PauseFlag:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._since: Any = ctx.RawValue("d", 0.0)  # epoch seconds; 0 = not paused

    @property
    def paused(self) -> bool:
        return bool(self._since.value)

    @property
    def since(self) -> float:
        """When the server was paused (epoch seconds), 0.0 when it is not."""
        return float(self._since.value)

    def set(self, paused: bool) -> bool:
        """Pause or resume; True when this changed the state."""
        was = self.paused
        # One aligned 8-byte store: every worker sees either value, never a mix.
        if paused and not was:
            self._since.value = time.time()
        elif not paused:
            self._since.value = 0.0
        return was != paused
