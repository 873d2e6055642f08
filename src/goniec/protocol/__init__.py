"""The sans-IO SMTP protocol core (layer 1): bytes in, events out, no I/O.

Server side: build a `ServerConnection(ServerOptions(...))`, feed it with
`receive_data()`, pull `next_event()` and answer decision events with
`respond()`; send `data_to_send()`. Replies live in `goniec.replies`.
"""

from goniec.protocol.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    BadCommand,
    Closing,
    Connected,
    DataChunk,
    DataEnd,
    Decision,
    Event,
    Helo,
    MailFrom,
    MessageRejected,
    RcptTo,
    StartTls,
    TransactionReset,
)
from goniec.protocol.exceptions import LocalProtocolError, PeerProtocolError, ProtocolError
from goniec.protocol.options import ServerOptions
from goniec.protocol.server import ServerConnection
from goniec.protocol.state import (
    AUTH,
    BDAT,
    CLOSED,
    CONNECTING,
    DATA,
    GREETED,
    MAIL,
    RCPT,
    READY,
    STARTTLS,
    State,
)

__all__ = [
    "AUTH",
    "BDAT",
    "CLOSED",
    "CONNECTING",
    "DATA",
    "GREETED",
    "MAIL",
    "NEED_DATA",
    "PAUSED",
    "RCPT",
    "READY",
    "STARTTLS",
    "AuthCredentials",
    "BadCommand",
    "Closing",
    "Connected",
    "DataChunk",
    "DataEnd",
    "Decision",
    "Event",
    "Helo",
    "LocalProtocolError",
    "MailFrom",
    "MessageRejected",
    "PeerProtocolError",
    "ProtocolError",
    "RcptTo",
    "ServerConnection",
    "ServerOptions",
    "StartTls",
    "State",
    "TransactionReset",
]
