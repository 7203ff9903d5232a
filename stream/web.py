"""Faust web views: thin adapters from HTTP to the handlers in `keywatch.stream.api`.

The worker calls `register_views(app, runtime)` once; the views then serve on the worker's web
port (`KEYWATCH_WEB_HOST`/`KEYWATCH_WEB_PORT`). All logic, auth included, lives in `api.py`.

Endpoints: GET /health, /ready, /metrics, /alerts, /alerts/{id}, /alerts/{id}/report,
/keys/{key_id}, /spend/projection, /budgets, /revocations, /revocations/{id}; POST
/alerts/{id}/ack, /alerts/{id}/feedback, /revocations/{id}/approve|reject|undo (bearer token;
the actor from the body's `actor` or the `X-Keywatch-Actor` header).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import faust
import orjson
from faust import web

from keywatch.stream import api, api_revoke
from keywatch.stream.runtime import WorkerRuntime

MAX_BODY = 64 * 1024  # feedback/ack bodies are tiny; refuse anything larger before parsing
ACTOR_HEADER = "X-Keywatch-Actor"  # who acts, for clients that cannot put it in the body


async def _reply(view: web.View, result: Any) -> web.Response:
    reply: api.Reply = await result if inspect.isawaitable(result) else result
    if reply.content_type == "application/json":
        body = orjson.dumps(reply.body, default=str)
        resp = view.bytes(body, content_type="application/json", status=reply.status)
    else:
        resp = view.text(reply.body, content_type=reply.content_type.split(";")[0], status=reply.status)
    for k, v in reply.headers.items():
        resp.headers[k] = v
    return resp


async def _body(request: web.Request) -> dict[str, Any] | None:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        return None
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _get(fn: Callable[..., Any], runtime: WorkerRuntime, *, query: bool = False) -> type[web.View]:
    class _View(web.View):
        async def get(self, request: web.Request, **match: str) -> web.Response:
            args = [dict(request.query)] if query else []
            return await _reply(self, fn(runtime, *match.values(), *args))
    return _View


def _post(fn: Callable[..., Any], runtime: WorkerRuntime) -> type[web.View]:
    class _View(web.View):
        async def post(self, request: web.Request, **match: str) -> web.Response:
            body = await _body(request)
            if body is None:
                return await _reply(self, api.error(400, "body must be a JSON object (≤ 64 KiB)"))
            if not body.get("actor") and request.headers.get(ACTOR_HEADER):
                body["actor"] = request.headers[ACTOR_HEADER]  # the body's `actor` wins when both are given
            return await _reply(self, fn(runtime, *match.values(), request.headers.get("Authorization"), body))
    return _View


def register_views(app: faust.App, runtime: WorkerRuntime) -> None:
    """Add the API's routes to the faust app's web server."""
    routes = [
        ("/health", _get(api.health, runtime)),
        ("/ready", _get(api.ready, runtime)),
        ("/metrics", _get(api.metrics, runtime)),
        ("/alerts", _get(api.list_alerts, runtime, query=True)),
        ("/alerts/{alert_id}", _get(api.get_alert, runtime)),
        ("/alerts/{alert_id}/report", _get(api.report_data, runtime)),
        ("/alerts/{alert_id}/ack", _post(api.ack, runtime)),
        ("/alerts/{alert_id}/feedback", _post(api.feedback, runtime)),
        ("/keys/{key_id}", _get(api.describe_key, runtime, query=True)),
        ("/spend/projection", _get(api.spend_projection, runtime, query=True)),
        ("/budgets", _get(api.budgets, runtime)),
        ("/revocations", _get(api_revoke.list_revocations, runtime, query=True)),
        ("/revocations/{decision_id}", _get(api_revoke.get_revocation, runtime)),
        ("/revocations/{decision_id}/approve", _post(api_revoke.approve, runtime)),
        ("/revocations/{decision_id}/reject", _post(api_revoke.reject, runtime)),
        ("/revocations/{decision_id}/undo", _post(api_revoke.undo, runtime)),
    ]
    for path, view in routes:
        app.page(path, name=f"keywatch{path.replace('/', '_').replace('{', '').replace('}', '')}")(view)
