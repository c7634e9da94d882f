"""The archiver on the real broker: no record stops it, retention and recreated topics are
noticed at start, new partitions are picked up, and one history has one writer."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from deltalake import DeltaTable
from prometheus_client import CollectorRegistry

from helpers import publish, run_cli, settings_env, wait_for
from pipeline.archiver.archive import Archiver, Pace
from pipeline.core.settings import with_values
from pipeline.core.history import HistoryStore
from pipeline.core.kafka import ReadingProducer, ensure_topics
from pipeline.core.metrics import HistoryMetrics
from reference import iso

pytestmark = [pytest.mark.kafka]


def energy_rows(settings):
    return DeltaTable(f"{settings.history.history_root}/energy").to_pandas()


def sample(registry: CollectorRegistry, name: str, table: str) -> float:
    return registry.get_sample_value(name, {"table": table}) or 0.0


@contextmanager
def archiving(settings, accept_new_topic: bool = False, **values):
    """An archiver of these settings' history (with `values` changed: settings variables) running
    in a thread of this process, quick to flush and to find new partitions, its consumer group the
    test's own; yields its metrics' registry."""
    registry = CollectorRegistry()
    history = with_values(settings, history_group=settings.history.history_group + settings.kafka.readings_topic,
                          history_flush_seconds=0.3, **values).history
    archiver = Archiver(history, HistoryStore(history.history_root), HistoryMetrics(registry), accept_new_topic,
                        Pace(partitions_every_s=1.0))
    stop, failure = threading.Event(), []

    def run():
        try:
            archiver.run(stop)
        except Exception as exc:  # handed to the test below, which fails on it
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield registry
        assert not failure, failure
        assert thread.is_alive(), "the archiver stopped"
    finally:
        stop.set()
        thread.join(30)


def consumed(registry, table: str, count: int):
    wait_for(f"{count} {table} records archived", lambda: sample(registry, "energy_history_records_total", table)
             >= count, 60, 0.2)


def alert(household: str, start: int, **fields) -> dict:
    document = {"alert_id": hashlib.sha256(f"{household}{start}".encode()).hexdigest()[:32],
                "household_id": household, "window_start": iso(start), "window_end": iso(start + 60),
                "kwh": 0.07, "threshold_kwh": 0.05, "rule": "kwh>0.05 over 1 minute", "mode": "demo",
                "detected_at": iso(start + 60), "kind": "threshold"}
    return {**document, **fields}


def send_alerts(settings, values: list[bytes]) -> None:
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic)
    for value in values:
        producer.send(b"H001", value)
    assert producer.flush(30) == 0


def test_bad_records_beside_real_ones_neither_stop_the_archiver_nor_move_retention(make_settings):
    settings = make_settings()
    today = int(time.time()) // 86400 * 86400
    real = [f"{iso(today - d * 86400 + 600 + 15 * i)},H00{h},0.01" for d in range(3) for h in (1, 2) for i in range(4)]
    publish(settings, real + ["2099-06-01T00:00:00Z,H001,0.01"])  # valid in form, far past the skew
    good = [alert("H001", today + 600), alert("H002", today - 86400 + 600)]
    bad = [b'{"kwh": 1' + b"0" * 400 + b"}",  # an integer too large for a float
           json.dumps(alert("H003", today, kwh=1e20)).encode(),
           json.dumps(alert("H003", today, window_start="9999-01-01T00:00:00Z",
                            window_end="9999-01-01T00:01:00Z")).encode(),
           json.dumps(alert("H003", today, detected_at=1783000860)).encode(),
           json.dumps(alert("H003", today)).replace('"kwh": 0.07', '"kwh": 1e400').encode()]
    assert b"1e400" in bad[-1]
    send_alerts(settings, [bad[0], json.dumps(good[0]).encode(), *bad[1:], json.dumps(good[1]).encode()])

    with archiving(settings, history_retention_days=2) as registry:  # it maintains after its first batch
        consumed(registry, "energy", len(real) + 1)
        consumed(registry, "alerts", len(good) + len(bad))
        assert sample(registry, "energy_history_skipped_records_total", "energy") == 1
        assert sample(registry, "energy_history_skipped_records_total", "alerts") == len(bad)
    store = HistoryStore(settings.history.history_root)
    store.maintain(retention_days=2)
    assert sorted(set(energy_rows(settings).day)) == sorted({iso(today - d * 86400)[:10] for d in range(3)})
    assert sorted(store.alerts().alert_id) == sorted(a["alert_id"] for a in good)
    listed = [json.loads(line) for line in run_cli(settings, "history").stdout.splitlines()]
    assert sorted(a["alert_id"] for a in listed) == sorted(a["alert_id"] for a in good)


def test_records_deleted_by_retention_are_counted_and_the_rest_archived(make_settings):
    settings = make_settings(readings_partitions=1)
    lines = [f"{iso(1_783_000_800 + 15 * i)},H001,0.01" for i in range(30)]
    publish(settings, lines[:10])
    with archiving(settings) as registry:
        consumed(registry, "energy", 10)
    publish(settings, lines[10:])
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    deleted = admin.delete_records([TopicPartition(settings.kafka.readings_topic, 0, 25)])
    deleted[next(iter(deleted))].result(30)  # offsets 10..24 never archived

    with archiving(settings) as registry:
        consumed(registry, "energy", 5)
        assert sample(registry, "energy_history_retention_gap_records_total", "energy") == 15
    assert energy_rows(settings).readings.sum() == 15


def test_positions_ahead_of_a_recreated_topic_stop_with_one_line(make_settings):
    settings = make_settings(readings_partitions=1)
    publish(settings, [f"{iso(1_783_000_800 + 15 * i)},H001,0.01" for i in range(20)])
    with archiving(settings) as registry:
        consumed(registry, "energy", 20)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for future in admin.delete_topics([settings.kafka.readings_topic]).values():
        future.result(30)
    wait_for("the topic gone", lambda: settings.kafka.readings_topic not in admin.list_topics(timeout=10).topics, 30, 0.5)
    publish(settings, ["2026-07-02T15:00:00Z,H002,0.01"])

    refused = run_cli(settings, "archive", check=False, timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "was recreated" in refused.stderr and "--accept-new-topic" in refused.stderr
    assert "Traceback" not in refused.stderr

    with archiving(settings, accept_new_topic=True) as registry:
        consumed(registry, "energy", 1)
    assert "H002" in set(energy_rows(settings).household_id)


def test_partitions_added_while_it_runs_are_archived(make_settings):
    settings = make_settings(readings_partitions=1)
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topics, **settings.kafka.topic_replication)
    with archiving(settings) as registry:
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
        for future in admin.create_partitions([NewPartitions(settings.kafka.readings_topic, 3)]).values():
            future.result(30)
        producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
        # The producer's own view: one that still knows a single partition fails the records of the others.
        wait_for("the new partitions known", lambda: all(len(
            client.list_topics(settings.kafka.readings_topic, timeout=10).topics[settings.kafka.readings_topic].partitions) == 3
            for client in (admin, producer._producer)), 30, 0.5)
        for partition in range(3):
            producer._producer.produce(settings.kafka.readings_topic, f"2026-07-02T14:00:00Z,H00{partition},0.01".encode(),
                                       partition=partition, on_delivery=producer._delivered)
        assert producer.flush(30) == 0 and producer.stats.failed == 0, producer.stats.last_error
        consumed(registry, "energy", 3)
    assert sorted(energy_rows(settings).household_id) == ["H000", "H001", "H002"]


def test_a_second_archiver_on_one_history_is_refused(make_settings, tmp_path):
    settings = make_settings()
    log = tmp_path / "first.log"
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "archive"], env=settings_env(settings),
                             stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for("the first archiver", lambda: "archiving" in log.read_text(), 60, 0.3)
        second = run_cli(settings, "archive", check=False, timeout=120)
        assert second.returncode == 1
        assert f"another archiver (pid {first.pid}) is writing {settings.history.history_root}" in second.stderr
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(60)
    assert (Path(settings.history.history_root) / "_archiver.lock").exists()


def test_seen_readings_know_repeats_within_the_horizon_once_committed():
    from pipeline.archiver.archive import SeenReadings

    seen = SeenReadings(horizon_s=600)
    batch = [("H001", 1000, 0.1), ("H001", 1000, 0.2), ("H002", 1000, 0.1)]
    fresh, repeats = seen.fresh(batch)
    assert fresh == [("H001", 1000, 0.1), ("H002", 1000, 0.1)] and repeats == 1  # the first to arrive counts
    assert seen.fresh(batch) == (fresh, 1)  # not committed yet: a retry is no repeat of itself
    seen.add(fresh)
    assert seen.fresh(batch) == ([], 3)
    seen.add([("H003", 2000, 0.1)])  # the newest is now 2000: 1000 is beyond the horizon
    assert seen.fresh([("H001", 1000, 0.1)]) == ([("H001", 1000, 0.1)], 0)


def test_a_partition_without_a_leader_yet_is_waited_for_not_a_crash(make_settings):
    """A partition created moments before the archiver starts may have no leader yet: that answer
    is waited out, while an error that waiting cannot mend is raised at once."""
    settings = make_settings()
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topics, **settings.kafka.topic_replication)
    archiver = Archiver(settings.history, HistoryStore(settings.history.history_root), HistoryMetrics(CollectorRegistry()))
    real = archiver._consumer
    try:
        archiver._consumer = _Answers(real, KafkaError.NOT_LEADER_FOR_PARTITION)
        assert archiver._watermarks(settings.kafka.readings_topic, 0) == (0, 0)
        assert archiver._consumer.calls == 2
        archiver._consumer = _Answers(real, KafkaError.TOPIC_AUTHORIZATION_FAILED)
        with pytest.raises(KafkaException):
            archiver._watermarks(settings.kafka.readings_topic, 0)
        assert archiver._consumer.calls == 1
    finally:
        real.close()


class _Answers:
    """A consumer whose first watermark answer is the error `code`, the next ones the broker's."""

    def __init__(self, real, code: int):
        self.real, self.code, self.calls = real, code, 0

    def get_watermark_offsets(self, partition, timeout):
        self.calls += 1
        if self.calls == 1:
            raise KafkaException(KafkaError(self.code))
        return self.real.get_watermark_offsets(partition, timeout=timeout)
