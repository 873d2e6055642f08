"""Helpers shared by the manager's pages and its JSON API.

Owns calling the `Admin` facade whatever the shape of a method (sync or
async), the two credential checks (an admin login, an API token), turning
query or form fields into a `contract.QueueFilter`, and turning facade
results into JSON-ready data. No HTTP here. Raises `FilterError` for a
filter value that does not parse.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from goniec.admin.contract import QueueFilter
from goniec.config.delivery import parse_duration
from goniec.config.schema import Config

STATES = ("held", "deferred", "active", "done")


class FilterError(ValueError):
    """A queue filter field that does not parse; str() names the field."""


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a facade method, awaiting it when it is a coroutine."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def verify_admin(admin: Any, config: Config, name: str, password: str) -> bool:
    """An admin login check (argon2, in a thread inside the facade). Unknown user = wrong."""
    return bool(await call(admin.admin_user_check, name, password))


async def check_token(admin: Any, config: Config, secret: str) -> str | None:
    """The name of the API token whose secret this is, else None."""
    name = await call(admin.token_check, secret)
    return str(name) if name else None


def _age(field: str, text: str) -> float:
    text = text.strip()
    if not text or text == "0":
        return 0.0
    try:
        return parse_duration(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise FilterError(f"{field}: {exc}") from None


def parse_filter(fields: Mapping[str, str], ids: list[str] | tuple[str, ...] = ()) -> QueueFilter:
    """A QueueFilter from query/form fields: sender, recipient, domain, state, min_age,
    max_age (seconds or "30m", "2h", "1d"), and queue ids."""
    state = fields.get("state", "").strip()
    if state and state not in STATES:
        raise FilterError(f"state: must be one of {', '.join(STATES)} (got {state!r})")
    return QueueFilter(
        ids=tuple(i.strip() for i in ids if i.strip()),
        sender=fields.get("sender", "").strip(),
        recipient=fields.get("recipient", "").strip(),
        domain=fields.get("domain", "").strip().lower(),
        state=state,  # type: ignore[arg-type]
        min_age=_age("min_age", fields.get("min_age", "")),
        max_age=_age("max_age", fields.get("max_age", "")),
    )


def filter_query(flt: QueueFilter) -> dict[str, str]:
    """The non-empty fields of a filter as form/query fields (ages in seconds)."""
    out = {k: str(getattr(flt, k)) for k in ("sender", "recipient", "domain", "state")
           if getattr(flt, k)}
    for k in ("min_age", "max_age"):
        if getattr(flt, k):
            out[k] = str(int(getattr(flt, k)))
    return out


def jsonable(value: Any) -> Any:
    """Facade results (rows with to_json, dataclasses, lists) as plain JSON data."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def human_seconds(seconds: float) -> str:
    """3725 -> "1h 2m"; 42 -> "42s"."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    parts = []
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            parts.append(f"{s // n}{unit}")
            s %= n
    return " ".join(parts[:2])


def show_value(value: Any) -> str:
    """A log or trail field for display: lists joined with ", ", the rest as str()."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)
