"""Where the CLI's alert, key, report and spend commands get their data: the worker's API or ClickHouse.

In embedded mode chDB's data path belongs to the running worker, so commands go through its
HTTP API (httpx to `http://KEYWATCH_WEB_HOST:KEYWATCH_WEB_PORT`). With a ClickHouse server DSN,
or when no worker answers, reads go to ClickHouse directly. Ack and feedback always go through
the API: they change the live detection core, which only the worker holds. `keywatch revoke`
uses `ApiBackend.revocation*` in embedded mode with a worker running (sinks/revocation/cli.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import httpx

from keywatch.settings import Settings


class BackendError(RuntimeError):
    """A request the backend refused or could not serve; the message is for the user."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ApiBackend:
    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::") else settings.web_host
        self.base = f"http://{host}:{settings.web_port}"
        token = settings.secret("api_token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=15.0, transport=transport)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise BackendError(f"worker API at {self.base} is not reachable ({exc.__class__.__name__})") from None
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", r.text)
            except ValueError:
                msg = r.text
            raise BackendError(f"{r.status_code}: {msg}", r.status_code)
        return r.json()

    def alive(self) -> bool:
        try:
            return self.http.get("/health", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def alerts(self, params: Mapping[str, Any]) -> list[dict]:
        return self._call("GET", "/alerts", params={k: v for k, v in params.items() if v not in (None, "")})["alerts"]

    def alert(self, alert_id: str) -> dict:
        return self._call("GET", f"/alerts/{alert_id}")

    def report_data(self, alert_id: str) -> dict:
        return self._call("GET", f"/alerts/{alert_id}/report")

    def key(self, key_id: str, hours: int) -> dict:
        return self._call("GET", f"/keys/{key_id}", params={"hours": hours})

    def ack(self, alert_id: str, body: dict) -> dict:
        return self._call("POST", f"/alerts/{alert_id}/ack", json=body)

    def feedback(self, alert_id: str, body: dict) -> dict:
        return self._call("POST", f"/alerts/{alert_id}/feedback", json=body)

    def spend_projection(self, params: Mapping[str, Any]) -> dict:
        return self._call("GET", "/spend/projection", params=_clean(params))

    def budgets(self) -> dict:
        return self._call("GET", "/budgets")

    def revocations(self, params: Mapping[str, Any]) -> list[dict]:
        return self._call("GET", "/revocations", params=_clean(params))["revocations"]

    def revocation(self, decision_id: str) -> dict:
        return self._call("GET", f"/revocations/{decision_id}")

    def revocation_action(self, decision_id: str, verb: str, body: dict) -> dict:
        """`verb`: approve | reject | undo. Needs KEYWATCH_API_TOKEN."""
        return self._call("POST", f"/revocations/{decision_id}/{verb}", json=body)


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v not in (None, "")}


class DirectBackend:
    """Reads straight from ClickHouse (server DSN, or embedded chDB while no worker runs)."""

    def __init__(self, client, db: str, settings: Settings | None = None) -> None:
        self.client, self.db, self.settings = client, db, settings

    def alerts(self, params: Mapping[str, Any]) -> list[dict]:
        from keywatch.stream import queries

        try:
            return queries.list_alerts(self.client, self.db, {k: str(v) for k, v in params.items() if v not in (None, "")})
        except queries.QueryError as exc:
            raise BackendError(str(exc), 400) from None

    def alert(self, alert_id: str) -> dict:
        from keywatch.stream import queries

        a = queries.get_alert(self.client, self.db, alert_id)
        if a is None:
            raise BackendError(f"404: no alert {alert_id}", 404)
        a["actions"] = queries.alert_actions(self.client, self.db, alert_id)
        return a

    def report_data(self, alert_id: str) -> dict:
        from keywatch.report import collect

        data = collect(self.client, self.db, alert_id)
        if data is None:
            raise BackendError(f"404: no alert {alert_id}", 404)
        return data

    def key(self, key_id: str, hours: int) -> dict:
        from keywatch.stream import queries

        return {"key_id": key_id, "usage": queries.key_usage(self.client, self.db, key_id, hours),
                "note": "read from ClickHouse; detector state needs the running worker"}

    def spend_projection(self, params: Mapping[str, Any]) -> dict:
        from keywatch.stream import queries, spend

        try:
            f = spend.projection_filters({k: str(v) for k, v in _clean(params).items()})
        except queries.QueryError as exc:
            raise BackendError(str(exc), 400) from None
        return spend.projection_body(spend.stored_projections(self.client, self.db, f), "clickhouse")

    def budgets(self) -> dict:
        from keywatch.stream import spend

        if self.settings is None:
            raise BackendError("budgets need the settings (KEYWATCH_BUDGETS_FILE)")
        try:
            config = spend.budget_config(self.settings)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read the budgets file: {exc}") from None
        rows = spend.budget_status(self.client, self.db, config)
        return {"budgets": rows, "count": len(rows)}

    def ack(self, alert_id: str, body: dict) -> dict:
        raise BackendError("ack needs the running worker (it updates the live detection core)")

    feedback = ack


def backend(settings: Settings, *, mutating: bool = False):
    """The API when a worker answers (always for mutations), else ClickHouse directly."""
    api = ApiBackend(settings)
    if mutating or (settings.embedded_clickhouse and api.alive()):
        return api
    from keywatch.sinks.clickhouse import connect

    return DirectBackend(connect(settings), settings.clickhouse_database, settings)
