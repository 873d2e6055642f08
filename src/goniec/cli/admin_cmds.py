"""The operator's commands against the running server: status, sessions, pause,
resume, stop, queue show and actions, API tokens.

Owns their arguments and printing; every one is a thin call over the
control socket into `goniec.admin.service.Admin` (cli.control_client), so
the CLI, the web manager and /api/v1 share one implementation. `queue list`
and `queue show` read the spool directly when the server is down (saying so
on stderr); the others then fail with exit code 1. Tokens are files, so
`token ...` works with the server up or down. Register with `register(cli,
queue_group)`. Exit codes: 0 ok, 1 failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click

from goniec.admin.contract import QUEUE_ACTIONS, ActionResult, QueueFilter, SessionRow, Status
from goniec.cli.control_client import (
    ServerNotRunning,
    ask,
    config_option,
    duration,
    fail,
    filter_options,
    keep_owner,
    live,
    make_filter,
    print_json,
    progress_bar,
    queue_rows_of,
    say_fallback,
    table,
)
from goniec.cli.control_client import (
    load as _load,
)
from goniec.config.schema import Config


def _local_admin(config: Config) -> Any:
    """An Admin on the spool itself (server down), or None when nothing was ever queued."""
    if not config.spool_path.is_dir():
        return None
    from goniec.admin.service import Admin
    from goniec.queue.fs import FsQueueStore  # the one backend the CLI reads directly

    return Admin(config, None, FsQueueStore(config.spool_path))


# --------------------------------------------------------------------------- status


@click.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(config_path: str | None, as_json: bool) -> None:
    """The running server: state, uptime, listeners, sessions, queue, the last hour."""
    config = _load(config_path)
    st = Status.from_json(live(config, "status"))
    if as_json:
        print_json(st.to_json())
        return
    hour = st.last_hour
    rows = [("state", st.state), ("version", st.version), ("hostname", st.hostname),
            ("pid", st.pid), ("started", f"{st.started} (up {duration(st.uptime)})"),
            ("workers", st.workers), ("sessions", st.sessions),
            ("queue", f"{st.queue_messages} messages, {st.queue_deferred} deferred,"
                      f" {st.queue_held} held, oldest {duration(st.queue_oldest_age)}"),
            ("last hour", ", ".join(f"{v} {k}" for k, v in hour.items()) or "-")]
    rows += [(f"listener {x.name}", f"{x.address} tls={x.tls} auth={x.auth}")
             for x in st.listeners]
    rows += [(f"worker {i}", f"did not answer ({why}): its sessions and counts are missing")
             for i, why in st.workers_unreachable.items()]
    table(("", ""), rows, header=False)


# --------------------------------------------------------------------------- sessions


@click.group("sessions", invoke_without_command=True)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def sessions_group(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """List the live SMTP sessions of every worker (`sessions disconnect ID` ends one)."""
    if ctx.invoked_subcommand is not None:
        return
    config = _load(config_path)
    rows = [SessionRow.from_json(r) for r in live(config, "sessions")]
    if as_json:
        print_json([r.to_json() for r in rows])
        return
    if not rows:
        click.echo("no sessions")
        return
    table(("ID", "WORKER", "LISTENER", "CLIENT", "HELO", "USER", "TLS", "STATE", "FOR", "MSGS"),
          [(r.id, r.worker, r.listener, r.client, r.helo or "-", r.user or "-", r.tls or "-",
            r.state, duration(r.duration), r.messages) for r in rows])


@sessions_group.command("disconnect")
@click.argument("session_id")
@config_option
def sessions_disconnect(session_id: str, config_path: str | None) -> None:
    """End session SESSION_ID (the client gets 421 4.3.2)."""
    config = _load(config_path)
    if not live(config, "disconnect", {"id": session_id}):
        fail(f"goniec: no session {session_id}")
    click.echo(f"disconnected session {session_id}")


# --------------------------------------------------------------------------- control


@click.command("pause")
@config_option
def pause_cmd(config_path: str | None) -> None:
    """Stop accepting new connections (421 4.3.2); sessions in flight and delivery go on."""
    live(_load(config_path), "pause")
    click.echo("paused: new connections get 421 4.3.2 until `goniec resume`")


@click.command("resume")
@config_option
def resume_cmd(config_path: str | None) -> None:
    """Accept new connections again after `goniec pause`."""
    live(_load(config_path), "resume")
    click.echo("resumed: accepting connections")


@click.command("stop")
@config_option
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the exit.")
def stop_cmd(config_path: str | None, timeout: float) -> None:
    """Stop the server gracefully (sessions in flight finish) and wait until it has exited."""
    from goniec.server.pidfile import running_pid

    config = _load(config_path)
    pid = running_pid(config.data_path)
    live(config, "stop")
    deadline = time.monotonic() + timeout
    # The pid file's lock goes with the last process of the server: that is "exited".
    while running_pid(config.data_path) is not None:
        if time.monotonic() > deadline:
            fail(f"goniec: the server (pid {pid}) is still running after {timeout:g}s")
        time.sleep(0.05)
    click.echo(f"stopped (pid {pid})")


# --------------------------------------------------------------------------- queue


def queue_show(queue_id: str, config_path: str | None, as_json: bool) -> None:
    config = _load(config_path)
    try:
        view = ask(config, "queue_show", {"id": queue_id})
    except ServerNotRunning:
        say_fallback()
        view = _show_locally(config, queue_id)
    if as_json:
        print_json(view)
        return
    _print_view(view)


def _show_locally(config: Config, queue_id: str) -> dict[str, Any]:
    from goniec.queue.api import MessageNotFound

    admin = _local_admin(config)
    if admin is None:
        fail(f"goniec: no message {queue_id} in the queue")
    try:
        view: dict[str, Any] = asyncio.run(admin.queue_show(queue_id)).to_json()
    except MessageNotFound:
        fail(f"goniec: no message {queue_id} in the queue")
    finally:
        admin.store.close()
    return view


def _print_view(v: dict[str, Any]) -> None:
    held = f" (held: {v.get('hold_reason') or 'yes'})" if v.get("held") else ""
    click.echo(f"Queue ID: {v['id']}\nCreated:  {v['created']}\nSize:     {v['size']}\n"
               f"Sender:   {v['sender'] or '<>'}\nState:    {v['state']}{held}")
    table(("RECIPIENT", "STATUS", "TRIES", "NEXT", "LAST REPLY"),
          [(r.get("address"), r.get("status"), r.get("attempts"), r.get("next_attempt") or "-",
            r.get("last_reply") or "") for r in v.get("recipients", [])])
    for name, value in v.get("headers", [])[:40]:
        click.echo(f"{name}: {value}")
    for entry in v.get("trail", []):
        click.echo("trail: " + " ".join(f"{k}={val}" for k, val in entry.items()))
    for note in v.get("notes", []):
        click.echo(f"note: {note}")


def queue_action(action: str, ids: tuple[str, ...], all_: bool, yes: bool, as_json: bool,
                 config_path: str | None, flt: QueueFilter) -> None:
    config = _load(config_path)
    if flt.is_empty and not all_:
        fail(f"goniec: name queue ids or a filter, or give --all to {action} every message", 2)
    if action in ("delete", "bounce") and not yes:
        rows = queue_rows_of(config, flt)
        if rows is None:
            live(config, "ping")  # fails with the usual message
            return
        if len(rows) > 1 and not click.confirm(f"{action} {len(rows)} messages?", err=True):
            fail("goniec: nothing done")
    with progress_bar(f"{action}") as update:
        data = live(config, "queue_action", {"action": action, "filter": flt.to_json()},
                    timeout=300.0, on_progress=update)
    result = ActionResult.from_json(data)
    if as_json:
        print_json(result.to_json())
    else:
        click.echo(f"{action}: {len(result.done)} done, {len(result.skipped)} skipped")
        for queue_id in result.done:
            click.echo(f"  {queue_id}: {action} done")
        for queue_id, why in result.skipped.items():
            click.echo(f"  {queue_id}: skipped: {why}")
    if result.skipped and not result.done:
        raise SystemExit(1)


def _action_command(action: str) -> click.Command:
    doc = {"retry": "Try these messages again now.",
           "hold": "Hold these messages: no delivery until released.",
           "release": "Release held messages for delivery.",
           "delete": "Delete these messages without a report to the sender.",
           "bounce": "Return these messages to their senders (a failure report) and remove them.",
           }[action]

    @click.argument("ids", nargs=-1)
    @filter_options
    @click.option("--all", "all_", is_flag=True, help="Act on every message the filter leaves.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting or bouncing.")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @config_option
    def command(ids: tuple[str, ...], all_: bool, yes: bool, as_json: bool,
                config_path: str | None, **fields: Any) -> None:
        queue_action(action, ids, all_, yes, as_json, config_path, make_filter(ids, **fields))

    command.__doc__ = doc + " By queue ID, or by filter (--all for every message)."
    return click.command(action)(command)


# --------------------------------------------------------------------------- tokens


def _tokens(config: Config) -> Any:
    from goniec.admin.tokens import TokenStore

    assert config.admin.tokens_file is not None
    return TokenStore(Path(config.admin.tokens_file))


@click.group("token")
def token_group() -> None:
    """API tokens of the manager's /api/v1 (only their hashes are stored)."""


