"""The JSON API under /api/v1: the manager's actions for scripts and monitoring.

Owns the API routes (status, sessions and disconnect, pause/resume/reload,
queue list/show/actions by id or by filter, SMTP users, log search), their
bearer-token check (`Authorization: Bearer <token>`, tokens from
`goniec token add`; 401 with `WWW-Authenticate` when missing or wrong; the
web login cookie is never looked at), and JSON errors
`{"error": code, "detail": text}`. The OpenAPI description is `openapi.py`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from goniec.admin.contract import QUEUE_ACTIONS
from goniec.admin.users import UserError
from goniec.admin.web.auth import bearer_user
from goniec.admin.web.common import FilterError, call, jsonable, parse_filter
from goniec.errors import ConfigError
from goniec.queue.api import MessageNotFound

Endpoint = Callable[[Request], Awaitable[Any]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def endpoint(fn: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Token check first; the handler's result becomes JSON; ApiError a JSON error."""

    async def run(request: Request) -> Response:
        who = await bearer_user(request)
        if isinstance(who, Response):
            return who
        request.state.token = who
        try:
            result = await fn(request)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.detail)
        except FilterError as exc:
            return error(400, "bad_filter", str(exc))
        if isinstance(result, Response):
            return result
        return JSONResponse(jsonable(result))

    run.__name__ = fn.__name__
    return run


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, "bad_json", "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    return data


def _admin(request: Request) -> Any:
    return request.app.state.admin


@endpoint
async def status(request: Request) -> Any:
    return await call(_admin(request).status)


@endpoint
async def sessions(request: Request) -> Any:
    return {"sessions": await call(_admin(request).sessions)}


@endpoint
async def disconnect(request: Request) -> Any:
    sid = request.path_params["session_id"]
    if not await call(_admin(request).disconnect, sid):
        raise ApiError(404, "not_found", f"no session {sid}")
    return {"disconnected": sid}


def _control(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def control(request: Request) -> Any:
        try:
            await call(getattr(_admin(request), name))
        except ConfigError as exc:
            raise ApiError(409, "bad_config", str(exc)) from None
        return {"ok": True, "action": name}

    control.__name__ = name
    return endpoint(control)


@endpoint
async def queue_list(request: Request) -> Any:
    q = request.query_params
    flt = parse_filter(dict(q.items()), q.getlist("id"))
    return {"messages": await call(_admin(request).queue_list, flt)}


@endpoint
async def queue_show(request: Request) -> Any:
    queue_id = request.path_params["queue_id"]
    try:
        view = await call(_admin(request).queue_show, queue_id)
    except (MessageNotFound, KeyError):
        view = None
    if view is None:
        raise ApiError(404, "not_found", f"no message {queue_id} in the queue")
    return view


def _action(request: Request) -> str:
    action = request.path_params["action"]
    if action not in QUEUE_ACTIONS:
        raise ApiError(404, "not_found", f"unknown action {action!r}; one of "
                       + ", ".join(QUEUE_ACTIONS))
    return str(action)


@endpoint
async def queue_one(request: Request) -> Any:
    action = _action(request)
    flt = parse_filter({}, [request.path_params["queue_id"]])
    return await call(_admin(request).queue_action, action, flt)


@endpoint
async def queue_bulk(request: Request) -> Any:
    action = _action(request)
    body = await _body(request)
    ids = body.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "bad_filter", "ids: must be an array of queue ids")
    fields = {k: str(body.get(k, "")) for k in ("sender", "recipient", "domain", "state",
                                                 "min_age", "max_age")}
    flt = parse_filter(fields, ids)
    if flt.is_empty and body.get("all") is not True:
        raise ApiError(400, "empty_filter", 'an empty filter means every queued message:'
                       ' send "all": true to mean that')
    return await call(_admin(request).queue_action, action, flt)


@endpoint
async def users_list(request: Request) -> Any:
    names = await call(_admin(request).users_list)
    return {"users": [n if isinstance(n, str) else jsonable(n) for n in names]}


def _user_error(exc: Exception) -> ApiError:
    text = str(exc).strip("'\"")
    if "no such user" in text:
        return ApiError(404, "not_found", text)
    if "already exists" in text:
        return ApiError(409, "exists", text)
    return ApiError(400, "bad_user", text)


async def _password(request: Request) -> str:
    body = await _body(request)
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise ApiError(400, "bad_user", "password: a non-empty string is required")
    return password


@endpoint
async def user_add(request: Request) -> Any:
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise ApiError(400, "bad_user", "name: a string is required")
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise ApiError(400, "bad_user", "password: a non-empty string is required")
    try:
        await call(_admin(request).user_add, name, password)
    except (UserError, ValueError, KeyError) as exc:
        raise _user_error(exc) from None
    return JSONResponse({"added": name}, status_code=201)


@endpoint
async def user_password(request: Request) -> Any:
    name = request.path_params["name"]
    password = await _password(request)
    try:
        await call(_admin(request).user_set_password, name, password)
    except (UserError, ValueError, KeyError) as exc:
        raise _user_error(exc) from None
    return {"updated": name}


@endpoint
async def user_delete(request: Request) -> Any:
    name = request.path_params["name"]
    try:
        await call(_admin(request).user_delete, name)
    except (UserError, ValueError, KeyError) as exc:
        raise _user_error(exc) from None
    return {"deleted": name}


@endpoint
async def logs(request: Request) -> Any:
    q = request.query_params
    try:
        limit = int(q.get("limit", "200"))
    except ValueError:
        raise ApiError(400, "bad_query", "limit: must be an integer") from None
    if not 1 <= limit <= 5000:
        raise ApiError(400, "bad_query", "limit: must be 1 to 5000")
    try:
        found = await call(_admin(request).log_search, session=q.get("session", ""),
                           msg=q.get("msg", ""), address=q.get("address", ""),
                           text=q.get("text", ""), limit=limit)
    except ValueError as exc:
        raise ApiError(409, "no_log", str(exc)) from None
    return {"entries": [e if isinstance(e, str) else jsonable(e) for e in found]}


async def openapi_json(request: Request) -> Response:
    from goniec.admin.web.openapi import spec

    return JSONResponse(spec())


def routes() -> list[Route]:
    return [
        Route("/openapi.json", openapi_json),
        Route("/status", status),
        Route("/sessions", sessions),
        Route("/sessions/{session_id}/disconnect", disconnect, methods=["POST"]),
        Route("/pause", _control("pause"), methods=["POST"]),
        Route("/resume", _control("resume"), methods=["POST"]),
        Route("/reload", _control("reload"), methods=["POST"]),
        Route("/queue", queue_list),
        Route("/queue/actions/{action}", queue_bulk, methods=["POST"]),
        Route("/queue/{queue_id}", queue_show),
        Route("/queue/{queue_id}/{action}", queue_one, methods=["POST"]),
        Route("/users", users_list),
        Route("/users", user_add, methods=["POST"]),
        Route("/users/{name}/password", user_password, methods=["PUT"]),
        Route("/users/{name}", user_delete, methods=["DELETE"]),
        Route("/logs", logs),
    ]
