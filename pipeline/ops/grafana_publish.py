"""`energy-monitor dashboards publish`: load dashboards/json into a running Grafana over its
HTTP API, with grafana-client (the maintained fork of grafana-api).

Each dashboard keeps its uid, so a re-run updates it in place (Grafana bumps its version). The
dashboards select their Prometheus through a `datasource` variable; its current value is set to
the uid of the Grafana's Prometheus data source, so they show data at first load.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pipeline.core.settings import PROJECT_ROOT, GrafanaSettings

log = logging.getLogger(__name__)

DASHBOARDS_DIR = PROJECT_ROOT / "dashboards" / "json"


class PublishError(RuntimeError):
    """Grafana refused or could not be reached; the message says which call and why."""


def _api(url: str, grafana: GrafanaSettings):
    from grafana_client import GrafanaApi

    user, password = grafana.grafana_admin_user, grafana.grafana_admin_password
    credential = grafana.grafana_api_token or ((user, password) if user and password else None)
    if credential is None:
        raise PublishError("no Grafana credentials: set GRAFANA_API_TOKEN (a service account token), "
                           "or GRAFANA_ADMIN_USER and GRAFANA_ADMIN_PASSWORD")
    return GrafanaApi.from_url(url, credential=credential, timeout=10.0)


def _call(what: str, function, *args, **kwargs):
    from grafana_client.client import GrafanaException

    try:
        return function(*args, **kwargs)
    except GrafanaException as exc:
        raise PublishError(f"Grafana refused to {what}: {exc.status_code} {exc.message}") from None
    except Exception as exc:  # connection errors come from niquests with their own types
        raise PublishError(f"cannot {what}: {exc}") from None


def _prometheus_uid(api) -> str:
    sources = _call("list data sources", api.datasource.list_datasources)
    uids = [s["uid"] for s in sources if s.get("type") == "prometheus"]
    if not uids:
        raise PublishError("Grafana has no Prometheus data source; add one (dashboards/provisioning "
                           "has the file for it) and run again")
    return uids[0]


def _folder_uid(api, title: str) -> str:
    for folder in _call("list folders", api.folder.get_all_folders):
        if folder.get("title") == title:
            return folder["uid"]
    uid = re.sub(r"[^a-z0-9-]+", "-", title.lower()).strip("-")[:40] or "energy-monitor"
    return _call(f"create folder {title!r}", api.folder.create_folder, title, uid=uid)["uid"]


def with_datasource(dashboard: dict, datasource_uid: str) -> dict:
    """The dashboard with its `datasource` variable pointing at datasource_uid, and no
    numeric id (Grafana matches by uid)."""
    dashboard = json.loads(json.dumps(dashboard))
    dashboard.pop("id", None)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            variable["current"] = {"text": "Prometheus", "value": datasource_uid}
    return dashboard


def publish(url: str, folder: str, grafana: GrafanaSettings, folder_dir: Path = DASHBOARDS_DIR) -> list[tuple[str, int]]:
    """Create or update every dashboard; returns (uid, version) of each."""
    api = _api(url, grafana)
    datasource_uid = _prometheus_uid(api)
    folder_uid = _folder_uid(api, folder)
    published = []
    for path in sorted(folder_dir.glob("*.json")):
        dashboard = with_datasource(json.loads(path.read_text()), datasource_uid)
        result = _call(f"save {path.name}", api.dashboard.update_dashboard, {
            "dashboard": dashboard, "folderUid": folder_uid, "overwrite": True,
            "message": "energy-monitor dashboards publish"})
        published.append((result["uid"], int(result["version"])))
        log.info("published %s as %s version %s", path.name, result["uid"], result["version"])
    return published
