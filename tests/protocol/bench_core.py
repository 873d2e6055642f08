"""Micro-benchmark of the server protocol core (not a test).

Pushes whole pipelined sessions through `ServerConnection` in 64 KB receive
blocks with an accept-everything shell and prints messages per second:

    python tests/protocol/bench_core.py [--small N] [--large N]
"""

from __future__ import annotations

import argparse
import time

from goniec.errors import Reply
from goniec.protocol import (
    NEED_DATA,
    PAUSED,
    Connected,
    DataChunk,
    DataEnd,
    Decision,
    Helo,
    ServerConnection,
    ServerOptions,
)
from goniec.replies import R250_OK

BLOCK = 64 * 1024
GREETING = Reply(220, None, "mx.bench ESMTP")
HELLO = Reply(250, None, "mx.bench")
QUEUED = Reply(250, "2.0.0", "Ok: queued")


def make_body(size: int) -> bytes:
    """A CRLF body of about `size` octets: 76-character lines, some starting with a dot."""
    line = b"The quick brown fox jumps over the lazy dog, again and again and again!!\r\n"
    lines = []
    total = 0
    i = 0
    while total < size:
        item = (b"." + line) if i % 50 == 7 else line
        lines.append(item)
        total += len(item)
        i += 1
    return b"".join(lines)


def make_session(count: int, body_size: int) -> tuple[bytes, int]:
    body = make_body(body_size)
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    one = (
        b"MAIL FROM:<sender@example.org> SIZE=%d\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n"
        % len(body)
        + stuffed
        + b".\r\n"
    )
    return b"EHLO client.example\r\n" + one * count + b"QUIT\r\n", len(body)


def run(stream: bytes) -> tuple[int, int]:
    """Feed `stream` in 64 KB blocks; return (messages accepted, body octets seen)."""
    conn = ServerConnection(ServerOptions("mx.bench", max_message_size=0))
    messages = octets = 0
    respond = conn.respond
    next_event = conn.next_event
    for start in range(0, len(stream) + 1, BLOCK):
        conn.receive_data(stream[start : start + BLOCK] or b"")
        while True:
            event = next_event()
            if event is NEED_DATA:
                conn.data_to_send()
                break
            if event is PAUSED:
                raise AssertionError("decision left unanswered")
            if type(event) is DataChunk:
                octets += len(event.data)
            elif isinstance(event, Decision):
                if type(event) is DataEnd:
                    messages += 1
                    respond(QUEUED)
                elif type(event) is Connected:
                    respond(GREETING)
                elif type(event) is Helo:
                    respond(HELLO)
                else:
                    respond(R250_OK)
    return messages, octets


def bench(count: int, body_size: int) -> None:
    stream, body_len = make_session(count, body_size)
    t0 = time.perf_counter()
    messages, octets = run(stream)
    elapsed = time.perf_counter() - t0
    assert messages == count, (messages, count)
    assert octets == count * body_len, (octets, count * body_len)
    print(
        f"{count:>6} x {body_len:>7} octets: {elapsed:6.3f} s  "
        f"{count / elapsed:>9.0f} msg/s  {octets / elapsed / 1e6:7.1f} MB/s body"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000)
    args = parser.parse_args()
    bench(args.small, 1024)
    bench(args.large, 100 * 1024)


if __name__ == "__main__":
    main()
