"""The effective configuration as TOML text, for `goniec config check` (layer 1).

Owns `dump_config`. The output loads back into an equal `Config`: paths are
written absolute, sizes with the shortest exact unit, "no value" as "".
Writes nothing; stdlib has a TOML reader but no writer, and the values here
are only strings, numbers, booleans, arrays of strings and small inline
tables, so a few lines do.
"""

from __future__ import annotations

import ipaddress
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from goniec.config.schema import Config, _SizeMarker
from goniec.config.values import format_size


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_PLAIN = FieldInfo()


def _value(value: object, field: FieldInfo) -> str:
    if any(isinstance(m, _SizeMarker) for m in field.metadata) and isinstance(value, int):
        size = format_size(value)
        return _string(size) if isinstance(size, str) else str(size)
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | Path):
        return _string(str(value))
    if isinstance(value, frozenset):
        return "[" + ", ".join(_string(str(v)) for v in sorted(value)) + "]"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v, _PLAIN) if isinstance(v, int | float)
                               else _string(str(v)) for v in value) + "]"
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return _string(str(value))
    if isinstance(value, dict):
        items = ", ".join(f"{_string(str(k))} = {_value(v, _PLAIN)}"
                          for k, v in sorted(value.items()))
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _tables_of_models(field: FieldInfo) -> bool:
    """dict[str, SomeSection]: written as one [a.b."key"] table per entry."""
    args = typing.get_args(field.annotation)
    return len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel)


def _inherits(field: FieldInfo) -> bool:
    """A key whose None means "as the section above" rather than "empty" (a path)."""
    return field.default is None and "Literal" in str(field.annotation)


def _table(header: str, model: BaseModel) -> list[str]:
    """`[header]` with the model's plain keys, then its sub-models as `[header.key]`."""
    lines = [header]
    nested: list[str] = []
    base = header.strip("[]")  # also for "[[a.b]]": nested tables are [a.b.c]
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            nested += ["", *_table(f"[{base}.{name}]", value)]
        elif isinstance(value, tuple) and value and all(isinstance(v, BaseModel) for v in value):
            for item in value:  # an array of tables: [[mailauth.dkim]]
                nested += ["", *_table(f"[[{base}.{name}]]", item)]
        elif isinstance(value, dict) and value and all(
                isinstance(v, BaseModel) for v in value.values()):
            for key, item in sorted(value.items()):  # [mailauth.domains."example.test"]
                nested += ["", *_table(f"[{base}.{name}.{_string(str(key))}]", item)]
        elif isinstance(value, dict) and not value and _tables_of_models(field):
            continue  # no such tables
        elif value is None and _inherits(field):
            continue  # unset: follows the enclosing section (TOML has no null)
        else:
            lines.append(f"{name} = {_value(value, field)}")
    return lines + nested


def dump_config(config: Config) -> str:
    """The effective configuration as TOML; `load_config` of it gives an equal Config."""
    out: list[str] = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, tuple):
            for item in value:
                out += [*_table(f"[[{name}]]", item), ""]
        elif isinstance(value, dict):  # tables keyed by domain: [recipients."example.test"]
            for key, item in sorted(value.items()):
                out += [*_table(f"[{name}.{_string(key)}]", item), ""]
        else:
            out += [*_table(f"[{name}]", value), ""]
    return "\n".join(out)
