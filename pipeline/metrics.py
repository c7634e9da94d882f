"""Every Prometheus metric of the pipeline, defined here and nowhere else.

Each group takes the registry it registers in, so tests use a fresh `CollectorRegistry`.
Labels stay low-cardinality: reason, mode, topic, group. Never a household.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import kafka_io
from .clock import parse_utc

log = logging.getLogger(__name__)


def serve(registry: CollectorRegistry, host: str, port: int) -> None:
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.produced = Counter("energy_readings_produced_total",
                                "Readings acknowledged by Kafka (acks=all).", registry=registry)
        self.send_errors = Counter("energy_producer_send_errors_total",
                                   "Readings Kafka did not acknowledge.", registry=registry)
        self.delivery_latency = Histogram(
            "energy_producer_delivery_latency_seconds", "From produce() to the broker's acknowledgement.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=registry)

    def delivered(self, ok: bool, latency_s: float) -> None:
        if ok:
            self.produced.inc()
            self.delivery_latency.observe(latency_s)
        else:
            self.send_errors.inc()


def _offsets(text) -> dict[str, dict[str, int]]:
    if not text:
        return {}
    return json.loads(text) if isinstance(text, str) else text


class StreamMetrics:
    """Fed by the query's progress (StreamingQueryListener) and by each batch's own counts."""

    def __init__(self, registry: CollectorRegistry, mode: str, trigger_interval_s: float):
        self.mode = mode
        self.input_rows = Counter("energy_stream_input_rows_total", "Readings read by the stream job.",
                                  registry=registry)
        self.processed_rate = Gauge("energy_stream_processed_rows_per_second",
                                    "Rows per second the last micro-batch processed.", registry=registry)
        self.batch_duration = Gauge("energy_stream_batch_duration_seconds",
                                    "Duration of the last micro-batch.", registry=registry)
        self.batches = Counter("energy_stream_batches_total", "Micro-batches completed.", registry=registry)
        self.offsets_behind = Gauge("energy_stream_offsets_behind_latest",
                                    "Records in the source topic not yet processed (all partitions).",
                                    ["topic"], registry=registry)
        self.watermark_lag = Gauge("energy_stream_watermark_lag_seconds",
                                   "Wall-clock time minus the event-time watermark.", registry=registry)
        self.state_rows = Gauge("energy_stream_state_rows", "Keys in the alert state store.", registry=registry)
        self.state_bytes = Gauge("energy_stream_state_memory_bytes", "Memory of the alert state store.",
                                 registry=registry)
        self.late_dropped = Counter("energy_stream_late_rows_dropped_total",
                                    "Readings dropped because all their windows were closed by the watermark.",
                                    registry=registry)
        self.invalid = Counter("energy_invalid_readings_total", "Readings sent to the dead-letter topic.",
                               ["reason"], registry=registry)
        self.alerts = Counter("energy_alerts_total", "Alerts emitted.", ["mode"], registry=registry)
        self.last_progress = Gauge("energy_stream_last_progress_timestamp_seconds",
                                   "When the query last reported progress (Unix time).", registry=registry)
        self.trigger_interval = Gauge("energy_stream_trigger_interval_seconds",
                                      "Configured micro-batch interval.", registry=registry)
        self.trigger_interval.set(trigger_interval_s)
        self.alerts.labels(mode=mode)  # export 0 before the first alert, so rates exist

    def observe_progress(self, progress: dict) -> None:
        self.last_progress.set(time.time())
        rows = int(progress.get("numInputRows") or 0)
        if rows:
            self.input_rows.inc(rows)
            self.batches.inc()
            self.processed_rate.set(float(progress.get("processedRowsPerSecond") or 0.0))
            self.batch_duration.set((progress.get("durationMs") or {}).get("triggerExecution", 0) / 1000.0)
        for source in progress.get("sources") or []:
            latest, done = _offsets(source.get("latestOffset")), _offsets(source.get("endOffset"))
            for topic, partitions in latest.items():
                behind = sum(max(0, int(end) - int(done.get(topic, {}).get(p, 0))) for p, end in partitions.items())
                self.offsets_behind.labels(topic=topic).set(behind)
        watermark = (progress.get("eventTime") or {}).get("watermark")
        if watermark:
            stamp = parse_utc(watermark)
            if stamp > 0:
                self.watermark_lag.set(time.time() - stamp)
        for operator in progress.get("stateOperators") or []:
            self.state_rows.set(operator.get("numRowsTotal", 0))
            self.state_bytes.set(operator.get("memoryUsedBytes", 0))

    def observe_batch(self, counts) -> None:
        """counts: a stream.BatchCounts."""
        self.alerts.labels(mode=self.mode).inc(counts.alerts)
        self.late_dropped.inc(counts.late_readings)
        for reason, n in counts.invalid_by_reason.items():
            self.invalid.labels(reason=reason).inc(n)


class KafkaLagCollector(Collector):
    """Consumer-group lag, computed from the broker at scrape time.

    Only groups that commit offsets appear (Spark's Kafka source commits none; its lag is
    `energy_stream_offsets_behind_latest`). Lag in seconds is the age of the oldest record the
    group has not consumed yet.
    """

    def __init__(self, bootstrap: str, topics: dict[str, str], timeout_s: float = 5.0):
        """topics: topic name -> its role in the pipeline (readings, alerts, dlq), so rules and
        dashboards can select a topic by role whatever it is named."""
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.topics = dict(topics)
        self.timeout_s = timeout_s
        self._admin = AdminClient(kafka_io.client_config(bootstrap))
        self._consumer = Consumer(kafka_io.client_config(bootstrap, **{"group.id": "energy-lag-exporter",
                                                                       "enable.auto.commit": False}))
        self._lock = threading.Lock()

    def describe(self):
        return []

    def collect(self):
        up = GaugeMetricFamily("energy_kafka_up", "1 if the exporter could read the broker's metadata.")
        ends = GaugeMetricFamily("energy_topic_end_offset", "Records ever written to the topic (sum of end offsets).",
                                 labels=["topic", "role"])
        lag = GaugeMetricFamily("energy_consumer_group_lag", "Records not yet consumed by the group.",
                                labels=["group", "topic"])
        lag_s = GaugeMetricFamily("energy_consumer_group_lag_seconds",
                                  "Age of the oldest record the group has not consumed.", labels=["group", "topic"])
        with self._lock:
            try:
                end_offsets = kafka_io.end_offsets(self._consumer, self.topics, self.timeout_s)
                committed = self._committed()
                up.add_metric([], 1)
            except Exception as exc:  # a scrape must answer; the broker's state is the metric
                log.warning("cannot read Kafka for lag: %s", exc)
                up.add_metric([], 0)
                yield up
                return
            for topic, partitions in end_offsets.items():
                ends.add_metric([topic, self.topics[topic]], sum(partitions.values()))
            for (group, topic), offsets in committed.items():
                behind = {p: max(0, end_offsets.get(topic, {}).get(p, 0) - off) for p, off in offsets.items()}
                lag.add_metric([group, topic], sum(behind.values()))
                lag_s.add_metric([group, topic], self._oldest_age(topic, offsets, behind))
        yield from (up, ends, lag, lag_s)

    def _committed(self) -> dict[tuple[str, str], dict[int, int]]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        groups = self._admin.list_consumer_groups(request_timeout=self.timeout_s).result(self.timeout_s)
        out: dict[tuple[str, str], dict[int, int]] = {}
        for listing in groups.valid:
            if listing.group_id == "energy-lag-exporter":
                continue
            futures = self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(listing.group_id)], request_timeout=self.timeout_s)
            for future in futures.values():
                for tp in future.result(self.timeout_s).topic_partitions or []:
                    if tp.offset >= 0 and tp.topic in self.topics:
                        out.setdefault((listing.group_id, tp.topic), {})[tp.partition] = tp.offset
        return out

    def _oldest_age(self, topic: str, committed: dict[int, int], behind: dict[int, int]) -> float:
        from confluent_kafka import TopicPartition

        oldest_ms = None
        for partition, offset in committed.items():
            if behind[partition] == 0:
                continue
            self._consumer.assign([TopicPartition(topic, partition, offset)])
            msg = self._consumer.poll(self.timeout_s)
            if msg is not None and not msg.error():
                stamp = msg.timestamp()[1]
                oldest_ms = stamp if oldest_ms is None else min(oldest_ms, stamp)
        self._consumer.unassign()
        return 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000.0)


class DataDirCollector(Collector):
    """Free and total bytes of the filesystems that hold the pipeline's data, read at scrape
    time (statvfs), for EnergyDiskFillingUp. A folder not made yet is measured at its nearest
    existing parent: that is where its data will go."""

    def __init__(self, dirs: dict[str, str]):
        self.dirs = dict(dirs)

    def describe(self):
        return []

    def collect(self):
        free = GaugeMetricFamily("energy_data_dir_free_bytes", "Bytes free for the data directory "
                                 "(available to unprivileged writers).", labels=["dir"])
        size = GaugeMetricFamily("energy_data_dir_size_bytes", "Size of the data directory's filesystem.",
                                 labels=["dir"])
        for name, folder in self.dirs.items():
            path = Path(folder)
            while not path.exists() and path != path.parent:
                path = path.parent
            stats = os.statvfs(path)
            free.add_metric([name], stats.f_bavail * stats.f_frsize)
            size.add_metric([name], stats.f_blocks * stats.f_frsize)
        yield from (free, size)


def receiver_gauge(registry: CollectorRegistry, configured: bool) -> None:
    """1 when Alertmanager has a receiver (ALERT_WEBHOOK_URL), so the dashboard can say when
    alerts reach nobody."""
    Gauge("energy_alert_receiver_configured", "1 if ALERT_WEBHOOK_URL gives Alertmanager a receiver.",
          registry=registry).set(1 if configured else 0)
