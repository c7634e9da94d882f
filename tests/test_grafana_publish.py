"""`energy-monitor dashboards publish` against a local HTTP server that checks each request
against Grafana's documented HTTP API (paths, methods, payload shape, auth header).

No Grafana server can be installed on this machine, so this server stands in for one; the
docker compose stack runs the real Grafana with the same dashboards provisioned from files."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import ROOT, isolated_stack, run_cli

TOKEN = "glsa_test_token"
DATASOURCE_UID = "prom-7f3a"


class FakeGrafana:
    """Grafana's /api/datasources, /api/folders and /api/dashboards/db, checked strictly."""

    def __init__(self):
        self.dashboards: dict[str, dict] = {}
        self.folders: list[dict] = []
        self.errors: list[str] = []
        grafana = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                grafana.handle(self, "GET", None)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                grafana.handle(self, "POST", body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, request, method: str, body) -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(request, 401, {"message": "Unauthorized"})
        route = (method, request.path.split("?")[0])
        if route == ("GET", "/api/datasources"):
            return self.reply(request, 200, [{"id": 1, "uid": "loki-1", "type": "loki", "name": "Loki"},
                                             {"id": 2, "uid": DATASOURCE_UID, "type": "prometheus", "name": "Prom"}])
        if route == ("GET", "/api/folders"):
            return self.reply(request, 200, self.folders)
        if route == ("POST", "/api/folders"):
            if set(body) - {"title", "uid", "parentUid"} or not body.get("title"):
                self.errors.append(f"bad folder payload {body}")
                return self.reply(request, 400, {"message": "bad folder"})
            folder = {"id": len(self.folders) + 1, "uid": body.get("uid") or "f1", "title": body["title"]}
            self.folders.append(folder)
            return self.reply(request, 200, folder)
        if route == ("POST", "/api/dashboards/db"):
            return self.save_dashboard(request, body)
        self.errors.append(f"unexpected {method} {request.path}")
        return self.reply(request, 404, {"message": "Not found"})

    def save_dashboard(self, request, body: dict) -> None:
        dashboard = body.get("dashboard") or {}
        problems = [p for p, bad in (
            ("payload keys", set(body) - {"dashboard", "folderUid", "folderId", "overwrite", "message"}),
            ("no uid", not dashboard.get("uid")), ("no title", not dashboard.get("title")),
            ("numeric id on a new dashboard", dashboard.get("id") is not None),
            ("unknown folder", body.get("folderUid") not in {f["uid"] for f in self.folders}),
            ("overwrite not set", body.get("overwrite") is not True),
            ("no panels", not dashboard.get("panels"))) if bad]
        if problems:
            self.errors.append(f"{dashboard.get('uid')}: {problems}")
            return self.reply(request, 400, {"message": "; ".join(problems)})
        uid = dashboard["uid"]
        version = self.dashboards.get(uid, {}).get("version", 0) + 1
        self.dashboards[uid] = {"version": version, "dashboard": dashboard, "folderUid": body["folderUid"]}
        self.reply(request, 200, {"id": len(self.dashboards), "uid": uid, "url": f"/d/{uid}/x",
                                  "status": "success", "version": version, "slug": "x"})

    @staticmethod
    def reply(request, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


@pytest.fixture
def grafana():
    server = FakeGrafana()
    yield server
    server.server.shutdown()


def test_publish_creates_then_updates_in_place(grafana, tmp_path):
    settings = isolated_stack(tmp_path, grafana_api_token=TOKEN)
    first = run_cli(settings, "dashboards", "publish", "--url", grafana.url, "--folder", "Energy monitor")
    expected = sorted(json.loads(p.read_text())["uid"] for p in (ROOT / "dashboards" / "json").glob("*.json"))
    assert sorted(grafana.dashboards) == expected
    assert all(d["version"] == 1 for d in grafana.dashboards.values())
    assert first.stdout.count("version 1") == len(expected)

    second = run_cli(settings, "dashboards", "publish", "--url", grafana.url, "--folder", "Energy monitor")
    assert all(d["version"] == 2 for d in grafana.dashboards.values()) and second.stdout.count("version 2") == 2
    assert len(grafana.folders) == 1 and grafana.errors == []
    for saved in grafana.dashboards.values():
        variables = saved["dashboard"]["templating"]["list"]
        datasource = next(v for v in variables if v["type"] == "datasource")
        assert datasource["current"]["value"] == DATASOURCE_UID


def test_refused_credentials_give_a_one_line_error(grafana, tmp_path):
    settings = isolated_stack(tmp_path, grafana_api_token="wrong")
    result = run_cli(settings, "dashboards", "publish", "--url", grafana.url, check=False)
    assert result.returncode == 1 and grafana.dashboards == {}
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0] and "Traceback" not in result.stderr
