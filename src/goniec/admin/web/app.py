"""The manager's Starlette application: routes, middleware, templates, /metrics.

Owns `create_app(admin, config)`: the page routes (pages.py, settings_page.py),
the JSON API mount (api.py), static files, the signed session cookie
(SessionMiddleware: HttpOnly, SameSite=Strict, Secure under HTTPS, lifetime
`admin.session_lifetime`), the security headers every response carries
(a CSP that allows no script at all, no framing, no MIME sniffing, no
referrer), and `/metrics`. Templates are Jinja2 with autoescape on for every
file. Raises nothing at request time: errors become error pages or JSON.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goniec.admin.service import ServerDown
from goniec.admin.web import api, pages, settings_page
from goniec.admin.web.auth import (
    LoginLimiter,
    bearer_user,
    csrf_token,
    current_user,
    login_page,
    logout,
    session_secret,
)
from goniec.admin.web.common import call, human_seconds, show_value
from goniec.config.schema import Config

HERE = Path(__file__).parent
COOKIE = "goniec_admin"

CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'none'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" would make form posts Origin: null
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS (and no-store for pages and API) to every HTTP response."""

    def __init__(self, app: ASGIApp, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                if self.https:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: headers are attacker-controlled
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = human_seconds
    env.filters["show"] = show_value
    templates = Jinja2Templates(env=env, context_processors=[_context])
    return templates


def _context(request: Request) -> dict[str, Any]:
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    return {"user": current_user(request) if "session" in request.scope else None,
            "csrf": csrf_token(request) if "session" in request.scope else "",
            "path": request.url.path, "flash": flash}


async def metrics(request: Request) -> Response:
    """Prometheus text: open to loopback clients, others need an API token."""
    ip = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(ip).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        who = await bearer_user(request)
        if isinstance(who, Response):
            return who
    text = await call(request.app.state.admin.metrics_text)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return api.error(404, "not_found", "no such API route")
    response: Response = request.app.state.templates.TemplateResponse(
        request, "error.html", {"title": "Not found", "message": "There is no such page."},
        status_code=404)
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return await not_found(request, exc)
    if request.url.path.startswith("/api/"):
        return api.error(exc.status_code, "http_error", str(exc.detail))
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code)


async def server_down(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return api.error(503, "server_down", str(exc))
    response: Response = request.app.state.templates.TemplateResponse(
        request, "error.html", {"title": "Server not running", "message": str(exc)},
        status_code=503)
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return api.error(500, "internal", "the server could not do this; see its log")
    return PlainTextResponse("Internal error; see the server log.", status_code=500)


def create_app(admin: Any, config: Config) -> Starlette:
    """The manager for `admin` (the facade) and `config` (the server's config)."""
    https = config.admin.web_tls
    routes = [
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/metrics", metrics),
        Mount("/api/v1", routes=api.routes()),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *pages.routes(),
        *settings_page.routes(),
    ]
    middleware = [
        Middleware(SecurityHeaders, https=https),
        Middleware(SessionMiddleware, secret_key=session_secret(config.data_path),
                   session_cookie=COOKIE, max_age=int(config.admin.session_lifetime),
                   same_site="strict", https_only=https),
    ]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: http_error, ServerDown: server_down,
                                        500: server_error})
    app.state.admin = admin
    app.state.config = config
    app.state.templates = _templates()
    app.state.limiter = LoginLimiter()
    return app
