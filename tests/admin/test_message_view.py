"""admin.message_view: one queued message for the operator, read from the real spool."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from goniec.admin import message_view
from goniec.admin.message_view import MAX_READ, PREVIEW_LIMIT, MessageNotFound, show
from goniec.model import Envelope, MailParams, Recipient
from goniec.queue.api import QueueStore, RecipientStatus
from goniec.queue.fs import FsQueueStore
from goniec.queue.records import SubmissionInfo

NOW = 1_800_000_000.0
SESSION = SubmissionInfo("s1", "192.0.2.7", "client.test", "alice")
SIMPLE = b"Subject: hi\r\nFrom: alice@sender.test\r\n\r\nHello there.\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FsQueueStore]:
    s = FsQueueStore(tmp_path / "spool", min_free_space=0)
    yield s
    s.close()


def put(store: QueueStore, body: bytes | list[bytes], *rcpts: Recipient,
        sender: str = "alice@sender.test", held: bool = False, **params: Any) -> str:
    async def main() -> str:
        w = store.new_message()
        for chunk in [body] if isinstance(body, bytes) else body:
            await w.write(chunk)
        env = Envelope(sender, rcpts or (Recipient("bob@dest.test"),), MailParams(**params))
        return await w.commit(env, SESSION, held=held, hold_reason="dmarc quarantine" * held)
    return asyncio.run(main())


def as_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=SMTP)


def roundtrip(view: message_view.MessageView) -> dict[str, Any]:
    """What /api/v1 sends: plain JSON, encodable as UTF-8."""
    text = json.dumps(view.to_json(), ensure_ascii=False)
    text.encode("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def test_envelope_recipients_and_trail(store: FsQueueStore) -> None:
    qid = put(store, SIMPLE,
              Recipient("bob@dest.test", frozenset({"FAILURE", "DELAY"}), "rfc822;Bob@Dest.test"),
              Recipient("carol@dest.test"), held=True, ret="HDRS", envid="ENV-9")
    msg = store.get(qid)
    assert msg is not None
    st = dataclasses.replace(msg.recipients[1], status=RecipientStatus.DEFERRED, attempts=2,
                             next_attempt=NOW + 60, last_reply="451 4.3.0 later")
    asyncio.run(store.update_recipients(qid, {1: st}))
    trail = [{"time": "2026-11-26T10:00:00Z", "event": "received", "session": "s1"}]
    data = roundtrip(show(store, qid, NOW, trail))
    assert data["id"] == qid and data["size"] == msg.size and data["created"].endswith("Z")
    assert (data["sender"], data["ret"], data["envid"]) == ("alice@sender.test", "HDRS", "ENV-9")
    assert (data["held"], data["hold_reason"], data["state"]) == (True, "dmarc quarantine",
                                                                  "held")
    assert data["submitted"] == {"session": "s1", "peer_ip": "192.0.2.7", "helo": "client.test",
                                 "auth_user": "alice"}
    bob, carol = data["recipients"]
    assert bob == {"address": "bob@dest.test", "status": "pending", "attempts": 0,
                   "next_attempt": None, "last_reply": "", "notify": ["DELAY", "FAILURE"],
                   "orcpt": "rfc822;Bob@Dest.test"}
    assert (carol["status"], carol["attempts"], carol["last_reply"]) == ("deferred", 2,
                                                                          "451 4.3.0 later")
    assert carol["next_attempt"] == "2027-01-15T08:01:00Z" and carol["notify"] is None
    assert data["trail"] == trail
    assert data["partial"] is False and data["notes"] == []
    assert data["headers"] == [["Subject", "hi"], ["From", "alice@sender.test"]]
    assert data["preview"] == {"content_type": "text/plain", "charset": "utf-8",
                               "text": "Hello there.\n", "truncated": False}
    assert data["parts"] == [{"content_type": "text/plain", "charset": None, "filename": None,
                              "disposition": None, "size": 14, "depth": 0}]


def test_unknown_id(store: FsQueueStore) -> None:
    with pytest.raises(MessageNotFound):
        show(store, "0000000000000000000000", NOW)
    with pytest.raises(KeyError):  # MessageNotFound is a KeyError
        show(store, "../../etc/passwd", NOW)


def test_multipart_structure_and_preview(store: FsQueueStore) -> None:
    inner = EmailMessage()
    inner["Subject"] = "forwarded"
    inner.set_content("inner text")
    msg = EmailMessage()
    msg["Subject"] = "report"
    msg.set_content("Cześć, the report is attached.\n", cte="quoted-printable")
    msg.add_alternative("<p>Cze&#347;&#263;, <b>the report</b></p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 " + bytes(range(256)) * 4, maintype="application",
                       subtype="pdf", filename="raport złoty.pdf")
    msg.add_attachment(inner)
    qid = put(store, as_bytes(msg))
    view = show(store, qid, NOW)
    parts = [(p.content_type, p.depth, p.charset, p.filename, p.disposition, p.size)
             for p in view.parts]
    assert parts == [
        ("multipart/mixed", 0, None, None, None, None),
        ("multipart/alternative", 1, None, None, None, None),
        ("text/plain", 2, "utf-8", None, None, len("Cześć, the report is attached.\r\n".encode())),
        ("text/html", 2, "utf-8", None, None, 41 + 2),  # with its CRLF
        ("application/pdf", 1, None, "raport złoty.pdf", "attachment", 9 + 1024),
        ("message/rfc822", 1, None, None, "attachment", None),
        ("text/plain", 2, "utf-8", None, None, len(b"inner text\r\n")),
    ]
    assert view.preview is not None
    assert (view.preview.content_type, view.preview.text) == (
        "text/plain", "Cześć, the report is attached.\n")
    assert not view.partial


def test_html_only_preview_is_text(store: FsQueueStore) -> None:
    msg = EmailMessage()
    msg["Subject"] = "html"
    msg.set_content("<html><head><style>p {color: red}</style><script>alert('x')</script>"
                    "</head><body><p>Hello &amp; welcome</p><p>Line&nbsp;two</p></body></html>",
                    subtype="html", charset="iso-8859-2")
    qid = put(store, as_bytes(msg))
    preview = show(store, qid, NOW).preview
    assert preview is not None
    assert preview.content_type == "text/html" and preview.charset == "iso-8859-2"
    assert preview.text == "Hello & welcome\nLine two"


def test_rfc2047_and_hostile_headers_stay_data(store: FsQueueStore) -> None:
    head = (b"Subject: =?utf-8?q?Za=C5=BC=C3=B3=C5=82=C4=87?=\r\n =?utf-8?b?IGfEmcWbbMSF?= ja\r\n"
            b"From: =?iso-8859-2?q?Pawe=B3?= <pawel@sender.test>\r\n"
            b"X-Script: <script>alert(document.cookie)</script>\r\n"
            b"To: \"<script>x</script>\" <bob@dest.test>\r\n"
            b"X-Bad: =?x-unknown?q?abc?= =?utf-8?b?!!!?= =?utf-8?q?=FF?= =?zlib?b?eJzLSM0BAA==?=\r\n"
            b"X-Utf8: Za\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87\r\n"
            b"X-Latin1: caf\xe9\r\n"
            b"X-Empty:\r\n"
            b"\r\nbody\r\n")
    qid = put(store, head)
    data = roundtrip(show(store, qid, NOW))
    headers = data["headers"]
    raw = dict(data["raw_headers"])
    assert headers == [
        ["Subject", "Zażółć gęślą ja"],
        ["From", "Paweł <pawel@sender.test>"],
        ["X-Script", "<script>alert(document.cookie)</script>"],
        ["To", "\"<script>x</script>\" <bob@dest.test>"],
        # What cannot be decoded is shown as it is (never dropped); bad bytes as U+FFFD.
        ["X-Bad", "=?x-unknown?q?abc?= =?utf-8?b?!!!?= \ufffd =?zlib?b?eJzLSM0BAA==?="],
        ["X-Utf8", "Zażółć"],  # RFC 6532 raw UTF-8
        ["X-Latin1", "café"],  # not UTF-8: every byte still shows
        ["X-Empty", ""],
    ]
    assert raw["Subject"] == ("=?utf-8?q?Za=C5=BC=C3=B3=C5=82=C4=87?=\r\n"
                              " =?utf-8?b?IGfEmcWbbMSF?= ja")
    assert raw["X-Script"] == "<script>alert(document.cookie)</script>"


def test_malformed_mime_does_not_break_the_view(store: FsQueueStore) -> None:
    body = (b"Content-Type: multipart/mixed; boundary=\"b\"\r\nSubject: broken\r\n\r\n"
            b"--b\r\nContent-Type: text/plain; charset=zlib\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\neJzLSM3JyQcABiwCFQ==\r\n"
            b"--b\r\nContent-Type: text/plain; charset=\"x-no-such\"\r\n"
            b"Content-Disposition: attachment; filename*=bogus''%ZZ\r\n\r\nplain\r\n"
            b"--b\r\nContent-Type: ;;;\r\n\r\n???\r\n")  # no closing boundary
    view = show(store, put(store, body), NOW)
    assert [p.content_type for p in view.parts] == ["multipart/mixed", "text/plain",
                                                    "text/plain", "text/plain"]
    assert view.preview is not None
    # A charset label never picks a decompressor: the bytes are shown as they are.
    assert view.preview.charset == "utf-8"
    assert "hello" not in view.preview.text
    json.dumps(view.to_json())


def test_deep_nesting_shows_the_header(store: FsQueueStore) -> None:
    levels = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                      for i in range(3000))
    view = show(store, put(store, b"Subject: deep\r\n" + levels + b"\r\nend\r\n"), NOW)
    assert ["Subject", "deep"] in [[h.name, h.value] for h in view.headers]
    assert view.partial and "could not be parsed" in view.notes[0]


def test_long_preview_is_capped(store: FsQueueStore) -> None:
    text = "zażółć gęślą jaźń " * 8000  # about 200 KiB of UTF-8
    msg = EmailMessage()
    msg["Subject"] = "long"
    msg.set_content(text, cte="8bit")
    view = show(store, put(store, as_bytes(msg)), NOW)
    assert view.preview is not None and view.preview.truncated
    assert len(view.preview.text.encode("utf-8")) <= PREVIEW_LIMIT
    assert text.startswith(view.preview.text) and len(view.preview.text) > 30000
    assert "\ufffd" not in view.preview.text  # a character cut at the cap is dropped
    assert not view.partial  # the message itself was read whole


def test_huge_message_is_read_bounded(store: FsQueueStore,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    head = (b"Subject: huge\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n"
            b"--xx\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            b"--xx\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    line = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n"
    chunk = line * 1000
    body = [head] + [chunk] * 200 + [b"--xx\r\nContent-Type: text/plain\r\n\r\nlast\r\n--xx--\r\n"]
    qid = put(store, body)  # about 14 MiB
    read = 0
    real_open = store.open_message

    class Counting:
        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            nonlocal read
            assert n >= 0, "never read the whole message"
            data = self.f.read(n)
            read += len(data)
            return data

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    monkeypatch.setattr(store, "open_message", lambda q: Counting(real_open(q)))
    view = show(store, qid, NOW)
    assert read <= MAX_READ + 1
    assert view.size > 3 * MAX_READ
    assert view.partial and str(MAX_READ) in view.notes[0]
    assert [p.content_type for p in view.parts] == ["multipart/mixed", "text/plain",
                                                    "application/octet-stream"]
    assert view.preview is not None and view.preview.text.startswith("see attachment")
    assert view.to_json()["partial"] is True