@token_group.command("add")
@click.argument("name")
@config_option
def token_add(name: str, config_path: str | None) -> None:
    """Make token NAME and print its secret (shown only this once)."""
    from goniec.admin.tokens import TokenError

    config = _load(config_path)
    store = _tokens(config)
    try:
        secret = store.add(name)
    except (TokenError, OSError) as exc:
        fail(f"goniec: {exc}")
    keep_owner(config, store.path)
    click.echo(secret)
    click.echo(f"token {name} added; the secret above is not stored, keep it now", err=True)


@token_group.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def token_list(config_path: str | None, as_json: bool) -> None:
    """The token names and when they were made."""
    from goniec.admin.service import iso_time

    rows = _tokens(_load(config_path)).list()
    if as_json:
        print_json([r.to_json() for r in rows])
    elif not rows:
        click.echo("no tokens")
    else:
        table(("NAME", "CREATED"), [(r.name, iso_time(r.created)) for r in rows])


@token_group.command("delete")
@click.argument("name")
@config_option
def token_delete(name: str, config_path: str | None) -> None:
    """Delete token NAME: requests with it are refused from now on."""
    from goniec.admin.tokens import TokenError

    config = _load(config_path)
    store = _tokens(config)
    try:
        store.delete(name)
    except (TokenError, OSError) as exc:
        fail(f"goniec: {exc}")
    keep_owner(config, store.path)
    click.echo(f"deleted token {name}")


