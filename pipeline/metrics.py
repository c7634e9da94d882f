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


class HistoryMetrics:
    """The archiver (archiver.py); `table` is `alerts` or `energy`."""

    def __init__(self, registry: CollectorRegistry):
        self.records = Counter("energy_history_records_total", "Kafka records the archiver consumed.",
                               ["table"], registry=registry)
        self.rows = Counter("energy_history_rows_written_total",
                            "Rows committed to the history (alerts: new alert ids only).", ["table"],
                            registry=registry)
        self.skipped = Counter("energy_history_skipped_records_total",
                               "Records that are not a valid reading or alert, skipped.", ["table"],
                               registry=registry)
        self.duplicates = Counter("energy_history_duplicate_readings_total",
                                  "Readings of a household and timestamp already archived, stored once.",
                                  registry=registry)
        self.retention_gap = Counter("energy_history_retention_gap_records_total",
                                     "Records deleted by retention before the archiver read them.", ["table"],
                                     registry=registry)
        self.write_errors = Counter("energy_history_write_errors_total",
                                    "Failed history commits and maintenance runs (retried).", registry=registry)
        self.last_commit = Gauge("energy_history_last_commit_timestamp_seconds",
                                 "When the archiver last committed a batch.", registry=registry)
        for table in ("alerts", "energy"):
            for family in (self.records, self.rows, self.skipped, self.retention_gap):
                family.labels(table)


def _offsets(text) -> dict[str, dict[str, int]]:
    if not text:
        return {}
    return json.loads(text) if isinstance(text, str) else text


# Seconds from a crossing reading reaching Kafka to its alert written: fine below the 1 s
# trigger's few seconds, coarse up to the original query's minutes.
ALERT_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
                         120.0, 300.0, 900.0)


class StreamMetrics:
    """Fed by the query's progress (StreamingQueryListener) and by each batch's own counts.

    Labels with a known set of values (modes, dead-letter reasons) start at 0 for each value,
    so rates and panels show 0 rather than nothing before the first event."""

    def __init__(self, registry: CollectorRegistry, mode: str, trigger_interval_s: float,
                 slo_s: float = 2.0, modes: tuple[str, ...] = ("demo", "prod"), reasons: tuple[str, ...] = ()):
        self.mode, self.slo_s = mode, slo_s
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
        self.duplicates = Counter("energy_duplicate_readings_total", "Readings of a household and timestamp "
                                  "already counted (sent again within the watermark horizon), counted once.",
                                  registry=registry)
        self.last_progress = Gauge("energy_stream_last_progress_timestamp_seconds",
                                   "When the query last reported progress (Unix time).", registry=registry)
        self.trigger_interval = Gauge("energy_stream_trigger_interval_seconds",
                                      "Configured micro-batch interval.", registry=registry)
        self.trigger_interval.set(trigger_interval_s)
        self._add_alert_instruments(registry, slo_s)
        for value in modes:
            for kind in ("threshold", "baseline"):
                self.alerts.labels(mode=value, kind=kind)
        for reason in reasons:
            self.invalid.labels(reason=reason)

    def _add_alert_instruments(self, registry: CollectorRegistry, slo_s: float) -> None:
        self.alerts = Counter("energy_alerts_total", "Alerts emitted, by mode and rule kind (threshold, baseline).",
                              ["mode", "kind"], registry=registry)
        self.baseline_warm = Gauge("energy_baseline_households_warm", "Households whose baseline is warm in "
                                   "every slot (as of the last batch that touched their state bucket).",
                                   registry=registry)
        self.baseline_warming = Gauge("energy_baseline_households_warming", "Households whose baseline is "
                                      "still warming in some slot.", registry=registry)
        self._baseline_buckets: dict[int, tuple[int, int]] = {}
        self.alert_latency = Histogram(
            "energy_alert_latency_seconds", "From the Kafka record time of the reading that made a window "
            "cross to its alert written to Kafka.", buckets=ALERT_LATENCY_BUCKETS, registry=registry)
        self.within_slo = Counter("energy_alerts_within_slo_total",
                                  "Alerts written within ALERT_LATENCY_SLO_SECONDS of their crossing reading.",
                                  registry=registry)
        Gauge("energy_alert_latency_slo_seconds", "The alert latency target (ALERT_LATENCY_SLO_SECONDS).",
              registry=registry).set(slo_s)

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
        self.alerts.labels(mode=self.mode, kind="threshold").inc(counts.alerts - counts.baseline_alerts)
        self.alerts.labels(mode=self.mode, kind="baseline").inc(counts.baseline_alerts)
        if counts.baseline_households:
            self._baseline_buckets.update(counts.baseline_households)
            self.baseline_warm.set(sum(warm for warm, _ in self._baseline_buckets.values()))
            self.baseline_warming.set(sum(warming for _, warming in self._baseline_buckets.values()))
        for latency, n in counts.alert_latencies_s:
            for _ in range(n):
                self.alert_latency.observe(latency)
        self.within_slo.inc(sum(n for latency, n in counts.alert_latencies_s if latency <= self.slo_s))
        self.late_dropped.inc(counts.late_readings)
        self.duplicates.inc(counts.duplicate_readings)
        for reason, n in counts.invalid_by_reason.items():
            self.invalid.labels(reason=reason).inc(n)


