"""The manager's Settings tabs and SMTP Users page.

Owns the handlers that show and save the settings tabs (the logic lives in
`goniec.admin.settings`: tomlkit edit, validation by the loader, atomic
replace; here we call it in a thread, then ask the facade to reload) and the
SMTP users page (list, add, reset password, delete through the facade).
A server running on built-in defaults (no config file) shows settings
read-only and says how to get a file. Every handler is wrapped by `auth.page`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from goniec.admin import settings
from goniec.admin.users import UserError
from goniec.admin.web.auth import page
from goniec.admin.web.common import call
from goniec.admin.web.pages import flash, render


def config_source(request: Request) -> Path | None:
    """The file the running server was started with; None = built-in defaults."""
    state = request.app.state
    source = getattr(state, "source", None)
    if source is None:
        source = getattr(state.admin, "source", None)
    return Path(source) if source else None


def _view(request: Request, tab: str, current: settings.SettingsFile,
          values: dict[str, str] | None = None, result: settings.SaveResult | None = None,
          status: int = 200) -> Response:
    return render(request, "settings.html", {
        "tabs": [(key, title) for key, (title, _) in settings.TABS.items()],
        "tab": tab, "title": settings.TABS[tab][0], "fields": settings.TABS[tab][1],
        "values": values if values is not None else current.values(tab),
        "file": current, "result": result,
        "listeners": current.config.listeners if tab == "general" else ()}, status)


@page
async def settings_tab(request: Request) -> Response:
    tab = request.path_params.get("tab", "general")
    if tab not in settings.TABS:
        return RedirectResponse("/settings/general", status_code=303)
    path = config_source(request)
    fallback = request.app.state.config
    current = await asyncio.to_thread(settings.SettingsFile.read, path, fallback)
    if request.method == "GET":
        return _view(request, tab, current)
    if not current.writable:
        return _view(request, tab, current, status=409)
    assert path is not None
    form = await request.form()
    fields = {k: str(v) for k, v in form.multi_items()}  # a later value (checkbox) wins
    try:
        result = await asyncio.to_thread(settings.save, path, tab, fields,
                                         str(form.get("version", "")))
    except settings.SettingsError as exc:
        result = settings.SaveResult(False, general=[str(exc)])
    if not result.ok:
        entered = {s.key: fields.get(s.form_name, "false" if s.kind == "bool" else "")
                   for s in settings.TABS[tab][1]}
        return _view(request, tab, current, entered, result, status=400)
    if not result.changed:
        flash(request, "Nothing changed.")
        return RedirectResponse(f"/settings/{tab}", status_code=303)
    await call(request.app.state.admin.reload)
    text = f"Saved {', '.join(result.changed)} to {path} and reloaded."
    if result.restart:
        text += f" These take effect after a restart: {', '.join(result.restart)}."
    flash(request, text, "warn" if result.restart else "ok")
    return RedirectResponse(f"/settings/{tab}", status_code=303)


async def settings_root(request: Request) -> Response:
    return RedirectResponse("/settings/general", status_code=303)


@page
async def users(request: Request) -> Response:
    names = await call(request.app.state.admin.users_list)
    names = [n if isinstance(n, str) else getattr(n, "name", str(n)) for n in names]
    return render(request, "users.html", {"names": names})


async def _user_op(request: Request, op: str) -> Response:
    form = await request.form()
    admin: Any = request.app.state.admin
    name = str(form.get("name", ""))
    password = str(form.get("password", ""))
    try:
        if op == "add":
            await call(admin.user_add, name, password)
            text = f"User {name} added."
        elif op == "password":
            await call(admin.user_set_password, name, password)
            text = f"New password set for {name}."
        else:
            if form.get("confirm") != "1":
                return render(request, "confirm_user.html", {"name": name})
            await call(admin.user_delete, name)
            text = f"User {name} deleted."
        flash(request, text)
    except (UserError, ValueError, KeyError) as exc:
        flash(request, str(exc).strip("'\""), "error")
    return RedirectResponse("/users", status_code=303)


@page
async def user_add(request: Request) -> Response:
    return await _user_op(request, "add")


@page
async def user_password(request: Request) -> Response:
    return await _user_op(request, "password")


@page
async def user_delete(request: Request) -> Response:
    return await _user_op(request, "delete")


def routes() -> list[Route]:
    return [
        Route("/settings", settings_root),
        Route("/settings/{tab}", settings_tab, methods=["GET", "POST"]),
        Route("/users", users),
        Route("/users/add", user_add, methods=["POST"]),
        Route("/users/password", user_password, methods=["POST"]),
        Route("/users/delete", user_delete, methods=["POST"]),
    ]
