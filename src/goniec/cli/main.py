"""The `goniec` command line: serve, reload, config check, user add/list/delete, queue list.

Owns argument parsing, reading passwords, and printing; every command is a thin
call into `goniec.config`, `goniec.admin` or `goniec.app`. The commands that
talk to the running server (status, sessions, pause, resume, stop, queue
show and actions, token) live in `cli.admin_cmds`. Exit codes: 0 ok,
1 the operation failed (e.g. user exists), 2 bad configuration or usage.
The config file is -c FILE, else $GONIEC_CONFIG, else ./goniec.toml if it
exists, else the built-in defaults.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from goniec import __version__
from goniec.admin.contract import QueueFilter
from goniec.cli import control_client
from goniec.config import dump_config
from goniec.config.load import check_files, config_warnings
from goniec.config.schema import Config
from goniec.errors import ConfigError

# `goniec serve` starts here, and its processes keep what this module imports: the
# user store (argon2), the admin service and rich are imported by the commands that
# need them (tests/meta/test_import_budget.py).
if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from goniec.admin.service import QueueRow
    from goniec.admin.users import UserStore

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_CONFIG = 2


def password_hasher() -> PasswordHasher | None:
    """The hasher for `user add`; None = argon2-cffi's defaults. Tests patch this."""
    return None


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


# -c FILE, config discovery and loading are shared with cli.admin_cmds.
config_option = control_client.config_option
_source = control_client.source
_load = control_client.load


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="goniec", message="%(prog)s %(version)s")
def cli() -> None:
    """Goniec, a mail transfer agent."""


@cli.command()
@config_option
def serve(config_path: str | None) -> None:
    """Run the SMTP server until SIGTERM or SIGINT."""
    config = _load(config_path)
    try:
        from goniec.app import run
    except ModuleNotFoundError as exc:
        if exc.name != "goniec.app":
            raise
        _fail("goniec: the server (goniec.app) is not part of this installation")
    try:
        run(config, _source(config_path))
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


@cli.command()
@config_option
def reload(config_path: str | None) -> None:
    """Make the running server re-read its config (SIGHUP), without dropping sessions.

    The file is checked first: a bad one is reported here and the server is
    not disturbed. The server is found through the pid file in data_dir.
    """
    import os
    import signal

    from goniec.server.pidfile import pid_path, running_pid

    config = _load(config_path)
    pid = running_pid(config.data_path)
    if pid is None:
        _fail(f"goniec: no running server found ({pid_path(config.data_path)} is missing or"
              " stale)")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        _fail(f"goniec: the server (pid {pid}) is gone")
    except PermissionError:
        _fail(f"goniec: not allowed to signal the server (pid {pid})")
    click.echo(f"reload requested from pid {pid}; the server log says the outcome")


# --------------------------------------------------------------------------- config


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@config_option
def config_check(config_path: str | None) -> None:
    """Validate the config and print the effective configuration as TOML."""
    source = _source(config_path)
    config = _load(config_path)
    problems = check_files(config, str(source) if source else "built-in defaults")
    if problems:
        _fail("\n".join(problems), EXIT_CONFIG)
    for warning in config_warnings(config):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"# goniec {__version__}: effective configuration from "
               f"{source if source else 'built-in defaults'}")
    click.echo(dump_config(config), nl=False)


# --------------------------------------------------------------------------- users


@cli.group()
def user() -> None:
    """Manage SMTP AUTH users (the users file), or with --admin the manager's users."""


def _users(config: Config, admin: bool, hasher: PasswordHasher | None = None) -> UserStore:
    from goniec.admin.service import open_users
    from goniec.admin.users import UserStore

    if not admin:
        return open_users(config, hasher)
    assert config.admin.users_file is not None  # filled in from data_dir by Config
    return UserStore(config.admin.users_file, hasher)


admin_option = click.option("--admin", "admin", is_flag=True,
                            help="The web manager's users (admin.users_file), not SMTP AUTH.")


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _read_password(from_stdin: bool) -> str:
    if not from_stdin and _stdin_is_tty():
        value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


@user.command("add")
@click.argument("name")
@config_option
@click.option("--password-stdin", is_flag=True, help="Read the password as one line from stdin.")
@click.option("--replace", is_flag=True, help="Set a new password if the user exists.")
@admin_option
def user_add(name: str, config_path: str | None, password_stdin: bool, replace: bool,
             admin: bool) -> None:
    """Add user NAME (asks for the password twice on a terminal)."""
    from goniec.admin.users import UserError, check_name

    config = _load(config_path)
    try:
        check_name(name)
        store = _users(config, admin, password_hasher())
        if name in store and not replace:
            raise UserError(f"user {name!r} already exists (use --replace to set a new password)")
        store.add(name, _read_password(password_stdin), replace=replace)
    except UserError as exc:
        _fail(f"goniec: {exc}")
    except OSError as exc:
        _fail(f"goniec: cannot write {exc.filename or config.users_path}: {exc.strerror}")
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    control_client.keep_owner(config, store.path)
    click.echo(f"{'updated' if replace else 'added'} user {name} in {store.path}")