def committed_offsets(checkpoint: Path) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the next offset the stream job reads, from its checkpoint: the
    source offsets of the newest committed batch (`offsets/N` once `commits/N` exists).
    Empty before the first commit."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not commits:
        return {}
    lines = (checkpoint / "offsets" / str(max(commits))).read_text().splitlines()
    source = json.loads(lines[2])  # after the version and the batch metadata: the Kafka source
    return {(topic, int(p)): int(offset) for topic, partitions in source.items() for p, offset in partitions.items()}


class _KafkaCollector(Collector):
    """A collector that reads Kafka at scrape time with a consumer of its own (never committing)."""

    def __init__(self, bootstrap: str, group: str, timeout_s: float):
        from confluent_kafka import Consumer

        self.timeout_s = timeout_s
        self._consumer = Consumer(kafka_io.client_config(bootstrap, **{"group.id": group,
                                                                       "enable.auto.commit": False}))
        self._lock = threading.Lock()

    def describe(self):
        return []


class StreamLagCollector(_KafkaCollector):
    """The stream job's lag per partition, at scrape time: records behind (Kafka's end offset
    minus the job's next offset) and, in seconds, the age of the oldest record it has not
    processed (0 when caught up). Spark's source commits no group offsets, so the job's
    position is read from its checkpoint; served by the exporter, the lag keeps growing while
    the job is down."""

    def __init__(self, bootstrap: str, checkpoint: Path, timeout_s: float = 5.0):
        super().__init__(bootstrap, "energy-stream-lag", timeout_s)
        self.checkpoint = checkpoint

    def collect(self):
        behind = GaugeMetricFamily("energy_stream_partition_offsets_behind",
                                   "Records in the partition the stream job has not processed.",
                                   labels=["topic", "partition"])
        lag = GaugeMetricFamily("energy_stream_lag_seconds", "Age of the oldest record the stream job has "
                                "not processed (0 when caught up).", labels=["topic", "partition"])
        with self._lock:
            try:
                processed = committed_offsets(self.checkpoint)
                ends = kafka_io.end_offsets(self._consumer, {t for t, _ in processed}, self.timeout_s)
                for (topic, partition), offset in sorted(processed.items()):
                    waiting = max(0, ends.get(topic, {}).get(partition, offset) - offset)
                    stamp = (kafka_io.record_time_ms(self._consumer, topic, partition, offset, self.timeout_s)
                             if waiting else None)
                    behind.add_metric([topic, str(partition)], waiting)
                    lag.add_metric([topic, str(partition)], 0.0 if stamp is None else max(0.0, time.time() - stamp / 1000))
            except Exception as exc:  # a scrape must answer; the series go missing and the log says why
                log.warning("cannot compute the stream job's lag: %s", exc)
                return
        yield from (behind, lag)


