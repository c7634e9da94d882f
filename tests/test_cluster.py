"""A 3-broker KRaft cluster (`KAFKA_BROKERS=3`) loses nothing when a broker is SIGKILLed.

The simulator's readings go in at a steady rate while the stream job runs; the broker leading
most readings partitions is killed, later restarted. Run by `make test-cluster` (not part of
`make test`, which stays on one broker).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

from helpers import dashboard_queries, free_port, isolated_stack, prom_query, run_cli, up, wait_for
from pipeline.core.kafka import BrokerUnavailable, ReadingProducer, client_config, read_topic, topic_end_offsets
from pipeline.ingest.simulator import Simulator
from pipeline.ops.stack import running_pid
from reference import expected_windows

pytestmark = [pytest.mark.cluster]

T0 = 1_783_000_800  # 2026-07-02T14:00:00Z
HOUSEHOLDS, TICKS, TICKS_PER_S = 20, 160, 2  # 3,200 readings over 80 s
# The pipeline dashboard's own query (its stat panel), as Grafana would send it.
UNDER_REPLICATED = next(expr for _, title, expr in dashboard_queries() if title == "Under-replicated partitions")


def free_run(count: int) -> int:
    """The first of `count` consecutive free ports (node i's controller is base + i - 1)."""
    while True:
        base = free_port()
        if base + count < 65_536 and all(free_port_is(base + i) for i in range(count)):
            return base


def free_port_is(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class SteadyProducer(threading.Thread):
    """The simulator's lines at TICKS_PER_S ticks a second, through the pipeline's producer."""

    def __init__(self, settings):
        super().__init__(daemon=True)
        self.lines = [line for _, line in Simulator(HOUSEHOLDS, 15, 10.0, 7, T0).lines(TICKS)]
        self.producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
        self.sent = 0

    def run(self) -> None:
        for tick in range(TICKS):
            for line in self.lines[tick * HOUSEHOLDS:(tick + 1) * HOUSEHOLDS]:
                self.producer.send(line.split(",")[1], line)
                self.sent += 1
            self.producer.wait(1 / TICKS_PER_S)


def leaders(settings) -> Counter:
    """Broker id -> readings partitions it leads."""
    metadata = AdminClient(client_config(settings.kafka.bootstrap_servers)).list_topics(timeout=10)
    return Counter(p.leader for p in metadata.topics[settings.kafka.readings_topic].partitions.values())


def under_replicated(settings) -> float:
    result = prom_query(settings.stack.prometheus_port, UNDER_REPLICATED)
    return float(result[0]["value"][1]) if result else -1.0


def test_a_killed_broker_loses_no_reading_and_stops_no_alert(tmp_path):
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
    settings = isolated_stack(tmp_path, kafka_brokers=3, bootstrap_servers=addresses,
                              kafka_controller_port=free_run(3), readings_partitions=6, run_mode="demo")
    brokers = ["kafka-1", "kafka-2", "kafka-3"]
    up(settings, *brokers, "prometheus", "exporter", "stream")
    try:
        job_pid = running_pid(settings, "stream")
        producer = SteadyProducer(settings)
        producer.start()
        wait_for("a quarter of the readings", lambda: producer.sent >= len(producer.lines) // 4, 60, 0.2)

        victim = leaders(settings).most_common(1)[0][0]
        os.kill(running_pid(settings, f"kafka-{victim}"), signal.SIGKILL)
        killed_at = wait_for("the alert count", lambda: alert_count(settings) + 1, 60, 1) - 1
        wait_for("the dashboard to show under-replicated partitions",
                 lambda: under_replicated(settings) > 0, 90, 2)
        wait_for("alerts written while the broker is down", lambda: alert_count(settings) > killed_at + 20, 120, 2)
        up(settings, f"kafka-{victim}")

        producer.join(240)
        assert not producer.is_alive()
        assert producer.producer.flush(120) == 0
        assert producer.producer.stats.failed == 0, producer.producer.stats.last_error
        assert producer.producer.stats.acknowledged == len(producer.lines)

        in_topic = Counter(m.value().decode() for m in read_topic(settings.kafka.bootstrap_servers,
                                                                  settings.kafka.readings_topic, stop_at_end=True))
        assert in_topic == Counter(producer.lines)  # every acknowledged reading, exactly once

        expected = expected_windows(producer.lines, settings.rule)
        wait_for("the alerts of every window the readings cross", lambda: alert_windows(settings) >= expected,
                 240, 2)
        assert alert_windows(settings) == expected
        assert running_pid(settings, "stream") == job_pid  # no restart

        wait_for("the restarted broker back in every ISR",
                 lambda: all(len(p.isrs) == 3 for t in AdminClient(client_config(settings.kafka.bootstrap_servers))
                             .list_topics(timeout=10).topics.values() for p in t.partitions.values()), 180, 2)
        wait_for("the dashboard's under-replicated count back to 0", lambda: under_replicated(settings) == 0, 120, 2)
        stream_log = (tmp_path / "var" / "log" / "stream.log").read_text()
        assert "stream query failed" not in stream_log
        slowest = max(map(int, re.findall(r"but spent (\d+) milliseconds", stream_log)), default=0)
        print(f"slowest batch across the kill and the restart: {slowest / 1000:.1f} s")
    finally:
        run_cli(settings, "down", timeout=300, check=False)


def alert_count(settings) -> int:
    """Records in the alerts topic; -1 while its leader is being re-elected (the probe's own
    client may still ask the dead broker)."""
    try:
        return sum(topic_end_offsets(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic).values())
    except BrokerUnavailable:
        return -1


def alert_windows(settings) -> set[tuple[str, str, str]]:
    """The fixed rule's alerted windows (the baseline rule's alerts have their own tests)."""
    alerts = [json.loads(m.value()) for m in read_topic(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic,
                                                        stop_at_end=True)]
    return {(a["household_id"], a["window_start"], a["window_end"]) for a in alerts if a["kind"] == "threshold"}
