"""docker-compose.yml: rendered config, exposure, and the whole stack run for real.

The run needs a Docker engine: `make test-compose` (called by .ci/run) starts one through
scripts/compose-local.sh and runs only it; `make test` checks the rendered configuration.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest
import yaml
from pytest_docker.plugin import DockerComposeExecutor

from helpers import ROOT
from pipeline.core.kafka import BrokerUnavailable, topic_end_offsets

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
SCRIPT = str(ROOT / "scripts" / "compose-local.sh")
needs_docker = pytest.mark.skipif(not docker_running(), reason="no Docker engine; run `make test-compose`")


def project_containers(project: str) -> list[str]:
    listed = subprocess.run(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                            capture_output=True, text=True, check=True)
    return listed.stdout.split()


def compose_local(*args: str, project: str = "energy-monitor", timeout: float = 1800, **env: str):
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COMPOSE_PROJECT": project, **env})


# These two run before the stack's fixtures start anything (pytest keeps the file's order).
@pytest.mark.compose_run
@needs_docker
def test_a_held_port_is_named_before_any_container_is_created():
    project = "energy-monitor-held-port"
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 9092))
        holder.listen()
        result = compose_local("up", project=project, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "9092" in line]
    assert len(errors) == 1, result.stderr
    assert "kafka" in errors[0] and f"pid {os.getpid()}" in errors[0], errors[0]
    assert "building" not in result.stdout, result.stdout
    assert project_containers(project) == []


@pytest.mark.compose_run
@needs_docker
def test_a_start_that_fails_part_way_leaves_no_container(tmp_path):
    project = "energy-monitor-failed-start"
    override = tmp_path / "broken-kafka.yml"
    override.write_text("services:\n  kafka:\n    entrypoint: [\"/no/such/program\"]\n")
    try:
        result = compose_local("up", "alertmanager", "prometheus", "kafka", project=project,
                               COMPOSE_OVERRIDE=str(override))
        assert result.returncode != 0, result.stdout[-2000:]
        assert "start failed" in result.stdout + result.stderr, result.stderr[-2000:]
        assert project_containers(project) == []
    finally:
        compose_local("down", "-v", project=project, timeout=300)


# pytest-docker's fixtures, pointed at this repository's stack: the engine, base images and
# env file come from scripts/compose-local.sh (no registry here); Grafana has no local image.
@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    prepared = compose_local("prepare")
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
    return ["down -v"]


@pytest.fixture(scope="session")
def compose(docker_services, docker_compose_command, docker_compose_file, docker_compose_project_name):
    """Starts the stack as `compose-local.sh up` does (ports checked first, nothing left behind
    on failure); returns a runner of `docker-compose SUBCOMMAND` that gives its text."""
    started = compose_local("up", *SERVICES, project=docker_compose_project_name)
    if started.returncode != 0:
        pytest.fail(f"compose-local.sh up failed:\n{started.stderr[-3000:]}", pytrace=False)
    executor = DockerComposeExecutor(docker_compose_command, docker_compose_file, docker_compose_project_name)
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
@needs_docker
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
