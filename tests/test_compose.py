"""docker-compose.yml: rendered config, exposure, and the whole stack run for real.

The run needs a Docker engine: `make test-compose` (called by .ci/run) starts one through
scripts/compose-local.sh and runs only it; `make test` checks the rendered configuration.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml
from pytest_docker.plugin import DockerComposeExecutor

from helpers import ROOT
from pipeline.kafka_io import BrokerUnavailable, topic_end_offsets

pytestmark = [pytest.mark.compose]

HOST_KAFKA = "127.0.0.1:9092"


def compose_config(tmp_path, *extra_files: str, **overrides) -> dict:
    env = (ROOT / ".env.example").read_text()
    for name, value in overrides.items():
        env = re.sub(rf"^{name}=.*$", f"{name}={value}", env, flags=re.M)
    (tmp_path / "env").write_text(env)
    files = [arg for name in ("docker-compose.yml", *extra_files) for arg in ("-f", str(ROOT / name))]
    result = subprocess.run(["docker-compose", "--env-file", str(tmp_path / "env"), *files, "config"],
                            capture_output=True, text=True)
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


@needs_compose
def test_cluster_variant_has_three_brokers_two_workers_and_bootstrap_lists(tmp_path):
    config = compose_config(tmp_path, "docker-compose.cluster.yml")
    services = config["services"]
    brokers = {name: services[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")}
    assert sorted(env["KAFKA_CFG_NODE_ID"] for env in brokers.values()) == ["1", "2", "3"]
    assert {env["KAFKA_CFG_CONTROLLER_QUORUM_VOTERS"] for env in brokers.values()} == {
        "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert all(env["KAFKA_CFG_MIN_INSYNC_REPLICAS"] == "2" and env["KAFKA_CFG_DEFAULT_REPLICATION_FACTOR"] == "3"
               and env["KAFKA_CFG_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false" for env in brokers.values())
    for name in ("producer", "stream", "exporter", "archiver", "view", "spark-worker", "spark-worker-2"):
        assert services[name]["environment"]["BOOTSTRAP_SERVERS"] == "kafka:29092,kafka-2:29092,kafka-3:29092", name
    assert {"kafka-2", "kafka-3", "spark-worker-2"} <= set(services["stream"]["depends_on"])
    assert "checkpoints" in " ".join(str(v) for v in services["spark-worker-2"]["volumes"])
    for name, service in services.items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '0.0.0.0')}:{port['published']}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {text}"


def docker_running() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


SERVICES = ["kafka", "spark-master", "spark-worker", "producer", "stream", "exporter", "archiver", "view",
            "prometheus", "alertmanager"]


# pytest-docker's fixtures, pointed at this repository's stack: the engine, base images and
# env file come from scripts/compose-local.sh (no registry here); Grafana has no local image.
@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    prepared = subprocess.run([str(ROOT / "scripts" / "compose-local.sh"), "prepare"], capture_output=True,
                              text=True, timeout=1800)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    return f"docker-compose --env-file {prepared.stdout.strip()}"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return "energy-monitor"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["down -v", "build", f"up -d {' '.join(SERVICES)}"]


@pytest.fixture(scope="session")
def compose(docker_services, docker_compose_command, docker_compose_file, docker_compose_project_name):
    """Runs `docker-compose SUBCOMMAND` on the stack docker_services started; returns its text."""
    executor = DockerComposeExecutor(docker_compose_command, docker_compose_file, docker_compose_project_name)
    # vfs stores every layer as a full copy: drop the images that rebuilds left untagged.
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)
    return lambda subcommand: executor.execute(subcommand).decode()


def healthy(compose, services: list[str]) -> bool:
    for service in services:
        container = compose(f"ps -q {service}").strip()
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
                               capture_output=True, text=True).stdout.strip() if container else ""
        if state != "healthy":
            return False
    return True


def count(topic: str) -> int:
    try:
        return sum(topic_end_offsets(HOST_KAFKA, topic, timeout_s=5).values())
    except BrokerUnavailable:
        return -1


def prometheus(path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:9090{path}", timeout=10) as response:
        return json.loads(response.read())


def targets_up() -> bool:
    active = prometheus("/api/v1/targets")["data"]["activeTargets"]
    jobs = {t["labels"]["job"]: t["health"] for t in active}
    return set(jobs) >= {"energy-producer", "energy-stream", "energy-exporter", "energy-history", "prometheus",
                         "alertmanager"} and set(jobs.values()) == {"up"}


def job_alerts_counted() -> float:
    """The job's own `energy_alerts_total`: tallied on the Spark workers, read by its driver."""
    result = prometheus("/api/v1/query?query=sum(energy_alerts_total)")["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def history_lines(compose) -> int:
    """Alerts in the history, as the view's container reads them from the shared volume."""
    return sum(line.startswith('{"alert_id"') for line in compose("exec -T view energy-monitor history").splitlines())


@pytest.mark.compose_run
@pytest.mark.skipif(not docker_running(), reason="no Docker engine; run `make test-compose`")
def test_stack_runs_survives_a_kafka_restart_and_loses_no_reading(docker_services, compose):
    wait = docker_services.wait_until_responsive
    wait(check=lambda: healthy(compose, SERVICES), timeout=600, pause=5)
    wait(check=lambda: count("energy_alerts") > 0, timeout=300, pause=3)
    wait(check=targets_up, timeout=180, pause=3)
    wait(check=lambda: job_alerts_counted() > 0, timeout=120, pause=5)
    wait(check=lambda: history_lines(compose) > 0, timeout=120, pause=5)

    readings_before, alerts_before = count("energy_readings"), count("energy_alerts")
    compose("restart kafka")
    wait(check=lambda: healthy(compose, ["kafka"]), timeout=300, pause=5)
    wait(check=lambda: count("energy_readings") > readings_before + 500, timeout=300, pause=3)
    wait(check=lambda: count("energy_alerts") > alerts_before, timeout=300, pause=3)

    compose("stop producer")
    logs = compose("logs --no-color producer")
    summary = re.findall(r"sent (\d+), acknowledged (\d+), failed (\d+), unacknowledged (\d+)", logs)
    assert summary, logs[-2000:]
    sent, acknowledged, failed, unacknowledged = map(int, summary[-1])
    assert failed == 0 and unacknowledged == 0 and acknowledged == sent
    assert count("energy_readings") == acknowledged