@user.command("list")
@config_option
@admin_option
def user_list(config_path: str | None, admin: bool) -> None:
    """Print the user names, one a line."""
    config = _load(config_path)
    try:
        names = _users(config, admin).list()
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    for name in names:
        click.echo(name)


@user.command("delete")
@click.argument("name")
@config_option
@admin_option
def user_delete(name: str, config_path: str | None, admin: bool) -> None:
    """Delete user NAME."""
    from goniec.admin.users import UserError

    config = _load(config_path)
    try:
        store = _users(config, admin)
        store.delete(name)
        control_client.keep_owner(config, store.path)
    except UserError as exc:
        _fail(f"goniec: {exc}")
    except OSError as exc:
        _fail(f"goniec: cannot write {exc.filename or config.users_path}: {exc.strerror}")
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    click.echo(f"deleted user {name}")


# --------------------------------------------------------------------------- queue


@cli.group()
def queue() -> None:
    """Look at the mail queue and act on it."""


def _queue_rows(config: Config, flt: QueueFilter | None = None) -> list[QueueRow]:
    """The rows read from the spool itself (the server is down)."""
    if not config.spool_path.is_dir():
        return []  # nothing was ever queued here
    import time

    from goniec.admin.queue_ops import list_rows
    from goniec.admin.service import queue_rows
    from goniec.queue.fs import FsQueueStore  # the one backend the CLI reads directly

    store = FsQueueStore(config.spool_path)
    try:
        if flt is None or flt.is_empty:
            return queue_rows(store.list_messages())
        return list_rows(store, flt, time.time())
    finally:
        store.close()


@queue.command("list")
@click.argument("ids", nargs=-1)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@control_client.filter_options
def queue_list(ids: tuple[str, ...], config_path: str | None, as_json: bool,
               **fields: Any) -> None:
    """List queued messages with their recipients' delivery state ("!": held).

    Asks the running server; when it is down, reads the spool directly.
    """
    config = _load(config_path)
    flt = control_client.make_filter(ids, **fields)
    try:
        found = control_client.queue_rows_of(config, flt)
        if found is None:
            control_client.say_fallback()
            rows = _queue_rows(config) if flt.is_empty else _queue_rows(config, flt)
        else:
            rows = [_row(r) for r in found]
    except OSError as exc:
        _fail(f"goniec: cannot read the spool {exc.filename or config.spool_path}: {exc.strerror}")
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    if not rows:
        click.echo("queue is empty")
        return
    click.echo(_table(rows))


def _row(data: dict[str, Any]) -> QueueRow:
    from goniec.admin.service import QueueRow, RecipientRow

    rcpts = tuple(RecipientRow(**r) for r in data.get("recipients", ()))
    return QueueRow(data["id"], data["created"], data["size"], data["sender"], rcpts,
                    data.get("held", False), data.get("hold_reason", ""))


def _table(rows: list[QueueRow]) -> str:
    head = ("ID", "CREATED", "SIZE", "SENDER", "RECIPIENTS")
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        rcpts = [f"{x.address} ({x.status}" + (f", {x.attempts} tries" if x.attempts else "")
                 + ")" for x in r.recipients] or ["-"]
        if r.held:  # "!" after the id, as in Postfix's mailq; the reason comes first
            rcpts.insert(0, "held" + (f": {r.hold_reason}" if r.hold_reason else ""))
        lines.append((r.id + ("!" if r.held else ""), r.created, str(r.size), r.sender or "<>",
                      rcpts[0]))
        lines += [("", "", "", "", more) for more in rcpts[1:]]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = []
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line[:4], widths, strict=True)]
        out.append("  ".join([*cells, line[4]]).rstrip())
    held = sum(r.held for r in rows)
    return "\n".join(out) + f"\n{len(rows)} message(s)" + (f", {held} held (!)" if held else "")


# ------------------------------------------------------------------ sendmail, mailauth


@cli.command("sendmail", add_help_option=False, context_settings={
    "ignore_unknown_options": True, "allow_extra_args": True,
    "allow_interspersed_args": False})
@click.pass_context
def sendmail_cmd(ctx: click.Context) -> None:
    """sendmail-compatible: queue the message on stdin ([-t] [-f SENDER] [-i] [-C FILE] RCPT...)."""
    from goniec.cli.sendmail import main as sendmail_main

    sys.exit(sendmail_main(ctx.args))


def _register_mailauth() -> None:
    from goniec.cli.mailauth_cmds import dkim_group, dns_group

    cli.add_command(dkim_group)
    cli.add_command(dns_group)


_register_mailauth()

from goniec.cli import admin_cmds  # noqa: E402 - it imports this module's helpers

admin_cmds.register(cli, queue)


def main() -> None:
    cli(prog_name="goniec")


if __name__ == "__main__":
    main()
