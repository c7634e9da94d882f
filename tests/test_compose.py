"""docker-compose.yml: rendered config, exposure, and the whole stack run for real.

The run needs a Docker engine: `make test-compose` (called by .ci/run) starts one through
scripts/compose-local.sh and runs only it; `make test` checks the rendered configuration.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from conftest import ROOT
from pipeline.kafka_io import topic_end_offsets

pytestmark = [pytest.mark.compose]

HOST_KAFKA = "127.0.0.1:9092"


def compose_config(tmp_path, **overrides) -> dict:
    env = (ROOT / ".env.example").read_text()
    for name, value in overrides.items():
        env = re.sub(rf"^{name}=.*$", f"{name}={value}", env, flags=re.M)
    (tmp_path / "env").write_text(env)
    result = subprocess.run(["docker-compose", "--env-file", str(tmp_path / "env"), "-f",
                             str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return yaml.safe_load(result.stdout)


needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")


@needs_compose
@pytest.mark.parametrize("mode", ["demo", "prod"])
def test_config_is_clean_and_publishes_only_on_loopback(tmp_path, mode):
    config = compose_config(tmp_path, RUN_MODE=mode)
    published = []
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '0.0.0.0')}:{port['published']}"
            published.append((name, text))
            assert text.startswith("127.0.0.1:"), f"{name} publishes {text}"
        if "build" in service:
            assert service["image"].split(":")[-1], f"{name}: image not pinned"
        else:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), name
    assert {name for name, _ in published} == {"kafka", "spark-master", "stream", "view", "prometheus", "grafana"}
    for name in ("producer", "stream", "exporter", "view", "spark-worker"):
        assert config["services"][name]["environment"]["RUN_MODE"] == mode
    assert config["services"]["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def docker_running() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def local(*args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(ROOT / "scripts" / "compose-local.sh"), *args], capture_output=True,
                            text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def wait_for(what, check, timeout_s, every_s=3.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


def health() -> dict[str, str]:
    """service -> its container's status, e.g. 'Up 2 minutes (healthy)'."""
    out = subprocess.run(["docker", "ps", "--filter", "label=com.docker.compose.project=energy-monitor",
                          "--format", '{{.Label "com.docker.compose.service"}}\t{{.Status}}'],
                         capture_output=True, text=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def healthy(services: list[str]) -> bool:
    status = health()
    return all("(healthy)" in status.get(s, "") for s in services)


def count(topic: str) -> int:
    try:
        return sum(topic_end_offsets(HOST_KAFKA, topic, timeout_s=5).values())
    except Exception:
        return -1


def prometheus(path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:9090{path}", timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.compose_run
@pytest.mark.skipif(not docker_running(), reason="no Docker engine; run `make test-compose`")
def test_stack_runs_survives_a_kafka_restart_and_loses_no_reading():
    local("down", "-v", check=False)
    local("up")
    try:
        services = ["kafka", "spark-master", "spark-worker", "producer", "stream", "exporter", "view",
                    "prometheus", "alertmanager"]
        wait_for("every service to be healthy", lambda: healthy(services), 600, 5)
        wait_for("demo alerts in energy_alerts", lambda: count("energy_alerts") > 0, 300)

        def targets_up():
            active = prometheus("/api/v1/targets")["data"]["activeTargets"]
            jobs = {t["labels"]["job"]: t["health"] for t in active}
            return jobs if set(jobs) >= {"energy-producer", "energy-stream", "energy-exporter", "prometheus",
                                         "alertmanager"} and set(jobs.values()) == {"up"} else None
        wait_for("every exporter's target up in Prometheus", targets_up, 180)

        readings_before, alerts_before = count("energy_readings"), count("energy_alerts")
        local("restart", "kafka", timeout=300)
        wait_for("kafka healthy again", lambda: healthy(["kafka"]), 300, 5)
        wait_for("readings to continue", lambda: count("energy_readings") > readings_before + 500, 300)
        wait_for("alerts to continue", lambda: count("energy_alerts") > alerts_before, 300)

        local("stop", "producer", timeout=120)
        logs = local("logs", "--no-color", "producer").stdout
        summary = re.findall(r"sent (\d+), acknowledged (\d+), failed (\d+), unacknowledged (\d+)", logs)
        assert summary, logs[-2000:]
        sent, acknowledged, failed, unacknowledged = map(int, summary[-1])
        assert failed == 0 and unacknowledged == 0 and acknowledged == sent
        assert count("energy_readings") == acknowledged
    finally:
        local("down", "-v", timeout=600, check=False)
