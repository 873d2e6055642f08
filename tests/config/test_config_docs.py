"""Every config key is documented in docs/configuration.md, in its section's table."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from goniec.config import Config
from goniec.config.mailauth import DkimKeySection, MailauthDomainSection
from goniec.config.schema import Listener
from goniec.config.sections import RecipientTableSection, RemoteDomainSection

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text("utf-8")

SECTIONS: dict[str, type[BaseModel]] = {
    "[[listeners]]": Listener,
    '[recipients."<domain>"]': RecipientTableSection,
    '[remote_domains."<domain>"]': RemoteDomainSection,
    "[[mailauth.dkim]]": DkimKeySection,
    '[mailauth.domains."<domain>"]': MailauthDomainSection,
}


def section_text(header: str) -> str:
    m = re.search(rf"^### `{re.escape(header)}`\n(.*?)(?=^### |^## )", DOCS, re.S | re.M)
    assert m, f"docs/configuration.md has no section {header}"
    return m.group(1)


def test_every_key_has_a_row_with_its_default() -> None:
    models = dict(SECTIONS)
    for name, field in Config.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            models[f"[{name}]"] = ann
    missing = []
    for header, model in models.items():
        text = section_text(header)
        for key in model.model_fields:
            if not re.search(rf"^\| `{key}` \|", text, re.M):
                missing.append(f"{header} {key}")
    assert not missing, f"undocumented keys: {missing}"


def test_docs_name_every_new_reply() -> None:
    for reply in ("554 5.7.1", "550 5.7.1", "550 5.1.1", "553 5.7.1", "452 4.5.3", "554 5.4.6",
                  "452 4.3.4", "421 4.7.0", "450 4.7.1", "554 5.7.25", "421 4.7.25", "451 4.4.3",
                  "550 5.7.23", "451 4.7.24"):
        assert reply in DOCS, reply
