"""`energy-monitor exporter`: what Prometheus scrapes that no component can report itself,
computed at scrape time by custom collectors.

- StreamLagCollector: the stream job's lag per partition, read from its checkpoint (Spark's
  source commits no group offsets), so it keeps growing while the job is down.
- KafkaLagCollector: consumer-group lag of the archiver and any other group, per topic role.
- KafkaBrokerCollector: whether each broker answers, under-replicated and offline partitions.
- DataDirCollector: free and used bytes of the folders the stack writes.
- receiver_gauge: whether Alertmanager has a receiver.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.core import kafka as kafka_io
from pipeline.core.checkpoint import checkpoint_dir, committed_offsets
from pipeline.core.settings import Settings
from pipeline.ops import stack

log = logging.getLogger(__name__)


def exporter_registry(settings: Settings) -> CollectorRegistry:
    """Every collector of the exporter, for these settings' topics, checkpoint and folders."""
    registry = CollectorRegistry()
    roles = {settings.kafka.readings_topic: "readings", settings.kafka.alerts_topic: "alerts", settings.kafka.dlq_topic: "dlq"}
    registry.register(KafkaLagCollector(settings.kafka.bootstrap_servers, roles))
    registry.register(KafkaBrokerCollector(settings.kafka.bootstrap_servers))
    var = Path(settings.stack.var_dir)
    dirs = {"kafka": str(stack.kafka_dir(settings)), "checkpoints": settings.job.checkpoint_root,
            "prometheus": str(var / "prometheus"), "logs": str(var / "log")}
    if "://" not in settings.history.history_root:  # an object store has no local filesystem to watch
        dirs["history"] = settings.history.history_root
    registry.register(DataDirCollector(dirs))
    receiver_gauge(registry, bool(settings.stack.alert_webhook_url))
    checkpoint = checkpoint_dir(settings.job)
    if isinstance(checkpoint, Path):
        registry.register(StreamLagCollector(settings.kafka.bootstrap_servers, checkpoint))
    else:  # the job's own energy_stream_offsets_behind_latest still reports its backlog
        log.warning("CHECKPOINT_ROOT is %s: per-partition stream lag needs a local or mounted folder",
                    settings.job.checkpoint_root)
    return registry


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
