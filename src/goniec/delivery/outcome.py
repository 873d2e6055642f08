"""The result of a delivery attempt, per recipient (pure, layer 1).

Owns `DeliveryStatus`, `RecipientResult` (what the queue runner records and
what a DSN is made from), the classification of a reply into delivered /
deferred / failed, and the replies made locally when no server answered
(connect failure, timeout, DNS trouble, TLS or AUTH problems). Following
DESIGN 1.5, anything not explicitly permanent is deferred. No I/O.

Wording follows Postfix, so that logs and bounces read familiarly:
"connect to mx.example[192.0.2.1]:25: Connection refused",
"host mx.example[192.0.2.1] said: 550 5.1.1 User unknown (in reply to RCPT TO)".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from goniec.errors import Reply
from goniec.model import NOTIFY_SUCCESS, Recipient


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"  # the next hop took responsibility (2xx to the end of data)
    DEFERRED = "deferred"  # try again later (4xx, no answer, anything unclear)
    FAILED = "failed"  # permanent (5xx): bounce


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """What happened to one recipient in one delivery attempt.

    reply: the server's reply when `remote` is True, else a reply made locally
        that explains the problem (its text names the host where one was involved).
    remote_host: "name[address]" of the server the result came from, or None.
    remote: True when `reply` is the server's own words (a DSN then has
        Remote-MTA: dns; name and Diagnostic-Code: smtp; <reply>, RFC 3464 2.3).
    dsn_relayed: delivered to a server that did not offer DSN, so our own
        NOTIFY=SUCCESS duty ends here with a "relayed" DSN (RFC 3461 5.2.2).
    """

    recipient: Recipient
    status: DeliveryStatus
    reply: Reply
    remote_host: str | None = None
    remote: bool = False
    dsn_relayed: bool = False

    @property
    def status_code(self) -> str:
        """RFC 3463 status: the reply's enhanced code, else the class default."""
        if self.reply.enhanced:
            return self.reply.enhanced
        return f"{self.reply.code // 100}.0.0"

    @property
    def wants_relayed_dsn(self) -> bool:
        """Delivered, to a non-DSN server, and the sender asked for NOTIFY=SUCCESS."""
        notify = self.recipient.notify or frozenset()
        return (self.status is DeliveryStatus.DELIVERED and self.dsn_relayed
                and NOTIFY_SUCCESS in notify)

    def describe(self) -> str:
        """One line for logs and DSN text, Postfix style."""
        if self.remote and self.remote_host:
            return f"host {self.remote_host} said: {_one_line(self.reply)}"
        return _one_line(self.reply)


def _one_line(reply: Reply) -> str:
    return str(reply).replace("\r\n", " ").replace("\n", " ")


def status_of(reply: Reply) -> DeliveryStatus:
    """2xx delivered, 5xx failed, anything else (4xx, odd codes) deferred."""
    if 200 <= reply.code < 300:
        return DeliveryStatus.DELIVERED
    if 500 <= reply.code < 600:
        return DeliveryStatus.FAILED
    return DeliveryStatus.DEFERRED


def host_label(name: str, address: str) -> str:
    """Postfix's "name[address]" form."""
    return f"{name}[{address}]"


def soften(reply: Reply) -> Reply:
    """The same reply made temporary (5xx -> 4xx, X.y.z -> 4.y.z): for problems
    that are ours or the route's, not the recipient's (AUTH refused, a 5xx
    greeting), which must not bounce mail at once (DESIGN 1.5)."""
    if reply.code < 500:
        return reply
    enhanced = "4" + reply.enhanced[1:] if reply.enhanced else None
    return Reply(reply.code - 100, enhanced, reply.text)


# --- replies made locally (RFC 3463 codes) --------------------------------------------

def connect_failed(host: str, port: int, error: str) -> Reply:
    # RFC 3463 3.5: X.4.1 no answer from host.
    return Reply(451, "4.4.1", f"connect to {host}:{port}: {error}")


def conversation_failed(host: str, what: str) -> Reply:
    # X.4.2: bad connection (lost, timed out, garbled).
    return Reply(451, "4.4.2", f"{host}: {what}")


def no_targets(name: str) -> Reply:
    # X.4.4: unable to route.
    return Reply(451, "4.4.4", f"no host to deliver to for {name}")


def dns_temporary(text: str) -> Reply:
    # X.4.3: directory server failure.
    return Reply(451, "4.4.3", text)


def tls_failed(host: str, error: str) -> Reply:
    # RFC 3463 3.8: X.7.5 cryptographic failure.
    return Reply(451, "4.7.5", f"TLS with {host} failed: {error}")


def tls_not_offered(host: str) -> Reply:
    # X.7.4 security features not supported (RFC 3207 is required by the route).
    return Reply(451, "4.7.4", f"TLS is required, but was not offered by host {host}")


def auth_failed(host: str, detail: str) -> Reply:
    # X.7.8 authentication credentials invalid; temporary: the route's fault.
    return Reply(454, "4.7.8", f"SASL authentication failed with {host}: {detail}")


def auth_unavailable(host: str, detail: str) -> Reply:
    return Reply(454, "4.7.0", f"cannot authenticate to {host}: {detail}")


def remote_said(host: str, reply: Reply, command: str) -> Reply:
    """A server reply re-worded as ours, e.g. for a refused greeting."""
    return Reply(reply.code, reply.enhanced,
                 f"host {host} refused to talk to me: {_one_line(reply)} (in reply to {command})")


def results_for_all(recipients: tuple[Recipient, ...], reply: Reply, *,
                    remote_host: str | None = None, remote: bool = False
                    ) -> list[RecipientResult]:
    """The same verdict for every recipient (connection-level trouble)."""
    status = status_of(reply)
    return [RecipientResult(rcpt, status, reply, remote_host, remote) for rcpt in recipients]