def register(cli: click.Group, queue_group: click.Group) -> None:
    for command in (status_cmd, sessions_group, pause_cmd, resume_cmd, stop_cmd, token_group):
        cli.add_command(command)

    @queue_group.command("show")
    @click.argument("queue_id")
    @config_option
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def show(queue_id: str, config_path: str | None, as_json: bool) -> None:
        """One message: envelope, recipients' attempts, headers, parts, trail."""
        queue_show(queue_id, config_path, as_json)

    @queue_group.command("trail")
    @click.argument("queue_id")
    @config_option
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def trail(queue_id: str, config_path: str | None, as_json: bool) -> None:
        """What happened to one message, also after it left the queue: received, each
        attempt, delivered, deferred, bounced, and operators' actions."""
        from goniec.admin.service import message_trail

        steps = message_trail(_load(config_path), queue_id)
        if as_json:
            print_json(steps)
            return
        if not steps:
            fail(f"goniec: no trail of {queue_id} (unknown, older than [log] trail_days, or"
                 " the trail is off)")
        table(("TIME", "EVENT", "DETAILS"),
              [(e.get("time", ""), e.get("event", ""),
                " ".join(f"{k}={v}" for k, v in e.items() if k not in ("time", "event", "msg")))
               for e in steps])

    for action in QUEUE_ACTIONS:
        queue_group.add_command(_action_command(action))

