"""`keywatch dashboards push`: upload the committed dashboards to Grafana with grafana-client.

Idempotent: the folder is looked up by uid and created only when missing; each dashboard is
posted with `overwrite=True` under its fixed uid, so pushing twice leaves one copy of each.
The token comes from `KEYWATCH_GRAFANA_TOKEN` and is never logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from keywatch.dashboards.build import load_all

FOLDER_UID = "keywatch"
FOLDER_TITLE = "keywatch"


@dataclass
class Pushed:
    uid: str
    title: str
    url: str
    version: int


def ensure_folder(api: GrafanaApi, uid: str = FOLDER_UID, title: str = FOLDER_TITLE) -> str:
    try:
        return api.folder.get_folder(uid)["uid"]
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
    return api.folder.create_folder(title, uid=uid)["uid"]


def push(url: str, token: str | None, dashboards: list[dict] | None = None, folder_uid: str = FOLDER_UID) -> list[Pushed]:
    """Upload every dashboard into the keywatch folder; returns what Grafana answered."""
    api = GrafanaApi.from_url(url, credential=token, timeout=10.0)
    folder = ensure_folder(api, folder_uid)
    out = []
    for dash in dashboards if dashboards is not None else load_all():
        body = {**dash, "id": None}  # Grafana matches on uid; a stale numeric id would conflict
        res = api.dashboard.update_dashboard({"dashboard": body, "folderUid": folder, "overwrite": True,
                                              "message": "keywatch dashboards push"})
        out.append(Pushed(dash["uid"], dash["title"], res.get("url", ""), int(res.get("version", 0))))
    return out
