"""Prometheus configuration, rules, Alertmanager configuration and the Grafana dashboards,
checked with the real tools (promtool, amtool) and loaded with grafana-foundation-sdk."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from helpers import ROOT

MONITORING = ROOT / "monitoring"
DASHBOARDS = ROOT / "dashboards"


def run(*command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_promtool_check_config_and_rules():
    run("promtool", "check", "config", str(MONITORING / "prometheus.yml"))
    run("promtool", "check", "rules", *map(str, sorted((MONITORING / "rules").glob("*.yml"))))


def test_promtool_test_rules():
    assert "SUCCESS" in run("promtool", "test", "rules", str(MONITORING / "tests" / "alerts_test.yml")).stdout


def test_amtool_check_config():
    run("amtool", "check-config", str(MONITORING / "alertmanager.yml"))


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((MONITORING / "rules" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_follow_the_conventions():
    for rule in alert_rules():
        assert rule["alert"][0].isupper() and "_" not in rule["alert"], rule["alert"]
        assert rule["for"] or rule["alert"] == "Watchdog", rule["alert"]
        assert rule["labels"]["severity"] in (("none",) if rule["alert"] == "Watchdog" else ("critical", "warning"))
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_rule_has_a_runbook_section_and_every_section_a_rule():
    import re

    runbook = (MONITORING / "RUNBOOK.md").read_text()
    sections = re.findall(r"^## (\w+)$", runbook, re.M)
    names = [rule["alert"] for rule in alert_rules()]
    assert sorted(sections) == sorted(names)
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"monitoring/RUNBOOK.md#{rule['alert'].lower()}", rule["alert"]
        section = runbook.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        assert "**Means:**" in section and "**Fix:**" in section, rule["alert"]


def test_every_alert_has_a_firing_and_a_silent_case():
    cases = yaml.safe_load((MONITORING / "tests" / "alerts_test.yml").read_text())["tests"]
    firing, silent = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - silent == {"Watchdog"}, "alerts without a silent case (the Watchdog always fires)"


def test_dashboard_json_is_what_build_py_makes():
    result = subprocess.run([sys.executable, str(DASHBOARDS / "build.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_stat_panel_that_names_an_alert_rule_changes_colour_at_its_threshold():
    """Thresholds are written once, in the rules: a panel saying "as EnergyX" has a step at a
    number EnergyX's expression compares against."""
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    mirrored = 0
    for dashboard in load_dashboards().values():
        for panel in dashboard.panels:
            named = re.findall(r"as (Energy\w+)", getattr(panel, "description", None) or "")
            thresholds = panel.field_config.defaults.thresholds if named and panel.field_config else None
            if thresholds is None:
                continue
            # A panel of the last hour's count mirrors a rule on a per-second rate.
            per = 3600 if any("increase1h" in target.expr for target in panel.targets) else 1
            panel_steps = {step.value / per for step in thresholds.steps if step.value is not None}
            for alert in named:
                numbers = {round(float(a) * (float(b) if b else 1.0), 9) for a, b in
                           re.findall(r"[<>]=?\s*\(?([0-9.]+)(?:\s*\*\s*([0-9.]+))?", exprs[alert])}
                # "> 0" shows as a step just above 0 (0.001 for a rate, 1 for a count): Grafana
                # colours a value equal to a step.
                above_zero = 0.0 in numbers and any(step in (0.001, 1) for step in panel_steps)
                assert panel_steps & numbers or above_zero, (panel.title, alert, panel_steps, numbers)
                mirrored += 1
    assert mirrored >= 8


def load_dashboards():
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()  # so targets load as prometheus.Dataquery, panels as their kinds
    return {path.name: Dashboard.from_json(json.loads(path.read_text()))
            for path in sorted((DASHBOARDS / "json").glob("*.json"))}


def panel_queries(dashboard) -> list[tuple[str, str]]:
    return [(panel.title, target.expr) for panel in dashboard.panels for target in panel.targets]


def recorded_names() -> set[str]:
    groups = yaml.safe_load((MONITORING / "rules" / "recording.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def uid(datasource) -> str:
    return datasource["uid"] if isinstance(datasource, dict) else datasource.uid


def test_dashboards_structure():
    dashboards = load_dashboards()
    assert len(dashboards) >= 2
    uids = [d.uid for d in dashboards.values()]
    assert len(set(uids)) == len(uids) and all(uids)
    recorded = recorded_names()
    for name, dashboard in dashboards.items():
        variables = [v for v in dashboard.templating.list_val if str(getattr(v.type_val, "value", v.type_val)) == "datasource"]
        assert [v.name for v in variables] == ["datasource"], name
        assert dashboard.panels, name
        annotations = [a.expr for a in dashboard.annotations.list_val]
        assert any(expr.startswith("ALERTS{") for expr in annotations), name
        for panel in dashboard.panels:
            if panel.type_val == "row":
                continue
            assert panel.title and panel.targets, f"{name}: empty panel"
            assert panel.description and len(panel.description) > 40, f"{name}: {panel.title} says too little"
            if panel.type_val == "stat":
                thresholds = panel.field_config.defaults.thresholds.steps
                assert len(thresholds) >= 2, f"{name}: {panel.title} has no thresholds"
            assert uid(panel.datasource) == "${datasource}", f"{name}: {panel.title}"
            for target in panel.targets:
                assert type(target).__module__.endswith("prometheus"), type(target)
                assert uid(target.datasource) == "${datasource}"
                assert target.expr.strip()
                uses_recording_rule = any(r in target.expr for r in recorded)
                assert uses_recording_rule or target.expr.startswith(("up", "energy_kafka_up")), target.expr


def test_dashboard_variables_and_rows():
    dashboards = load_dashboards()
    names = {file: [v.name for v in d.templating.list_val] for file, d in dashboards.items()}
    assert names["pipeline-health.json"] == ["datasource", "topic", "partition"]
    assert names["energy-alerts.json"] == ["datasource", "mode"]
    rows = [p.title for p in dashboards["pipeline-health.json"].panels if p.type_val == "row"]
    assert rows == ["Overview", "Kafka brokers", "Alert latency and lag", "Batches and state", "Spark JVM"]
    assert [p.title for p in dashboards["energy-alerts.json"].panels if p.type_val == "row"] == ["Baseline rule"]


def test_provisioning_points_at_the_dashboards():
    provider = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "energy-monitor.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    datasource = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
