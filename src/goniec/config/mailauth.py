"""The `[mailauth]` section: inbound SPF/DKIM/DMARC/ARC checks and DKIM signing (layer 1).

Owns the keys of `[mailauth]` and `[[mailauth.dkim]]`: types, defaults and
single-section checks. The words of the policy keys are those of
`goniec.mailauth.decision.InboundPolicy`, so config, docs and code share one
vocabulary. Reads no files: that a `key_file` exists and holds a usable key
is checked by `load.py` (`check_dkim_keys`), which names the key path in its
error. Raises `ValueError` / `SchemaValueError` through pydantic, like `schema`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from goniec.config.sections import Domains, Seconds, optional_path
from goniec.config.values import SchemaValueError, SizeMarker, normalize_domain, parse_size, quote

Size = Annotated[int, BeforeValidator(parse_size), SizeMarker()]

# RFC 6376 3.1: selector = sub-domain *( "." sub-domain ); sub-domain = Let-dig [Ldh-str].
_SELECTOR_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DkimKeySection(_Section):
    """One signing key: mail whose From: domain is `domain` is signed with d=domain, s=selector."""

    domain: StrictStr
    selector: StrictStr
    key_file: Path
    subdomains: StrictBool = False  # also sign mail From: any subdomain (d= stays `domain`)
    arc: StrictBool = False  # also ARC-seal mail forwarded for `domain` (RFC 8617; RSA only)

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, v: str) -> str:
        try:
            return normalize_domain(v)
        except ValueError as exc:
            raise ValueError(f"{quote(v)} {exc}") from None

    @field_validator("selector")
    @classmethod
    def _check_selector(cls, v: str) -> str:
        if len(v) > 200 or not _SELECTOR_RE.fullmatch(v):
            raise ValueError("must be a DKIM selector: labels of letters, digits and hyphens"
                             f" separated by dots (RFC 6376 3.1) (got {quote(v)})")
        return v

    @field_validator("key_file", mode="before")
    @classmethod
    def _check_key_file(cls, v: object, info: ValidationInfo) -> Path:
        path = optional_path(v, info)
        if path is None:
            raise ValueError("must be the path of the private key (goniec dkim keygen writes"
                             " DOMAIN.SELECTOR.key)")
        return path


class MailauthDomainSection(_Section):
    """The inbound policy for mail TO one local domain; unset keys follow [mailauth]."""

    dmarc: Literal["record", "enforce"] | None = None
    quarantine: Literal["hold", "accept"] | None = None
    spf_fail: Literal["record", "reject"] | None = None
    temperror: Literal["accept", "defer"] | None = None


class MailauthSection(_Section):
    """Sender authentication: checks on mail from the internet, DKIM signing of ours."""

    # "on": SPF, DKIM, DMARC and ARC on mail from the internet (neither logged in
    # nor from relay.networks), results in Authentication-Results; "off": none.
    # Off by default: every checked message waits for DNS (up to dns.timeout when
    # the resolver is unreachable), so an MX switches it on with a [dns] it trusts.
    inbound: Literal["on", "off"] = "off"
    dmarc: Literal["record", "enforce"] = "record"
    quarantine: Literal["hold", "accept"] = "hold"
    spf_fail: Literal["record", "reject"] = "record"
    temperror: Literal["accept", "defer"] = "accept"
    helo: StrictBool = True  # also SPF-check the HELO name (RFC 7208 2.3)
    arc: StrictBool = True  # verify ARC chains (RFC 8617) and record arc=
    spf_time_limit: Seconds = 20.0  # RFC 7208 4.6.4: at least 20 s
    authserv_aliases: Domains = frozenset()  # more names whose A-R fields we remove
    max_size: Size = parse_size("10MB")  # larger messages are neither checked nor signed
    memory: Size = parse_size("100MB")  # bodies held at once by one worker process
    dkim: tuple[DkimKeySection, ...] = ()
    domains: dict[str, MailauthDomainSection] = Field(default_factory=dict)

    @field_validator("domains", mode="before")
    @classmethod
    def _domain_keys(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v  # pydantic reports the type
        out: dict[str, object] = {}
        for key, body in v.items():
            try:
                name = normalize_domain(str(key))
            except ValueError as exc:
                raise SchemaValueError(f"{quote(str(key))} {exc}", (str(key),)) from None
            if name in out:
                raise SchemaValueError(f"{quote(str(key))} is listed twice", (str(key),))
            out[name] = body
        return out

    @field_validator("dkim", mode="before")
    @classmethod
    def _dkim_array(cls, v: object) -> object:
        if isinstance(v, dict):
            raise ValueError("must be an array of tables: write [[mailauth.dkim]], not"
                             " [mailauth.dkim]")
        return v

    @model_validator(mode="after")
    def _cross(self) -> MailauthSection:
        if self.max_size <= 0:
            raise SchemaValueError("must be more than 0 bytes", ("max_size",))
        if self.memory < self.max_size:
            raise SchemaValueError("must be at least max_size, so that one message of that"
                                   " size can be held", ("memory",))
        seen: dict[tuple[str, str], int] = {}
        for i, key in enumerate(self.dkim):
            name = (key.domain, key.selector.lower())
            if name in seen:
                raise SchemaValueError(
                    f"{quote(key.selector)} of {quote(key.domain)} is listed twice (also"
                    f" dkim[{seen[name]}])", ("dkim", i, "selector"))
            seen[name] = i
        return self

    @property
    def signs(self) -> bool:
        return bool(self.dkim)


def mailauth_warnings(section: MailauthSection,
                      local_domains: frozenset[str] | None = None) -> list[str]:
    """Valid settings that do nothing, for `config check` and the start-up log."""
    out = []
    if local_domains is not None:
        # The policy is chosen by the recipient's domain: only mail we accept as
        # local is ever checked under it (relayed mail comes from our own clients).
        out += [f'mailauth.domains."{name}": not in domains.local, so no mail is checked'
                " under this policy" for name in sorted(section.domains)
                if name not in local_domains]
    if section.inbound == "on":
        return out
    idle = [f"{k} = {quote(getattr(section, k))}" for k, default in (
        ("dmarc", "record"), ("spf_fail", "record"), ("temperror", "accept"))
        if getattr(section, k) != default]
    if section.domains:
        idle.append("[mailauth.domains]")
    if idle:
        out.append(f'mailauth.inbound = "off": {", ".join(idle)} has no effect (no message is'
                   " checked)")
    return out


__all__ = ["DkimKeySection", "MailauthDomainSection", "MailauthSection", "mailauth_warnings"]
