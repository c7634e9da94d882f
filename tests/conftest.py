"""Session-scoped real services: a Kafka broker (KRaft, Maven Central jars) and a local Spark.

Every test gets its own topics and checkpoint root through `make_settings`, so tests share the
broker without seeing each other's data.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline import broker
from pipeline.config import Settings
from pipeline.kafka_io import BrokerUnavailable, ReadingProducer, ensure_topics, read_topic

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> str:
    data = tmp_path_factory.mktemp("kafka")
    port, controller = free_port(), free_port()
    command = broker.prepare(data, "127.0.0.1", port, controller)
    log_file = (data / "broker.log").open("wb")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            pytest.fail(f"Kafka broker exited ({process.returncode}); see {data / 'broker.log'}")
        try:
            ensure_topics(bootstrap, {}, timeout_s=2.0)
            break
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("Kafka broker not ready after 90 s")
            time.sleep(1.0)
    yield bootstrap
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def make_settings(kafka, tmp_path):
    """Settings on the test broker with fresh topics; keyword arguments override fields."""
    def make(**overrides) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        base = Settings(bootstrap_servers=kafka,
                        readings_topic=f"readings_{suffix}", alerts_topic=f"alerts_{suffix}",
                        dlq_topic=f"dlq_{suffix}", checkpoint_root=str(tmp_path / "checkpoints"),
                        var_dir=str(tmp_path / "var"), readings_partitions=2, shuffle_partitions=2,
                        state_buckets=8)
        return dataclasses.replace(base, **overrides)
    return make


def isolated_stack(tmp_path, **overrides) -> Settings:
    """Settings for a whole local stack of its own: every port free, every file under tmp_path."""
    var = tmp_path / "var"
    return dataclasses.replace(
        Settings(), bootstrap_servers=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
        var_dir=str(var), checkpoint_root=str(var / "checkpoints"), producer_metrics_port=free_port(),
        stream_metrics_port=free_port(), exporter_port=free_port(), prometheus_port=free_port(),
        alertmanager_port=free_port(), view_port=free_port(), **overrides)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a CLI subprocess load exactly these settings."""
    from pipeline.config import _ENV

    env = dict(os.environ)
    for field in dataclasses.fields(Settings):
        env[_ENV[field.name][0]] = str(getattr(settings, field.name))
    for alias in ("SOURCE_TOPIC", "TOPIC"):
        env.pop(alias, None)
    env["PYSPARK_PYTHON"] = sys.executable
    return env


def run_cli(settings: Settings, *args: str, timeout: float = 300, check: bool = True):
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=settings_env(settings),
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        errors = [ln for ln in result.stderr.splitlines()
                  if "error" in ln.lower() or "exception" in ln.lower() or "caused by" in ln.lower()]
        raise AssertionError(f"energy-monitor {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n" + "\n".join(errors[:40]))
    return result


def publish(settings: Settings, lines: list[bytes | str]) -> None:
    ensure_topics(settings.bootstrap_servers, {settings.readings_topic: settings.readings_partitions,
                                               settings.alerts_topic: 1, settings.dlq_topic: 1})
    producer = ReadingProducer(settings.bootstrap_servers, settings.readings_topic)
    for line in lines:
        raw = line.encode() if isinstance(line, str) else line
        parts = raw.split(b",")
        producer.send(parts[1] if len(parts) > 1 else None, raw)
    assert producer.flush(30) == 0
    assert producer.stats.failed == 0


def records(settings: Settings, topic: str) -> list:
    import json

    return [json.loads(m.value()) for m in read_topic(settings.bootstrap_servers, topic,
                                                      stop_at_end=True, idle_timeout_s=10)]


@pytest.fixture(scope="session")
def spark():
    from pipeline.stream import spark_session

    session = spark_session(Settings(shuffle_partitions=2), app_name="energy-monitor-tests")
    yield session
    session.stop()


def run_job_once(spark, settings: Settings):
    """Run the stream job in this process until the available input is processed."""
    from pipeline.stream import start_query

    seen = []
    query = start_query(spark, settings, once=True, on_batch=seen.append)
    query.awaitTermination()
    assert query.exception() is None, query.exception()
    return seen
