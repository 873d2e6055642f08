"""Failed-login throttling: slow down, then lock out an address (pure, layer 1).

Owns the AUTH decisions around the password check: `check_login` before it
(a locked-out address gets `421 4.7.0` and the connection closes, without a
password check, so a brute force costs us nothing; an account with too many
recent failures gets `454 4.7.0`), `failed_login` after a wrong password (the
`535` is delayed a little more per recent failure from that address, and past
the per-minute limit the address is locked for `lockout` seconds), and
`client_key`, the counter key of a client (an IPv6 client counts per
network, /64 by default, since one host owns a whole /64). Counters and the
time are inputs; the shell keeps them (server.rates). No I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from goniec.errors import Reply
from goniec.policy.addresses import IPAddress, plain_ip
from goniec.policy.rules import Rules
from goniec.replies import R421_LOGIN_LOCKED, R454_LOGIN_RATE_USER, R535_AUTH_FAILED, with_hostname


def client_key(ip: IPAddress, ipv6_prefix: int = 64) -> str:
    """"192.0.2.1", or "2001:db8::/64" for any address of that IPv6 network."""
    ip = plain_ip(ip)
    if ip.version == 4 or ipv6_prefix >= 128:
        return str(ip)
    return str(ipaddress.IPv6Network((int(ip), ipv6_prefix), strict=False))


@dataclass(frozen=True, slots=True)
class FailedLogin:
    reply: Reply
    delay: float  # seconds to wait before sending `reply`
    lock_until: float  # lock the address until this time; 0 = no lock


def check_login(rules: Rules, *, now: float, locked_until: float,
                user_failures: float) -> Reply | None:
    """Before verifying a password: None to go on, else the refusal."""
    if locked_until > now:
        return with_hostname(R421_LOGIN_LOCKED, rules.hostname)
    limit = rules.rates.failed_logins_per_user
    if limit and user_failures >= limit:
        return R454_LOGIN_RATE_USER
    return None


def failed_login(rules: Rules, *, now: float, ip_failures: float) -> FailedLogin:
    """After a wrong password; `ip_failures` counts this one."""
    rates = rules.rates
    if rates.failed_logins_per_ip and ip_failures > rates.failed_logins_per_ip:
        return FailedLogin(with_hostname(R421_LOGIN_LOCKED, rules.hostname), 0.0,
                           now + rates.lockout)
    delay = min(rates.login_delay * ip_failures, rates.login_delay_max)
    return FailedLogin(R535_AUTH_FAILED, delay, 0.0)
