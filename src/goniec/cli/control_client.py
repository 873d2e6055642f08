"""The CLI's side of the control socket, and its printing helpers.

Owns asking the running server (`goniec.admin.control.call` on
`admin.control_socket`) and turning failures into one clear line and exit
code 1: "the server is not running" when nothing answers, the server's own
reason otherwise. Also the rich consoles, tables and the progress bar of
bulk actions. Raises `SystemExit` through `fail`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from goniec.admin.contract import QueueFilter
from goniec.config import find_config_file, load_config
from goniec.config.delivery import parse_duration
from goniec.config.schema import Config
from goniec.errors import ConfigError

# rich and the control socket's client are imported where they are used: `goniec serve`
# goes through this module, and its processes must not carry them (tests/meta/test_import_budget).
if TYPE_CHECKING:
    from rich.console import Console

    from goniec.admin.control import Progress as OnProgress

EXIT_FAILED = 1
EXIT_CONFIG = 2
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def config_option(f: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        metavar="FILE",
        default=None,
        help="Config file (default: $GONIEC_CONFIG, else ./goniec.toml, else built-in defaults).",
    )(f)


def source(config_path: str | None) -> Path | None:
    return find_config_file(config_path)


def load(config_path: str | None) -> Config:
    """The config, or exit 2 with the loader's message."""
    try:
        return load_config(source(config_path))
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)


def keep_owner(config: Config, path: Path) -> None:
    """Run as root, give a file the CLI just wrote (users, tokens) to the owner of
    data_dir: a server that dropped to server.user must still read it."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(config.data_path)
    except OSError:
        return
    if owner.st_uid == 0:
        return
    for p in (path, path.with_name(path.name + ".lock")):
        with contextlib.suppress(OSError):
            os.chown(p, owner.st_uid, owner.st_gid)


def socket_path(config: Config) -> Path:
    path = config.admin.control_socket
    assert path is not None  # filled in from data_dir by Config
    return path


class ServerNotRunning(Exception):
    pass


def ask(config: Config, op: str, args: dict[str, Any] | None = None, *,
        timeout: float = 30.0, on_progress: OnProgress | None = None) -> Any:
    """The server's answer; ServerNotRunning when nothing answers; fail() on an error reply."""
    from goniec.admin import control

    try:
        return control.call(socket_path(config), op, args, timeout=timeout,
                            on_progress=on_progress)
    except control.Unreachable:
        raise ServerNotRunning from None
    except control.ControlError as exc:
        fail(f"goniec: {exc}")


def live(config: Config, op: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    """`ask`, for commands that need the running server: fail() when it is down."""
    try:
        return ask(config, op, args, **kw)
    except ServerNotRunning:
        fail(f"goniec: the server is not running (nothing answers at {socket_path(config)})")


def say_fallback() -> None:
    click.echo("goniec: the server is not running; reading the spool directly", err=True)


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    # Not a terminal (a pipe, a test): no colours, and wide enough not to wrap cells.
    out = sys.stderr if stderr else sys.stdout
    tty = out.isatty()
    return Console(file=out, highlight=False, soft_wrap=not tty, width=None if tty else 200,
                   no_color=not tty)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
          *, header: bool = True) -> None:
    from rich.table import Table

    t = Table(*columns, title=title, box=None, pad_edge=False, header_style="bold",
              title_justify="left", show_header=header)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console().print(t)


@contextlib.contextmanager
def progress_bar(what: str) -> Iterator[OnProgress]:
    """A progress callback drawing a bar on a terminal's stderr (nothing otherwise)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    err = console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task(what, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


# --------------------------------------------------------------------------- queue filters

STATES = ("held", "deferred", "active", "done")


def _age(value: str | None, option: str) -> float:
    if not value:
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def filter_options(f: F) -> F:
    """--sender --recipient --domain --state --older-than --newer-than (AND-ed)."""
    for opt in reversed([
        click.option("--sender", default="", help="Sender contains this (\"<>\": null sender)."),
        click.option("--recipient", default="", help="A recipient contains this."),
        click.option("--domain", default="", help="A recipient is in this domain (or below)."),
        click.option("--state", type=click.Choice(STATES), default=None, help="Message state."),
        click.option("--older-than", default=None, metavar="AGE", help="e.g. 30m, 2h, 1d."),
        click.option("--newer-than", default=None, metavar="AGE", help="e.g. 30m, 2h, 1d."),
    ]):
        f = opt(f)
    return f


def make_filter(ids: tuple[str, ...], sender: str, recipient: str, domain: str,
                state: str | None, older_than: str | None, newer_than: str | None
                ) -> QueueFilter:
    return QueueFilter(ids=tuple(ids), sender=sender, recipient=recipient, domain=domain,
                       state=state or "",  # type: ignore[arg-type]
                       min_age=_age(older_than, "--older-than"),
                       max_age=_age(newer_than, "--newer-than"))


def queue_rows_of(config: Config, flt: QueueFilter) -> list[dict[str, Any]] | None:
    """The rows from the running server as JSON dicts; None when it is down."""
    try:
        rows: list[dict[str, Any]] = ask(config, "queue_list", {"filter": flt.to_json()})
    except ServerNotRunning:
        return None
    return rows


