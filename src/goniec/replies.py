"""Temporary shim: the catalog moves here from goniec.protocol.replies."""
from goniec.protocol.replies import *  # noqa: F403
