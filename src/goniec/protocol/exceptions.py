"""Exceptions of the protocol core.

Owns the two ways the core can refuse to go on. `PeerProtocolError` is the only
exception bytes from the peer can ever cause (h11's invariant); everything the
peer gets wrong otherwise becomes an SMTP reply. `LocalProtocolError` means the
shell used the core wrongly (a bug in our own code).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of the protocol core's exceptions."""


class LocalProtocolError(ProtocolError):
    """The shell called the core out of turn (respond() with nothing pending, ...)."""


class PeerProtocolError(ProtocolError):
    """The peer sent bytes the core can no longer accept (data after the connection closed)."""
