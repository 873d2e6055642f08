"""Who may use the manager: web logins, CSRF tokens, API bearer tokens.

Owns the session cookie's signing secret (made once, kept in
`data_dir/admin-web-secret`, mode 0600), the login and logout pages, the
per-address slow-down and lock-out after failed logins, the login and CSRF
checks every page runs, and the bearer-token check of /api/v1 and /metrics.
The session cookie never authorizes the API. Raises nothing to its callers:
failures become 401/403/429 responses.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from goniec.admin.web.common import check_token, verify_admin

SECRET_FILE = "admin-web-secret"
FAILS_WINDOW = 900.0  # failed logins of one address are counted over 15 minutes
LOCK_AFTER = 10  # failures in the window before the address is locked out
DELAY_STEP = 0.25  # seconds added to each failed answer, per earlier failure
DELAY_MAX = 3.0
LOGIN_FAILED = "Wrong user name or password."
LOCKED = "Too many failed logins from your address; try again later."

Handler = Callable[[Request], Awaitable[Response]]


def session_secret(data_dir: Path) -> str:
    """The cookie-signing secret: read, or made once (0600) on first use."""
    path = data_dir / SECRET_FILE
    try:
        text = path.read_text().strip()
        if len(text) >= 32:
            return text
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # another process may have made it meanwhile: theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip()


class LoginLimiter:
    """Failed logins per client address: a growing delay, then a lock-out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.fails: dict[str, list[float]] = {}

    def _recent(self, ip: str) -> list[float]:
        now = self.clock()
        recent = [t for t in self.fails.get(ip, ()) if now - t < FAILS_WINDOW]
        if recent:
            self.fails[ip] = recent
        else:
            self.fails.pop(ip, None)
        return recent

    def locked(self, ip: str) -> bool:
        return len(self._recent(ip)) >= LOCK_AFTER

    def failed(self, ip: str) -> float:
        """Record a failure; the seconds to wait before answering."""
        recent = self._recent(ip)
        recent.append(self.clock())
        self.fails[ip] = recent
        if len(self.fails) > 10000:  # bounded memory under a spread-out attack
            oldest = min(self.fails, key=lambda k: self.fails[k][-1])
            self.fails.pop(oldest)
        return min(DELAY_STEP * (len(recent) - 1), DELAY_MAX)

    def succeeded(self, ip: str) -> None:
        self.fails.pop(ip, None)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 20:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, form: Any) -> bool:
    """The form carries this session's CSRF token, and the Origin (when sent) is ours."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    expected = request.session.get("csrf")
    given = form.get("csrf")
    return (isinstance(expected, str) and isinstance(given, str)
            and hmac.compare_digest(expected.encode(), given.encode()))


def current_user(request: Request) -> str | None:
    """The logged-in admin, or None (also when the login is older than session_lifetime)."""
    user = request.session.get("user")
    since = request.session.get("since")
    if not isinstance(user, str) or not isinstance(since, int | float):
        return None
    lifetime = request.app.state.config.admin.session_lifetime
    if time.time() - since > lifetime:
        request.session.pop("user", None)
        return None
    return user


def safe_next(target: str | None) -> str:
    """Only a local path may be a redirect target after login (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def login_page(request: Request) -> Response:
    templates = request.app.state.templates
    if request.method == "GET":
        response: Response = templates.TemplateResponse(request, "login.html", {
            "next": safe_next(request.query_params.get("next")), "error": ""})
        return response
    form = await request.form()
    ip = client_ip(request)
    limiter: LoginLimiter = request.app.state.limiter
    nxt = safe_next(str(form.get("next", "")))
    error, status = "", 200
    if not csrf_ok(request, form):
        error, status = "The form expired; please log in again.", 403
    elif limiter.locked(ip):
        error, status = LOCKED, 429
    else:
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        app_state = request.app.state
        ok = bool(name and password) and await verify_admin(app_state.admin, app_state.config,
                                                            name, password)
        if ok:
            limiter.succeeded(ip)
            request.session.clear()
            request.session.update({"user": name, "since": time.time(),
                                    "csrf": secrets.token_urlsafe(32)})
            return RedirectResponse(nxt, status_code=303)
        await asyncio.sleep(limiter.failed(ip))
        error, status = LOGIN_FAILED, 401
    page_: Response = templates.TemplateResponse(request, "login.html",
                                                 {"next": nxt, "error": error}, status_code=status)
    return page_


async def logout(request: Request) -> Response:
    form = await request.form()
    if csrf_ok(request, form):
        request.session.clear()
    return RedirectResponse("/login", status_code=303)


def page(handler: Handler) -> Handler:
    """A manager page: needs a login; a POST needs the CSRF token too."""

    async def guarded(request: Request) -> Response:
        if current_user(request) is None:
            if request.method != "GET":
                return Response("Login required", status_code=403)
            nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={_quote(nxt)}", status_code=303)
        if request.method == "POST":
            form = await request.form()
            if not csrf_ok(request, form):
                return Response("The form expired or came from elsewhere (CSRF check failed);"
                                " go back, reload the page and try again.", status_code=403)
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def unauthorized(detail: str, invalid: bool = False) -> JSONResponse:
    challenge = 'Bearer realm="goniec"' + (', error="invalid_token"' if invalid else "")
    return JSONResponse({"error": "unauthorized", "detail": detail}, status_code=401,
                        headers={"WWW-Authenticate": challenge})


async def bearer_user(request: Request) -> str | JSONResponse:
    """The token name of an API request, or the 401 response to send."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if not header:
        return unauthorized("an Authorization: Bearer <token> header is required")
    if scheme.lower() != "bearer" or not secret.strip():
        return unauthorized("use Authorization: Bearer <token>")
    state = request.app.state
    name = await check_token(state.admin, state.config, secret.strip())
    if name is None:
        return unauthorized("unknown token", invalid=True)  # RFC 6750 3.1
    return name
