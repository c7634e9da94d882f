"""Session-scoped real services: a Kafka broker (KRaft, Maven Central jars) and a local Spark.

Every test gets its own topics, checkpoint root and ports through `make_settings`, so tests share
the broker without seeing each other's data, and tests run in parallel (pytest-xdist: each worker
has its own broker and Spark) without fighting over a port. Shared helpers live in helpers.py.
"""
from __future__ import annotations

import uuid

import pytest

from pipeline.ops import broker
from pipeline.core.settings import Settings, with_values


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> str:
    process, bootstrap = broker.start(tmp_path_factory.mktemp("kafka"), broker.free_port(), broker.free_port())
    yield bootstrap
    broker.stop(process)


@pytest.fixture
def make_settings(kafka, tmp_path):
    """Settings on the test broker with fresh topics; keyword arguments override fields."""
    def make(**overrides) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        base = with_values(None, bootstrap_servers=kafka,
                        readings_topic=f"readings_{suffix}", alerts_topic=f"alerts_{suffix}",
                        dlq_topic=f"dlq_{suffix}", checkpoint_root=str(tmp_path / "checkpoints"),
                        var_dir=str(tmp_path / "var"), readings_partitions=2, shuffle_partitions=2,
                        state_buckets=8, stream_metrics_port=0, producer_metrics_port=0,
                        exporter_port=broker.free_port(), view_port=broker.free_port(),
                        spark_ui_port=broker.free_port(), history_root=str(tmp_path / "history"),
                        history_metrics_port=0)
        return with_values(base, **overrides)
    return make


@pytest.fixture(scope="session")
def spark():
    from pipeline.job.session import spark_session

    session = spark_session(with_values(None, shuffle_partitions=2, spark_ui_port=broker.free_port()).job, app_name="energy-monitor-tests")
    yield session
    session.stop()
