"""Queue ids: unique across processes and restarts, sortable by creation time.

Owns the id format and nothing else. An id is 23 characters of lowercase
Crockford base32 (digits and letters without i, l, o, u) for a 115-bit number:
48 bits of Unix time in milliseconds, then 67 random bits from a
generator of this process, seeded from the kernel (`os.urandom`) at import
and again in every forked child, so no two processes share a random state.
A generator rather than `os.urandom` per id: that system call released and
re-took the interpreter lock on every accepted message (about 5 % of the
event loop's time under load, waiting for the spool's threads). Ids are
not secrets: nothing is guarded by guessing one.
Because the width is fixed and the alphabet is in ASCII order, sorting ids as
strings sorts them by creation time (to the millisecond). Ids are safe as file
names and in log lines. No I/O beyond seeding; raises nothing but
`ValueError` from `id_time` for a malformed id.

Uniqueness is probabilistic, as for UUIDs: two ids minted in the same
millisecond collide with probability 2**-67, which no lock is needed to beat.
"""

from __future__ import annotations

import os
import random
import re
import time

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_LENGTH = 23
_TIME_BITS = 48
_RANDOM_BITS = 67  # 48 + 67 = 115 = 23 * 5: every character carries information
_TIME_MASK = (1 << _TIME_BITS) - 1
_DECODE = {c: i for i, c in enumerate(ALPHABET)}
_ID_RE = re.compile(f"[{re.escape(ALPHABET)}]{{{ID_LENGTH}}}")
# Private, so that code seeding the global `random` (tests do) cannot repeat ids.
_random = random.Random(os.urandom(32))


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def new_id(now: float | None = None) -> str:
    """A fresh id for a message created at `now` (epoch seconds, default: the clock)."""
    ms = int((time.time() if now is None else now) * 1000) & _TIME_MASK
    rnd = _random.getrandbits(_RANDOM_BITS)
    n = (ms << _RANDOM_BITS) | rnd
    out = []
    for _ in range(ID_LENGTH):
        out.append(ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def is_valid(queue_id: object) -> bool:
    """True when `queue_id` has the exact id shape (so it is safe inside a path)."""
    return isinstance(queue_id, str) and _ID_RE.fullmatch(queue_id) is not None


def id_time(queue_id: str) -> float:
    """The creation time (epoch seconds, millisecond precision) encoded in an id."""
    if not is_valid(queue_id):
        raise ValueError(f"not a queue id: {queue_id!r}")
    n = 0
    for c in queue_id:
        n = (n << 5) | _DECODE[c]
    return (n >> _RANDOM_BITS) / 1000.0
