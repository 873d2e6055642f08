"""The OpenAPI 3.1 description of /api/v1, written as data.

Owns `spec()`: every API route with its parameters, request body and
responses, and the shapes they return (from `goniec.admin.contract`). A test
checks that every route of `api.routes()` is described here and nothing
else, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from goniec.admin.contract import QUEUE_ACTIONS

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
}
ACTION = {"type": "string", "enum": list(QUEUE_ACTIONS)}
FILTER_PARAMS = [
    _query("sender", "substring of the envelope sender, case-insensitive"),
    _query("recipient", "substring of a recipient address, case-insensitive"),
    _query("domain", "a recipient's domain or a parent domain, exactly"),
    _query("state", "message state", {"type": "string",
                                      "enum": ["held", "deferred", "active", "done"]}),
    _query("min_age", 'at least this old: seconds or "30m", "2h", "1d"'),
    _query("max_age", 'at most this old: seconds or "30m", "2h", "1d"'),
    {"name": "id", "in": "query", "required": False, "description": "queue ids (repeatable)",
     "schema": {"type": "array", "items": {"type": "string"}}, "style": "form",
     "explode": True},
]


def _op(summary: str, responses: dict[str, Any], params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, op_id: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "operationId": op_id,
                           "responses": {**responses, **ERRORS}}
    if params:
        out["parameters"] = params
    if body:
        out["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": body}}}
    return out


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def paths() -> dict[str, Any]:
    ok = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                           "action": {"type": "string"}}}
    password = {"type": "object", "required": ["password"],
                "properties": {"password": {"type": "string", "minLength": 1}}}
    return {
        "/status": {"get": _op("Server state, listeners, counters of the last hour",
                               {"200": _json(_ref("Status"))}, op_id="status")},
        "/sessions": {"get": _op("Live SMTP sessions", {"200": _json({
            "type": "object", "properties": {"sessions": {"type": "array",
                                                          "items": _ref("Session")}}})},
            op_id="sessions")},
        "/sessions/{session_id}/disconnect": {"post": _op(
            "Close one session (the client gets 421 4.3.2)",
            {"200": _json({"type": "object", "properties": {"disconnected": {"type": "string"}}}),
             "404": _error("no such session")},
            [_path("session_id", "the session= id of the log")], op_id="disconnect")},
        "/pause": {"post": _op("Stop accepting new mail; delivery goes on",
                               {"200": _json(ok)}, op_id="pause")},
        "/resume": {"post": _op("Accept mail again", {"200": _json(ok)}, op_id="resume")},
        "/reload": {"post": _op("Read the configuration file again (as SIGHUP)",
                                {"200": _json(ok)}, op_id="reload")},
        "/queue": {"get": _op("Queued messages matching a filter (every field must match)", {
            "200": _json({"type": "object", "properties": {
                "messages": {"type": "array", "items": _ref("QueueRow")}}}),
            "400": _error("a filter value does not parse")}, FILTER_PARAMS, op_id="queueList")},
        "/queue/{queue_id}": {"get": _op("One queued message: headers, MIME parts, preview,"
                                         " recipients, trail",
                                         {"200": _json(_ref("Message")),
                                          "404": _error("not in the queue")},
                                         [_path("queue_id", "queue id")], op_id="queueShow")},
        "/queue/{queue_id}/{action}": {"post": _op(
            "Retry, hold, release, delete or bounce one message",
            {"200": _json(_ref("ActionResult")), "404": _error("unknown action")},
            [_path("queue_id", "queue id"), _path("action", "what to do", ACTION)],
            op_id="queueAction")},
        "/queue/actions/{action}": {"post": _op(
            "Do an action to every message a filter selects (bulk)",
            {"200": _json(_ref("ActionResult")),
             "400": _error("bad filter, or an empty filter without all=true"),
             "404": _error("unknown action")},
            [_path("action", "what to do", ACTION)], _ref("BulkFilter"), op_id="queueBulk")},
        "/users": {
            "get": _op("SMTP AUTH users", {"200": _json({"type": "object", "properties": {
                "users": {"type": "array", "items": {"type": "string"}}}})}, op_id="usersList"),
            "post": _op("Add an SMTP user", {
                "201": _json({"type": "object", "properties": {"added": {"type": "string"}}},
                             "added"),
                "400": _error("bad name or password"), "409": _error("the user exists")},
                body={"type": "object", "required": ["name", "password"], "properties": {
                    "name": {"type": "string"}, "password": {"type": "string",
                                                             "minLength": 1}}},
                op_id="userAdd")},
        "/users/{name}/password": {"put": _op("Set a new password", {
            "200": _json({"type": "object", "properties": {"updated": {"type": "string"}}}),
            "400": _error("bad password"), "404": _error("no such user")},
            [_path("name", "user name")], password, op_id="userPassword")},
        "/users/{name}": {"delete": _op("Delete an SMTP user", {
            "200": _json({"type": "object", "properties": {"deleted": {"type": "string"}}}),
            "404": _error("no such user")}, [_path("name", "user name")], op_id="userDelete")},
        "/logs": {"get": _op("Search the event log and the message trail", {
            "200": _json({"type": "object", "properties": {"entries": {"type": "array",
                                                                       "items": {}}}}),
            "400": _error("bad limit")}, [
            _query("session", "session id"), _query("msg", "queue/message id"),
            _query("address", "an address in the line"), _query("text", "any text"),
            _query("limit", "most entries returned (1..5000, default 200)",
                   {"type": "integer", "minimum": 1, "maximum": 5000})], op_id="logs")},
        "/openapi.json": {"get": {"summary": "This description", "operationId": "openapi",
                                  "security": [],
                                  "responses": {"200": _json({"type": "object"})}}},
    }


def schemas() -> dict[str, Any]:
    s, i, n, b = ({"type": "string"}, {"type": "integer"}, {"type": "number"},
                  {"type": "boolean"})
    counts = {"type": "object", "additionalProperties": i}
    return {
        "Error": {"type": "object", "required": ["error", "detail"],
                  "properties": {"error": s, "detail": s}},
        "Listener": {"type": "object", "properties": {"name": s, "address": s, "tls": s,
                                                      "auth": s}},
        "Status": {"type": "object", "properties": {
            "state": {"type": "string", "enum": ["running", "paused", "stopped"]},
            "version": s, "hostname": s, "pid": i, "started": s, "uptime": n, "workers": i,
            "listeners": {"type": "array", "items": _ref("Listener")}, "sessions": i,
            "queue_messages": i, "queue_deferred": i, "queue_held": i, "queue_oldest_age": n,
            "last_hour": counts,
            "per_minute": {"type": "object", "additionalProperties": {"type": "array",
                                                                      "items": i}},
            "workers_unreachable": {"type": "object", "additionalProperties": s,
                                    "description": "worker index -> why it did not answer"}}},
        "Session": {"type": "object", "properties": {
            "id": s, "worker": i, "listener": s, "client": s, "helo": s, "user": s, "tls": s,
            "state": s, "started": s, "duration": n, "messages": i}},
        "Recipient": {"type": "object", "properties": {
            "address": s, "status": s, "attempts": i,
            "next_attempt": {"type": ["string", "null"]}, "last_reply": s}},
        "QueueRow": {"type": "object", "properties": {
            "id": s, "created": s, "size": i, "sender": s, "held": b, "hold_reason": s,
            "recipients": {"type": "array", "items": _ref("Recipient")}}},
        "Message": {"type": "object", "properties": {
            "id": s, "created": s, "size": i, "sender": s, "state": s, "held": b,
            "hold_reason": s, "recipients": {"type": "array", "items": _ref("Recipient")},
            "headers": {"type": "array", "items": {"type": "array", "items": s},
                        "description": "[name, decoded value] pairs, in order"},
            "parts": {"type": "array", "items": {"type": "object"}},
            "preview": {"type": ["object", "null"]},
            "trail": {"type": "array", "items": {"type": "object"}}}},
        "ActionResult": {"type": "object", "properties": {
            "action": s, "done": {"type": "array", "items": s},
            "skipped": {"type": "object", "additionalProperties": s,
                        "description": "queue id -> why it was skipped"}}},
        "BulkFilter": {"type": "object", "properties": {
            "ids": {"type": "array", "items": s}, "sender": s, "recipient": s, "domain": s,
            "state": {"type": "string", "enum": ["", "held", "deferred", "active", "done"]},
            "min_age": {"type": ["string", "number"]}, "max_age": {"type": ["string", "number"]},
            "all": {"type": "boolean", "description": "required to act on every message"}}},
    }


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Goniec manager API", "version": VERSION,
                 "description": "Operate a running Goniec mail server. Authenticate with"
                                " `Authorization: Bearer <token>` (make one with"
                                " `goniec token add NAME`)."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Unauthorized": {
                "description": "missing or wrong token",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": _ref("Error")}}}},
            "schemas": schemas(),
        },
    }
