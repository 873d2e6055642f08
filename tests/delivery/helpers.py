"""Small builders shared by the delivery tests."""

from __future__ import annotations

import io
import ssl
from dataclasses import replace
from typing import Any

import trustme

from goniec.delivery.destination import Destination, Route, Target, TlsMode
from goniec.delivery.outcome import DeliveryStatus, RecipientResult
from goniec.delivery.session import ClientTimeouts
from goniec.delivery.smtp_client import ClientPolicy, OutboundMessage
from goniec.model import Envelope, MailParams, Recipient

BODY = b"Subject: test\r\n\r\nHello from Goniec.\r\n"
FAST = ClientTimeouts(connect=2, greeting=2, helo=2, starttls=2, auth=2, mail=2, rcpt=2,
                      data_init=2, data_block=2, data_done=2, rset=1, quit=1)
POLICY = ClientPolicy("client.goniec.test", timeouts=FAST)
PLAIN = Route(tls=TlsMode.NONE)


def message(*rcpts: str | Recipient, body: bytes = BODY, sender: str = "alice@src.test",
            size: int | None = None, **params: Any) -> OutboundMessage:
    recipients = tuple(r if isinstance(r, Recipient) else Recipient(r)
                       for r in rcpts or ("bob@dest.test",))
    env = Envelope(sender, recipients, MailParams(**params))
    return OutboundMessage(env, lambda: io.BytesIO(body), size if size is not None else len(body),
                           queue_id="Q1")


def destination(*ports: int, route: Route = PLAIN, host: str = "127.0.0.1",
                name: str = "dest.test", tls_name: str = "mx.core.test") -> Destination:
    """Targets on `host` at `ports`, all named `tls_name` (certificate and SNI)."""
    targets = tuple(Target(tls_name, host, port) for port in ports)
    return Destination(name, targets, route)


def with_route(dest: Destination, **changes: Any) -> Destination:
    return replace(dest, route=replace(dest.route, **changes))


def statuses(results: list[RecipientResult]) -> list[DeliveryStatus]:
    return [r.status for r in results]


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("mx.core.test", "127.0.0.1", "::1"))).configure_cert(ctx)
    return ctx


DELIVERED = DeliveryStatus.DELIVERED
DEFERRED = DeliveryStatus.DEFERRED
FAILED = DeliveryStatus.FAILED
