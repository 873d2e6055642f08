"""Golden policy tests: files of facts in, decisions and replies out.

In the style of Postfix's smtpd_check tests. Each file in golden/ holds blocks:

    === title
    <TOML config>
    ---
    <case lines>

A case line is a verb, an optional argument and key=value facts. Lines that
end with `=> EXPECTED` ask for a decision; the rendered decision must start
with EXPECTED ("accept" when the check lets the command through, else the
reply as sent, e.g. "550 5.7.1 Unable to relay for <x@remote.example>"); in
EXPECTED, " ... " stands for any text.
Facts persist within a block (like a session): `client` starts a new one.

Verbs: client IP [rdns=NAME|none|tempfail] [server=IP] | auth USER|- | connect [rate=N]
| helo NAME | login [now= locked_until= user_failures=] | login_failed [now= failures=]
| mail ADDR|<> [size= messages= session_bytes= ip_rate= user_rate= storage=full required]
| rcpt ADDR [accepted=N] | data [received= bytes= session_bytes=] | resolve ADDR
| remote DOMAIN
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from goniec.config import load_config
from goniec.errors import Reply
from goniec.policy.build import build_rules
from goniec.policy.client import check_connect, check_helo
from goniec.policy.login import check_login, failed_login
from goniec.policy.recipients import resolve
from goniec.policy.rules import UNCHECKED, ReverseDns, Rules
from goniec.policy.transaction import MailFacts, RcptFacts, check_data_end, check_mail, check_rcpt

GOLDEN = Path(__file__).parent / "golden"
FILES = sorted(GOLDEN.glob("*.txt"))


@dataclass
class Facts:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address("198.51.100.1")
    server: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    reverse: ReverseDns = UNCHECKED
    user: str | None = None
    opts: dict[str, str] = field(default_factory=dict)


def _render(reply: Reply | None) -> str:
    return "accept" if reply is None else str(reply)


def _num(opts: dict[str, str], key: str, default: float = 0) -> float:
    return float(opts.get(key, default))


def decide(rules: Rules, f: Facts, verb: str, arg: str, opts: dict[str, str]) -> str | None:
    """Apply one line; the rendered decision, or None for a line that only sets facts."""
    if verb == "client":
        rdns = opts.get("rdns")
        reverse = UNCHECKED
        if rdns in ("none", "tempfail"):
            reverse = ReverseDns(rdns)
        elif rdns:
            reverse = ReverseDns("ok", rdns)
        server = opts.get("server")
        f.__init__(ipaddress.ip_address(arg), ipaddress.ip_address(server) if server else None,
                   reverse)
        return None
    if verb == "auth":
        f.user = None if arg == "-" else arg
        return None
    if verb == "connect":
        return _render(check_connect(rules, ip=f.ip, reverse=f.reverse,
                                     connection_rate=_num(opts, "rate")))
    if verb == "helo":
        return _render(check_helo(rules, arg, ip=f.ip, reverse=f.reverse))
    if verb == "login":
        return _render(check_login(rules, now=_num(opts, "now"),
                                   locked_until=_num(opts, "locked_until"),
                                   user_failures=_num(opts, "user_failures")))
    if verb == "login_failed":
        v = failed_login(rules, now=_num(opts, "now"), ip_failures=_num(opts, "failures"))
        return f"{v.reply} | delay={v.delay:g} lock_until={v.lock_until:g}"
    if verb == "mail":
        size = opts.get("size")
        return str(check_mail(rules, MailFacts(
            sender="" if arg == "<>" else arg,
            auth_required="required" in opts,
            auth_user=f.user,
            storage_ok=opts.get("storage") != "full",
            declared_size=int(size) if size else None,
            messages=int(_num(opts, "messages")),
            session_bytes=int(_num(opts, "session_bytes")),
            ip_message_rate=_num(opts, "ip_rate"),
            user_message_rate=_num(opts, "user_rate"),
        )))
    if verb == "rcpt":
        return str(check_rcpt(rules, RcptFacts(
            recipient=arg, ip=f.ip, reverse=f.reverse, auth_user=f.user,
            accepted=int(_num(opts, "accepted")), server_ip=f.server)))
    if verb == "data":
        return _render(check_data_end(rules, received_headers=int(_num(opts, "received")),
                                      message_bytes=int(_num(opts, "bytes")),
                                      session_bytes=int(_num(opts, "session_bytes"))))
    if verb == "resolve":
        found = resolve(rules.directory, arg)
        if found is None:
            return "unknown"
        return f"mailboxes={','.join(found.mailboxes) or '-'} forwards={','.join(found.forwards) or '-'}"
    if verb == "remote":
        r = rules.domains.remote_domain(arg)
        if r is None:
            return "none"
        return (f"{r.name} relay={str(r.relay).lower()} smart_host={r.smart_host or '-'}"
                f" port={r.port} tls={r.tls} login={r.username or '-'} helo={str(r.use_helo).lower()}")
    raise ValueError(f"unknown verb {verb!r}")


_OPTION = re.compile(r"[a-z_]+(=\S*)?")
_FLAGS = {"required"}
_ARG = re.compile(r'"(?:[^"\\]|\\.)*"\S*|\S+')  # a quoted local part may hold spaces


def parse_case(line: str) -> tuple[str, str, dict[str, str], str | None]:
    body, sep, expected = line.partition(" => ")
    verb, _, tail = body.strip().partition(" ")
    m = _ARG.match(tail.strip())
    first = m.group() if m else ""
    arg = ""
    if first and not (("=" in first or first in _FLAGS) and _OPTION.fullmatch(first)):
        arg, tail = first, tail.strip()[len(first):]
    rest = tail.split()
    opts = {}
    for word in rest:
        key, eq, value = word.partition("=")
        opts[key] = value if eq else "yes"
    return verb, arg, opts, (expected.strip() if sep else None)


def blocks(path: Path) -> list[tuple[str, int, str, list[tuple[int, str]]]]:
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("=== "):
            i += 1
            continue
        title, start = lines[i][4:].strip(), i + 1
        i += 1
        config: list[str] = []
        while i < len(lines) and lines[i].strip() != "---":
            config.append(lines[i])
            i += 1
        i += 1
        cases = []
        while i < len(lines) and not lines[i].startswith("=== "):
            text = lines[i].split(" #", 1)[0].strip() if not lines[i].lstrip().startswith("#") else ""
            if text:
                cases.append((i + 1, text))
            i += 1
        out.append((title, start, "\n".join(config), cases))
    return out


def matches(got: str, expected: str) -> bool:
    """`expected` is a prefix of `got`, where " ... " stands for any text."""
    pattern = ".*".join(re.escape(part) for part in expected.split(" ... "))
    return re.match(pattern, got, re.S) is not None


def test_golden_files_exist() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden(path: Path, tmp_path: Path) -> None:
    failures = []
    count = 0
    for title, start, config_text, cases in blocks(path):
        cfg = tmp_path / f"block{start}.toml"
        cfg.write_text('[server]\nhostname = "mx.goniec.test"\n' + config_text, encoding="utf-8")
        rules = build_rules(load_config(cfg))
        facts = Facts()
        for lineno, text in cases:
            verb, arg, opts, expected = parse_case(text)
            got = decide(rules, facts, verb, arg, opts)
            if expected is None:
                continue
            count += 1
            if got is None or not matches(got, expected):
                failures.append(f"{path.name}:{lineno} [{title}] {text}\n    got: {got}")
    assert count, f"{path.name} has no cases"
    assert not failures, "\n".join(failures)
