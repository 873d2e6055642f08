"""One queued message as an operator sees it: `show()` and the `MessageView` it returns.

Owns reading a queued message for display: its envelope and per-recipient
state, its header fields in order (RFC 2047 encoded-words decoded for display,
the raw value kept too), its MIME structure as a flat list of parts, and a
text preview. Reads through `QueueStore.open_message` only, at most
`MAX_READ` bytes of it, and says so in the view when the message is longer
(the structure beyond is not shown). Header fields and bodies come from
whoever sent the message: they stay data here (the web layer escapes them),
nothing is stripped, and malformed encodings never raise. Blocking: run
`show` in a thread from async code. Raises `MessageNotFound` for an unknown
id; `OSError` when storage fails.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import email.policy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.feedparser import BytesFeedParser
from email.message import Message
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

from goniec.admin.queue_ops import message_state
from goniec.admin.service import iso_time
from goniec.queue.api import MessageNotFound, QueuedMessage, QueueStore

__all__ = ["MAX_READ", "PREVIEW_LIMIT", "HeaderView", "MessageNotFound", "MessageView",
           "PartView", "Preview", "RecipientView", "show"]

MAX_READ = 4 << 20  # bytes of the message parsed at most
PREVIEW_LIMIT = 64 << 10  # bytes of the preview part decoded at most
MAX_HEADERS = 1000  # header fields listed (of the top-level header)
MAX_PARTS = 1000  # MIME parts listed
_CHUNK = 64 << 10
_BLOCK_TAGS = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table",
               "blockquote", "pre", "hr"}


@dataclass(frozen=True, slots=True)
class RecipientView:
    address: str
    status: str
    attempts: int
    next_attempt: str | None  # ISO time, None when never scheduled
    last_reply: str
    notify: list[str] | None  # RFC 3461 NOTIFY words, None when not given
    orcpt: str | None  # RFC 3461 ORCPT "type;address"


@dataclass(frozen=True, slots=True)
class HeaderView:
    name: str
    value: str  # unfolded, RFC 2047 encoded-words decoded: for display
    raw: str  # as stored (folding kept); 8-bit bytes shown as UTF-8, else Latin-1


@dataclass(frozen=True, slots=True)
class PartView:
    content_type: str
    charset: str | None
    filename: str | None
    disposition: str | None  # "inline", "attachment", None when absent
    size: int | None  # decoded bytes of a leaf part; None for containers
    depth: int  # 0 for the message itself


@dataclass(frozen=True, slots=True)
class Preview:
    content_type: str  # the part it came from: "text/plain" or "text/html"
    charset: str
    text: str
    truncated: bool  # the part is longer than PREVIEW_LIMIT bytes


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    created: str
    size: int
    sender: str  # "" for the null reverse-path
    ret: str | None  # RFC 3461 4.3 RET: "FULL", "HDRS" or None
    envid: str | None  # RFC 3461 4.4 ENVID
    held: bool
    hold_reason: str
    state: str
    recipients: tuple[RecipientView, ...]
    headers: tuple[HeaderView, ...]
    parts: tuple[PartView, ...]
    preview: Preview | None
    partial: bool  # only part of the message was read or listed: see `notes`
    notes: tuple[str, ...] = ()
    trail: tuple[Mapping[str, Any], ...] = ()
    submitted: Mapping[str, Any] = field(default_factory=dict)  # session, peer, HELO, user

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "created": self.created, "size": self.size, "sender": self.sender,
            "ret": self.ret, "envid": self.envid, "held": self.held,
            "hold_reason": self.hold_reason, "state": self.state,
            "submitted": dict(self.submitted),
            "recipients": [_asdict(r) for r in self.recipients],
            "headers": [[h.name, h.value] for h in self.headers],
            "raw_headers": [[h.name, h.raw] for h in self.headers],
            "parts": [_asdict(p) for p in self.parts],
            "preview": None if self.preview is None else _asdict(self.preview),
            "partial": self.partial, "notes": list(self.notes),
            "trail": [dict(t) for t in self.trail],
        }


def _asdict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = dataclasses.asdict(obj)
    return out


def show(store: QueueStore, queue_id: str, now: float,
         trail: Iterable[Mapping[str, Any]] = ()) -> MessageView:
    """The view of queued message `queue_id`; `trail` is passed through as is."""
    msg = store.get(queue_id)
    if msg is None:
        raise MessageNotFound(queue_id)
    with store.open_message(queue_id) as f:
        data, more = _read_bounded(f)
    notes: list[str] = []
    if more:
        notes.append(f"only the first {MAX_READ} of {msg.size} bytes were read: "
                     "the structure beyond is not shown")
    parsed = _parse(data, notes)
    headers = _headers(parsed, notes) if parsed is not None else ()
    parts = _parts(parsed, notes) if parsed is not None else ()
    preview = _preview(parsed) if parsed is not None else None
    return MessageView(
        id=msg.id, created=iso_time(msg.created), size=msg.size, sender=msg.sender,
        ret=msg.envelope.params.ret, envid=msg.envelope.params.envid, held=msg.held,
        hold_reason=msg.hold_reason, state=message_state(msg, now),
        recipients=_recipients(msg), headers=headers, parts=parts, preview=preview,
        partial=bool(notes), notes=tuple(notes), trail=tuple(dict(t) for t in trail),
        submitted={"session": msg.info.session_id, "peer_ip": msg.info.peer_ip,
                   "helo": msg.info.helo, "auth_user": msg.info.auth_user},
    )


def _recipients(msg: QueuedMessage) -> tuple[RecipientView, ...]:
    return tuple(
        RecipientView(
            address=r.address, status=str(r.status), attempts=r.attempts,
            next_attempt=iso_time(r.next_attempt) if r.next_attempt else None,
            last_reply=r.last_reply,
            notify=None if r.recipient.notify is None else sorted(r.recipient.notify),
            orcpt=r.recipient.orcpt,
        )
        for r in msg.recipients
    )


def _read_bounded(f: Any) -> tuple[bytes, bool]:
    """At most MAX_READ bytes of `f`, and whether there was more."""
    chunks: list[bytes] = []
    left = MAX_READ
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks), bool(f.read(1))


def _parse(data: bytes, notes: list[str]) -> Message | None:
    parser = BytesFeedParser(policy=email.policy.default)
    try:
        for i in range(0, len(data), _CHUNK):
            parser.feed(data[i:i + _CHUNK])
        return parser.close()
    except Exception as exc:  # the stdlib parser on hostile input (deep nesting, ...)
        notes.append(f"the MIME structure could not be parsed ({type(exc).__name__}): "
                     "only the header is shown")
    try:
        return BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)
    except Exception:
        return None


def _text(value: str) -> str:
    """A header string from the parser, with 8-bit bytes (kept by the parser as
    surrogate escapes) shown as UTF-8 (RFC 6532), else as Latin-1: every byte shows."""
    if not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    data = value.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# RFC 2047 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _decode_word(charset: str, encoding: str, text: str) -> str | None:
    """One encoded-word's text, or None when it cannot be decoded (then it is shown as
    it is: nothing disappears)."""
    charset = charset.partition("*")[0]  # RFC 2231 5: charset*language
    try:
        b"a".decode(charset, "replace")  # refuses unknown labels and non-text codecs
        raw = text.encode("ascii")
        if encoding in "bB":
            data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
        else:  # RFC 2047 4.2: "_" is a space in the Q encoding
            data = binascii.a2b_qp(raw, header=True)
    except (LookupError, ValueError):  # binascii.Error and UnicodeError are ValueErrors
        return None
    return data.decode(charset, "replace")


def _decode(raw: str) -> str:
    """The display value: unfolded (RFC 5322 2.2.3), encoded-words decoded; never raises."""
    unfolded = raw.replace("\r", "").replace("\n", "").strip()
    out: list[str] = []
    pos = 0
    after_word = False
    for m in _ENCODED_WORD.finditer(unfolded):
        between = unfolded[pos:m.start()]
        decoded = _decode_word(*m.groups())
        # RFC 2047 6.2: white space between two encoded-words is not displayed.
        if not (after_word and decoded is not None and not between.strip(" \t")):
            out.append(between)
        out.append(m.group(0) if decoded is None else decoded)
        after_word = decoded is not None
        pos = m.end()
    out.append(unfolded[pos:])
    return "".join(out)


def _headers(msg: Message, notes: list[str]) -> tuple[HeaderView, ...]:
    out: list[HeaderView] = []
    for name, value in msg.raw_items():
        if len(out) >= MAX_HEADERS:
            notes.append(f"only the first {MAX_HEADERS} header fields are listed")
            break
        raw = _text(str(value))
        out.append(HeaderView(_text(name), _decode(raw), raw))
    return tuple(out)


def _safe(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception:
        return default


def _parts(msg: Message, notes: list[str]) -> tuple[PartView, ...]:
    out: list[PartView] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:  # depth first, in order, without recursion (nesting is the sender's)
        part, depth = stack.pop()
        if len(out) >= MAX_PARTS:
            notes.append(f"only the first {MAX_PARTS} MIME parts are listed")
            break
        container = part.is_multipart()
        size = None if container else _safe(lambda p=part: len(_payload(p)), None)
        out.append(PartView(
            content_type=_safe(part.get_content_type, "application/octet-stream"),
            charset=_safe(part.get_content_charset, None),
            filename=_safe(lambda p=part: _opt_text(p.get_filename()), None),
            disposition=_safe(part.get_content_disposition, None),
            size=size, depth=depth))
        if container:
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((c, depth + 1) for c in reversed(children)
                             if isinstance(c, Message))
    return tuple(out)


def _opt_text(value: object) -> str | None:
    return None if value is None else _text(str(value))


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _preview(msg: Message) -> Preview | None:
    leaves = [p for p in _walk(msg) if not p.is_multipart()
              and _safe(p.get_content_disposition, None) != "attachment"]
    for wanted in ("text/plain", "text/html"):
        part = next((p for p in leaves if _safe(p.get_content_type, "") == wanted), None)
        if part is not None:
            return _make_preview(part, wanted)
    return None


def _walk(msg: Message) -> list[Message]:
    found: list[Message] = []
    stack = [msg]
    while stack and len(found) < MAX_PARTS:
        part = stack.pop()
        found.append(part)
        children = part.get_payload() if part.is_multipart() else None
        # The parts of an attached message/rfc822 are its own, not this message's text.
        if isinstance(children, list) and _safe(part.get_content_type, "") != "message/rfc822":
            stack.extend(c for c in reversed(children) if isinstance(c, Message))
    return found


def _make_preview(part: Message, content_type: str) -> Preview:
    data = _safe(lambda: _payload(part), b"")
    truncated = len(data) > PREVIEW_LIMIT
    charset = _safe(part.get_content_charset, None) or "us-ascii"
    try:
        # bytes.decode refuses codecs that are not text encodings ("zlib", "base64"):
        # the label is the sender's, and must never pick a decompressor.
        b"a".decode(charset, "replace")
    except LookupError:  # an unknown label: UTF-8 shows most of it
        charset = "utf-8"
    if charset in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit bytes mislabelled as ASCII are usually UTF-8
    decoder = codecs.getincrementaldecoder(charset)(errors="replace")
    # final=False when cut: a character split at the cap is dropped, not shown as U+FFFD.
    text = decoder.decode(data[:PREVIEW_LIMIT], final=not truncated).replace("\r\n", "\n")
    if content_type == "text/html":
        text = _html_text(text)
    return Preview(content_type, charset, text, truncated)


class _TextOf(HTMLParser):
    """The text of an HTML body: tags dropped, script and style skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def _html_text(html: str) -> str:
    parser = _TextOf()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; never let a page break the view
        pass
    lines = (" ".join(line.split()) for line in "".join(parser.out).split("\n"))
    text = "\n".join(line for line in lines if line)
    return text
