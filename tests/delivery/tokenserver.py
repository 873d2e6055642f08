"""An OAuth2 token endpoint on loopback (stdlib http.server in a thread).

Issues "tok-1", "tok-2", ... for the client-credentials grant (RFC 6749 4.4)
when the client id and secret match; `expires_in`, `delay` and `refuse` shape
the answers. `valid(token)` is what a destination SMTP server asks.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

CLIENT_ID = "goniec-test-app"
CLIENT_SECRET = "s3cret"
SCOPE = "https://mail.example.test/.default"


class TokenServer:
    def __init__(self, *, expires_in: float = 3600, delay: float = 0.0) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.refuse = False  # answer 400 invalid_client
        self.requests: list[dict[str, str]] = []
        self.client_auth: list[str] = []  # "basic" or "post", per request
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                header = self.headers.get("Authorization", "")
                owner.client_auth.append("basic" if header.startswith("Basic ") else "post")
                if header.startswith("Basic "):
                    cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
                    form.setdefault("client_id", cid)
                    form.setdefault("client_secret", secret)
                status, body = owner._answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/oauth2/token"
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,),
                                        daemon=True)

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(form)
        if self.delay:
            time.sleep(self.delay)
        if (self.refuse or form.get("grant_type") != "client_credentials"
                or form.get("client_id") != CLIENT_ID
                or form.get("client_secret") != CLIENT_SECRET):
            return 400, {"error": "invalid_client",
                         "error_description": "AADSTS7000215: Invalid client secret."}
        with self._lock:
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
        return 200, {"access_token": token, "token_type": "Bearer",
                     "expires_in": self.expires_in, "scope": form.get("scope", "")}

    def valid(self, token: str) -> bool:
        with self._lock:
            return token in self.issued and token not in self.revoked
