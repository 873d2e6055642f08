"""The filesystem spool's message file: its layout, reading it back, and its body.

Owns the bytes of one queue/<id>.msg (blocking reads only; the writer is
`fswriter`)::

    <the message: exactly `size` bytes, Received: header included>
    goniec-envelope 1                          the envelope record, from byte
    {"id": ..., "size": 1234, ...}             `size` on, exactly as
    {"rcpt": ..., "status": "pending", ...}    `records.format_record` writes
    end 1                                      it: every recipient pending
    goniec-footer 1 00000000000000001234

The footer is the last 37 bytes of the file: `goniec-footer`, the layout
version, and the offset of the record (= the message size) as 20 decimal
digits, then a newline. The record goes after the message because the
recipients are known only at commit, when a large message is already on disk.
A file is valid only when the footer parses, its offset points inside the
file, the record between offset and footer parses, names this id and states
this size: a file cut short or scribbled over fails one of these.

`read_message` checks all that; `BodyReader` reads only the message bytes.
Raises `RecordError` for a file that is not valid, `OSError` as the system
reports it. Nothing here writes.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, BinaryIO

from . import records
from .api import QueuedMessage, RecordError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

FOOTER_MAGIC = b"goniec-footer 1 "
_DIGITS = 20
FOOTER_LEN = len(FOOTER_MAGIC) + _DIGITS + 1  # 37
# One read of the file's end usually brings the whole record with the footer.
_TAIL = 16 << 10
# A record larger than this is garbage, not a message (100 recipients take ~15 KiB).
MAX_RECORD = 64 << 20
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def footer(offset: int) -> bytes:
    """The footer of a file whose record starts at `offset` (the message size)."""
    return FOOTER_MAGIC + b"%020d\n" % offset


def open_read(path: str) -> int:
    """A read-only descriptor on `path`; FileNotFoundError when it is gone."""
    return os.open(path, _READ_FLAGS)


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:  # queue files never change, so only a damaged file does this
        raise RecordError(f"short read: {len(data)} of {n} bytes at {offset}")
    return data


def read_message(fd: int, file_size: int, queue_id: str) -> QueuedMessage:
    """The record embedded in the message file open on `fd`; RecordError if not valid."""
    if file_size < FOOTER_LEN:
        raise RecordError(f"no footer: the file has only {file_size} bytes")
    n = min(file_size, _TAIL)
    tail = _pread_exact(fd, n, file_size - n)
    foot = tail[-FOOTER_LEN:]
    digits = foot[len(FOOTER_MAGIC):-1]
    if not foot.startswith(FOOTER_MAGIC) or foot[-1:] != b"\n" or not digits.isdigit():
        raise RecordError(f"bad footer {foot[:60]!r}")
    offset = int(digits)
    end = file_size - FOOTER_LEN
    if offset > end:
        raise RecordError(f"footer points at {offset}, past the record's end {end}")
    if end - offset > MAX_RECORD:
        raise RecordError(f"record of {end - offset} bytes is too large")
    if offset >= file_size - n:
        data = tail[offset - (file_size - n): n - FOOTER_LEN]
    else:
        data = _pread_exact(fd, end - offset, offset)
    msg = records.parse_record(data)
    if msg.id != queue_id:
        raise RecordError(f"record of {msg.id} stored as {queue_id}")
    if msg.size != offset:
        raise RecordError(f"record says {msg.size} bytes, footer {offset}")
    return msg


class BodyReader(io.RawIOBase):
    """Read-only view of bytes [0, size) of a descriptor it owns (and closes).

    Reads use pread, so the view keeps its own position. Wrap it in an
    `io.BufferedReader` for readline and small reads (`open_body` does).
    """

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._size = size
        self._pos = 0

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._check_open()
        with memoryview(buffer) as view, view.cast("B") as flat:
            n = min(len(flat), self._size - self._pos)
            if n <= 0:
                return 0
            got = os.preadv(self._fd, [flat[:n]], self._pos)
        self._pos += got
        return got

    def readall(self) -> bytes:
        self._check_open()
        n = self._size - self._pos
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._pos)
        while len(data) < n:  # a huge read may come back short
            more = os.pread(self._fd, n - len(data), self._pos + len(data))
            if not more:
                raise RecordError(f"message file ended {n - len(data)} bytes early")
            data += more
        self._pos += n
        return data

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


def open_body(fd: int, size: int) -> BinaryIO:
    """A buffered, read-only file over the first `size` bytes of `fd` (which it owns)."""
    return io.BufferedReader(BodyReader(fd, size), buffer_size=64 << 10)
