"""The instruments of the pipeline's components: the producer, the archiver, the stream job.

Each group takes the registry it registers in, so tests use a fresh `CollectorRegistry`.
Labels stay low-cardinality: reason, mode, kind, topic, table. Never a household. What is
computed at scrape time (lag, broker health, disk) is the exporter's (exporter.py).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pipeline.core.alert import Kind
from pipeline.core.clock import parse_utc
from pipeline.core.contract import REASONS
from pipeline.core.settings import MODES

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


@dataclass(frozen=True)
class StateShape:
    """What the stream's metrics know of its state: the bound on households, the heap that runs
    the state, and whether the state store reports its keys (Spark's numRowsTotal; the JVM
    operator's does not, and its keys are counted from the buckets' figures)."""

    max_households: int = 0
    memory_bytes: int = 0
    store_counts_keys: bool = True


class StreamMetrics:
    """Fed by the query's progress (StreamingQueryListener) and by each batch's own counts.

    Labels with a known set of values (modes, dead-letter reasons) start at 0 for each value,
    so rates and panels show 0 rather than nothing before the first event."""

    def __init__(self, registry: CollectorRegistry, mode: str, trigger_interval_s: float, slo_s: float,
                 state: StateShape = StateShape()):
        self.mode, self.slo_s = mode, slo_s
        self.store_counts_keys = state.store_counts_keys
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
        self._add_size_instruments(registry, state.max_households, state.memory_bytes)
        self._add_alert_instruments(registry, slo_s)
        for value in MODES:
            for kind in Kind:
                self.alerts.labels(mode=value, kind=kind.value)
        for reason in REASONS:
            self.invalid.labels(reason=reason)

    def _add_size_instruments(self, registry: CollectorRegistry, max_households: int, memory_bytes: int) -> None:
        self.households = Gauge("energy_stream_households", "Households in the job's state (as of the last "
                                "batch that touched their state bucket).", registry=registry)
        Gauge("energy_stream_households_limit", "The bound on households in the state (MAX_HOUSEHOLDS); "
              "readings of new households beyond it are dead letters (household_limit).",
              registry=registry).set(max_households)
        self.stored_bytes = Gauge("energy_stream_state_bytes", "Bytes of the job's stored state (as of the last "
                                  "batch that touched each state bucket).", registry=registry)
        Gauge("energy_stream_memory_bytes", "Heap of the JVMs that run the state (the driver's in local mode, "
              "the executors' on a cluster).", registry=registry).set(memory_bytes)
        self._buckets: dict = {}  # bucket -> job.counts.BucketFigures, the newest of each

    def _add_alert_instruments(self, registry: CollectorRegistry, slo_s: float) -> None:
        self.alerts = Counter("energy_alerts_total", "Alerts emitted, by mode and rule kind (threshold, baseline).",
                              ["mode", "kind"], registry=registry)
        self.baseline_warm = Gauge("energy_baseline_households_warm", "Households whose baseline is warm in "
                                   "every slot (as of the last batch that touched their state bucket).",
                                   registry=registry)
        self.baseline_warming = Gauge("energy_baseline_households_warming", "Households whose baseline is "
                                      "still warming in some slot.", registry=registry)
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
            if self.store_counts_keys:
                self.state_rows.set(operator.get("numRowsTotal", 0))
            self.state_bytes.set(operator.get("memoryUsedBytes", 0))

    def observe_batch(self, counts) -> None:
        """counts: a job.counts.BatchCounts, reported now."""
        for kind in Kind:
            self.alerts.labels(mode=self.mode, kind=kind.value).inc(counts.alerts.get(kind.value, 0))
        if counts.buckets:
            self._buckets.update(counts.buckets)
            figures = self._buckets.values()
            if not self.store_counts_keys:  # a key per household kept, and one for each bucket's numbers
                self.state_rows.set(sum(b.households + 1 for b in figures))
            self.households.set(sum(b.households for b in figures))
            self.stored_bytes.set(sum(b.stored_bytes for b in figures))
            self.baseline_warm.set(sum(b.warm for b in figures))
            self.baseline_warming.set(sum(b.warming for b in figures))
        latencies = counts.latencies_s(time.time() * 1000)
        for latency, n in latencies:
            for _ in range(n):
                self.alert_latency.observe(latency)
        self.within_slo.inc(sum(n for latency, n in latencies if latency <= self.slo_s))
        self.late_dropped.inc(counts.late_readings)
        self.duplicates.inc(counts.duplicate_readings)
        for reason, n in counts.invalid_by_reason.items():
            self.invalid.labels(reason=reason).inc(n)