class KafkaLagCollector(_KafkaCollector):
    """Consumer-group lag, computed from the broker at scrape time.

    Only groups that commit offsets appear (Spark's Kafka source commits none; its lag is
    `energy_stream_offsets_behind_latest`). Lag in seconds is the age of the oldest record the
    group has not consumed yet.
    """

    def __init__(self, bootstrap: str, topics: dict[str, str], timeout_s: float = 5.0):
        """topics: topic name -> its role in the pipeline (readings, alerts, dlq), so rules and
        dashboards can select a topic by role whatever it is named."""
        from confluent_kafka.admin import AdminClient

        super().__init__(bootstrap, "energy-lag-exporter", timeout_s)
        self.topics = dict(topics)
        self._admin = AdminClient(kafka_io.client_config(bootstrap))

    def collect(self):
        up = GaugeMetricFamily("energy_kafka_up", "1 if the exporter could read the broker's metadata.")
        ends = GaugeMetricFamily("energy_topic_end_offset", "Records ever written to the topic (sum of end offsets).",
                                 labels=["topic", "role"])
        lag = GaugeMetricFamily("energy_consumer_group_lag", "Records not yet consumed by the group.",
                                labels=["group", "topic"])
        lag_s = GaugeMetricFamily("energy_consumer_group_lag_seconds",
                                  "Age of the oldest record the group has not consumed.", labels=["group", "topic"])
        partition_lag = GaugeMetricFamily("energy_consumer_group_partition_lag",
                                          "Records of the partition not yet consumed by the group.",
                                          labels=["group", "topic", "partition"])
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
                for partition, waiting in sorted(behind.items()):
                    partition_lag.add_metric([group, topic, str(partition)], waiting)
        yield from (up, ends, lag, lag_s, partition_lag)

    def _committed(self) -> dict[tuple[str, str], dict[int, int]]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        # ListGroups asks every broker; one that is down never answers, so its part of the
        # request times out early and the groups the live brokers coordinate are still listed.
        groups = self._admin.list_consumer_groups(request_timeout=self.timeout_s / 2).result(self.timeout_s)
        if groups.errors:
            log.debug("some brokers did not list their consumer groups: %s", groups.errors)
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
        stamps = [kafka_io.record_time_ms(self._consumer, topic, partition, offset, self.timeout_s)
                  for partition, offset in committed.items() if behind[partition]]
        stamps = [s for s in stamps if s is not None]
        return max(0.0, time.time() - min(stamps) / 1000.0) if stamps else 0.0


class KafkaBrokerCollector(Collector):
    """Each broker's health from the cluster's metadata, at scrape time: up (listed by the
    cluster, so registered and not fenced), the partitions it leads with fewer in-sync replicas
    than replicas (Kafka's own UnderReplicatedPartitions), and partitions without a leader.

    A broker is named by its advertised address. The bootstrap list's addresses are reported
    from the start, so one that is down when the exporter starts still shows as 0; but once the
    cluster lists at least as many brokers as that list has addresses, those it does not list
    are other names for them (a load balancer, `localhost` for 127.0.0.1) and are dropped, so
    they never read as a broker that is down. Brokers are remembered once seen.
    """

    MAX_BROKERS = 256

    def __init__(self, bootstrap: str, timeout_s: float = 5.0):
        from confluent_kafka.admin import AdminClient

        self.timeout_s = timeout_s
        self._known = [a.strip() for a in bootstrap.split(",") if a.strip()]
        self._unconfirmed = set(self._known)  # bootstrap addresses the cluster has not listed yet
        self._bootstrap_count = len(self._known)
        self._admin = AdminClient(kafka_io.client_config(bootstrap))
        self._lock = threading.Lock()

    def describe(self):
        return []

    def collect(self):
        up = GaugeMetricFamily("energy_kafka_broker_up", "1 if the cluster lists the broker (registered, "
                               "not fenced).", labels=["broker"])
        under = GaugeMetricFamily("energy_kafka_broker_under_replicated_partitions", "Partitions the "
                                  "broker leads that have fewer in-sync replicas than replicas.", labels=["broker"])
        offline = GaugeMetricFamily("energy_kafka_offline_partitions", "Partitions without a leader "
                                    "(no broker can serve them).")
        with self._lock:
            try:
                metadata = self._admin.list_topics(timeout=self.timeout_s)
            except Exception as exc:  # a scrape must answer: every broker is reported down
                log.warning("cannot read the Kafka cluster's metadata: %s", exc)
                metadata = None
            live = {} if metadata is None else {b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()}
            self._learn(set(live.values()))
            led = {address: 0 for address in self._known}
            leaderless = 0
            for topic in ([] if metadata is None else metadata.topics.values()):
                for partition in topic.partitions.values():
                    if partition.leader < 0:
                        leaderless += 1
                    elif len(partition.isrs) < len(partition.replicas) and partition.leader in live:
                        led[live[partition.leader]] = led.get(live[partition.leader], 0) + 1
        for address in self._known:
            up.add_metric([address], 1 if address in live.values() else 0)
            under.add_metric([address], led.get(address, 0))
        if metadata is not None:
            offline.add_metric([], leaderless)
            yield offline
        yield from (up, under)

    def _learn(self, listed: set[str]) -> None:
        self._unconfirmed -= listed
        if self._unconfirmed and len(listed) >= self._bootstrap_count:
            self._known = [a for a in self._known if a not in self._unconfirmed]
            self._unconfirmed = set()
        for address in sorted(listed - set(self._known)):
            if len(self._known) < self.MAX_BROKERS:
                self._known.append(address)


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
