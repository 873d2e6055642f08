"""Zeroed arrays in memory shared with forked worker processes.

Owns `zeroed_array`: an anonymous shared mapping (MAP_SHARED, so writes are
seen by every process forked after it is made) viewed as a ctypes array.
multiprocessing's `RawArray` gives the same sharing but writes zeros over
the whole array, which makes every page resident in the parent at once
(4 MB for the connection and rate tables, counted again in each worker's
RSS); a fresh mapping is zero already, and a page only becomes resident when
some process first touches it. Raises OSError when the mapping cannot be made.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

_TYPES: dict[str, Any] = {"Q": ctypes.c_uint64, "q": ctypes.c_int64, "i": ctypes.c_int32,
                          "d": ctypes.c_double}


def zeroed_array(typecode: str, length: int) -> Any:
    """A ctypes array of `length` zeros of `typecode` ("Q", "q", "i" or "d"), shared
    with every process forked after this call."""
    ctype = _TYPES[typecode]
    size = max(1, ctypes.sizeof(ctype) * length)
    # fileno -1: an anonymous mapping, shared (not private) by default on Linux.
    area = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    # The array keeps `area` alive: from_buffer holds a reference to its buffer.
    return (ctype * length).from_buffer(area)
