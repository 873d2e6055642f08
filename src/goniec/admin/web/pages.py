"""The manager's operating pages: overview, sessions, queue, message, logs.

Owns the handlers of those pages and of their buttons (pause, resume,
reload, disconnect, queue actions with a confirmation step for bulk and
destructive actions). Every handler is wrapped by `auth.page` (login, and
CSRF on POST) and talks only to the `Admin` facade. Renders facade results
through Jinja2 templates (autoescaped), never as HTML strings of its own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from goniec.admin.contract import QUEUE_ACTIONS
from goniec.admin.web.auth import page
from goniec.admin.web.common import STATES, FilterError, call, filter_query, jsonable, parse_filter
from goniec.errors import ConfigError
from goniec.queue.api import MessageNotFound

SERIES = (("received", "Received"), ("delivered", "Delivered"), ("deferred", "Deferred"),
          ("failed", "Failed"))
CHART_W, CHART_H = 240, 48
CONFIRM_ALWAYS = ("delete", "bounce")
PAGE_ROWS = 500  # queue rows shown at most; bulk actions still cover every match


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return request.app.state.templates.TemplateResponse(request, name, context,  # type: ignore[no-any-return]
                                                        status_code=status)


def flash(request: Request, text: str, kind: str = "ok") -> None:
    request.session["flash"] = {"text": text, "kind": kind}


def chart(values: list[int]) -> dict[str, Any]:
    """Bar geometry for one per-minute series (oldest first), drawn as inline SVG."""
    values = list(values)[-60:] or [0]
    top = max(values) or 1
    width = CHART_W / max(len(values), 1)
    bars = []
    for i, v in enumerate(values):
        h = round(v / top * (CHART_H - 2), 1) if v else 0
        bars.append({"x": round(i * width, 2), "y": round(CHART_H - h, 1),
                     "w": round(max(width - 1, 1), 2), "h": h, "v": v})
    return {"bars": bars, "max": max(values), "total": sum(values), "w": CHART_W, "h": CHART_H}


@page
async def overview(request: Request) -> Response:
    status = jsonable(await call(request.app.state.admin.status))
    per_minute = status.get("per_minute") or {}
    last_hour = status.get("last_hour") or {}
    charts = [{"key": key, "label": label, "count": last_hour.get(key, 0),
               **chart(per_minute.get(key, []))} for key, label in SERIES]
    return render(request, "overview.html", {"s": status, "charts": charts})


@page
async def control(request: Request) -> Response:
    action = request.path_params["action"]
    admin = request.app.state.admin
    fn = {"pause": admin.pause, "resume": admin.resume, "reload": admin.reload}.get(action)
    if fn is None:
        return Response("no such action", status_code=404)
    try:
        await call(fn)
    except ConfigError as exc:
        flash(request, f"The configuration file does not load; nothing changed: {exc}", "error")
        return RedirectResponse("/", status_code=303)
    flash(request, {"pause": "Paused: new connections are refused with 421; delivery goes on.",
                    "resume": "Resumed: accepting mail again.",
                    "reload": "The configuration file was read again."}[action])
    return RedirectResponse("/", status_code=303)


@page
async def sessions(request: Request) -> Response:
    rows = jsonable(await call(request.app.state.admin.sessions))
    return render(request, "sessions.html", {"rows": rows})


@page
async def disconnect(request: Request) -> Response:
    form = await request.form()
    sid = str(form.get("id", ""))
    ok = await call(request.app.state.admin.disconnect, sid)
    flash(request, f"Session {sid} disconnected." if ok else f"No session {sid} (already gone).",
          "ok" if ok else "warn")
    return RedirectResponse("/sessions", status_code=303)


@page
async def queue(request: Request) -> Response:
    params = {k: v for k, v in request.query_params.items()}
    error = ""
    rows: list[Any] = []
    try:
        flt = parse_filter(params)
    except FilterError as exc:
        error, flt = str(exc), None
    if flt is not None:
        rows = jsonable(await call(request.app.state.admin.queue_list, flt))
    return render(request, "queue.html", {
        "rows": rows[:PAGE_ROWS], "total": len(rows), "q": params, "error": error, "states": STATES, "actions": QUEUE_ACTIONS,
        "filter_fields": filter_query(flt) if flt is not None else {},
        "filtered": flt is not None and not flt.is_empty})


@page
async def message(request: Request) -> Response:
    queue_id = request.path_params["queue_id"]
    try:
        view = await call(request.app.state.admin.queue_show, queue_id)
    except (MessageNotFound, KeyError):
        view = None
    if view is None:
        return render(request, "error.html", {
            "title": "Not in the queue",
            "message": f"There is no message {queue_id} in the queue (delivered or removed)."},
            status=404)
    return render(request, "message.html", {"m": jsonable(view), "actions": QUEUE_ACTIONS})


@page
async def queue_action(request: Request) -> Response:
    form = await request.form()
    action = str(form.get("action", ""))
    if action not in QUEUE_ACTIONS:
        return Response("unknown action", status_code=400)
    ids = [str(v) for v in form.getlist("id")]
    bulk = form.get("bulk") == "1"
    fields = {k: str(form.get(k, "")) for k in ("sender", "recipient", "domain", "state",
                                                 "min_age", "max_age")}
    try:
        flt = parse_filter(fields if bulk else {}, ids if not bulk else ())
    except FilterError as exc:
        flash(request, str(exc), "error")
        return RedirectResponse("/queue", status_code=303)
    if not bulk and not flt.ids:
        return Response("no message named", status_code=400)
    admin = request.app.state.admin
    if form.get("confirm") != "1" and (bulk or action in CONFIRM_ALWAYS):
        count = len(ids) if not bulk else len(await call(admin.queue_list, flt))
        return render(request, "confirm.html", {
            "action": action, "bulk": bulk, "ids": ids, "count": count,
            "fields": filter_query(flt) if bulk else {}, "everything": bulk and flt.is_empty})
    result = jsonable(await call(admin.queue_action, action, flt))
    done, skipped = result.get("done", []), result.get("skipped", {})
    text = f"{action}: {len(done)} done"
    if skipped:
        text += f", {len(skipped)} skipped (" + "; ".join(
            f"{k}: {v}" for k, v in list(skipped.items())[:5]) + ")"
    flash(request, text, "ok" if done or not skipped else "warn")
    if not bulk and len(ids) == 1 and action not in CONFIRM_ALWAYS:
        return RedirectResponse(f"/queue/{ids[0]}", status_code=303)
    query = urlencode(filter_query(flt)) if bulk else ""
    return RedirectResponse("/queue" + (f"?{query}" if query else ""), status_code=303)


LOG_FIELDS = (("session", "Session id"), ("msg", "Message id"), ("address", "Address"),
              ("text", "Text"))


@page
async def logs(request: Request) -> Response:
    q = {k: request.query_params.get(k, "").strip() for k, _ in LOG_FIELDS}
    try:
        limit = max(1, min(int(request.query_params.get("limit", "200")), 5000))
    except ValueError:
        limit = 200
    entries: list[Any] = []
    error = ""
    searched = any(q.values()) or "limit" in request.query_params
    if searched:
        try:
            found = await call(request.app.state.admin.log_search, limit=limit, **q)
        except ValueError as exc:  # no log file to search (the log goes to stderr)
            error, found = str(exc), []
        entries = [e if isinstance(e, str) else jsonable(e) for e in found]
    return render(request, "logs.html", {"q": q, "fields": LOG_FIELDS, "limit": limit,
                                         "entries": entries, "searched": searched,
                                         "error": error})


def routes() -> list[Route]:
    return [
        Route("/", overview),
        Route("/control/{action}", control, methods=["POST"]),
        Route("/sessions", sessions),
        Route("/sessions/disconnect", disconnect, methods=["POST"]),
        Route("/queue", queue),
        Route("/queue/action", queue_action, methods=["POST"]),
        Route("/queue/{queue_id}", message),
        Route("/logs", logs),
    ]
