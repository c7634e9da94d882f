"""The Spark Structured Streaming job: readings -> validated -> pane state -> alerts.

One streaming query:

    Kafka readings -> parse_readings (native expressions) -> watermark(event_time)
      -> groupBy(state bucket) -> applyInPandasWithState(panes.advance)
      -> foreachBatch: alerts and dead letters to Kafka, counters to the driver

Households are hashed into `STATE_BUCKETS` state keys, and one Python call handles a whole
bucket with numpy (see panes.py), so Python's per-group overhead is paid per bucket, not per
household. Invalid lines travel through the same operator untouched and leave as dead letters,
which keeps one checkpoint and one progress stream for everything the job does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from .config import PROJECT_ROOT, Rule, Settings
from .panes import PaneState, advance
from .validate import KWH_UNITS, parse_readings

log = logging.getLogger(__name__)

SPARK_JARS_DIR = PROJECT_ROOT / ".cache" / "jars" / "spark"
SPARK_LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
OUTPUT_SCHEMA = "kind string, key string, value string, reason string, n long"
STATE_SCHEMA = "panes binary, alerted binary"


def iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert_id(household_id: str, rule: Rule, window_start_s: int) -> str:
    text = f"{household_id}|{rule.key}|{window_start_s}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def alert_documents(alerts: pd.DataFrame, rule: Rule) -> list[tuple[str, str]]:
    """(key, JSON value) for each alert row of panes.advance."""
    detected_at = iso(int(time.time()))
    out = []
    for household, start_pane, units in zip(alerts.household_id, alerts.start_pane, alerts.units):
        start = int(start_pane) * rule.slide_s
        doc = {
            "alert_id": alert_id(household, rule, start),
            "household_id": household,
            "window_start": iso(start),
            "window_end": iso(start + rule.window_s),
            "kwh": round(int(units) / KWH_UNITS, 9),
            "threshold_kwh": rule.threshold_kwh,
            "rule": rule.description,
            "mode": rule.mode,
            "detected_at": detected_at,
        }
        out.append((household, json.dumps(doc, separators=(",", ":"))))
    return out


def make_state_function(rule: Rule) -> Callable:
    threshold_units = int(round(rule.threshold_kwh * KWH_UNITS))
    k = rule.panes_per_window

    def step(_key, batches: Iterator[pd.DataFrame], state) -> Iterator[pd.DataFrame]:
        batch = pd.concat(list(batches), ignore_index=True)
        invalid = batch[batch.reason.notna()]
        valid = batch[batch.reason.isna()]
        previous = PaneState.from_bytes(*state.get) if state.exists else PaneState.empty()
        result = advance(previous,
                         valid.household_id.to_numpy(dtype=object),
                         valid.pane.to_numpy(dtype=np.int64),
                         valid.kwh_units.to_numpy(dtype=np.int64),
                         state.getCurrentWatermarkMs(), rule.slide_s, k, threshold_units)
        if result.state.is_empty():
            if state.exists:
                state.remove()
        else:
            state.update(result.state.to_bytes())
        alerts = alert_documents(result.alerts, rule)
        rows = {
            "kind": ["alert"] * len(alerts) + ["dlq"] * len(invalid) + ["late"],
            "key": [k_ for k_, _ in alerts] + [None] * len(invalid) + [None],
            "value": [v for _, v in alerts] + invalid.dead_letter.tolist() + [None],
            "reason": [None] * len(alerts) + invalid.reason.tolist() + [None],
            "n": [1] * (len(alerts) + len(invalid)) + [result.late_readings],
        }
        yield pd.DataFrame(rows)

    return step


@dataclass
class BatchCounts:
    """What one micro-batch did, as seen by the driver."""

    batch_id: int
    alerts: int = 0
    late_readings: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)


def spark_session(settings: Settings, app_name: str = "energy-monitor-stream"):
    from pyspark.sql import SparkSession

    jars = sorted(str(p) for p in SPARK_JARS_DIR.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no Kafka connector jars in {SPARK_JARS_DIR}: run `make deps` first")
    # Workers must run this interpreter (it has pandas and pyarrow), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The Spark UI binds to SPARK_LOCAL_IP: loopback unless a cluster needs the driver reachable.
    os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_bind_address)
    builder = (SparkSession.builder.appName(app_name).master(settings.spark_master)
               .config("spark.jars", ",".join(jars))
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={SPARK_LOG_CONFIG}")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", settings.shuffle_partitions)
               .config("spark.sql.streaming.minBatchesToRetain", 20)
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.bindAddress", settings.spark_bind_address)
               .config("spark.driver.host", settings.spark_driver_host)
               .config("spark.sql.adaptive.enabled", "false"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def build_stream(spark, settings: Settings):
    """The streaming DataFrame of the job's output rows (before the sink)."""
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    rule = settings.rule
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.bootstrap_servers)
              .option("subscribe", settings.readings_topic)
              .option("startingOffsets", "earliest")
              # Records deleted by retention before we read them are gone either way; say so
              # in the log instead of stopping the job.
              .option("failOnDataLoss", "false"))
    if settings.max_offsets_per_trigger > 0:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    parsed = parse_readings(reader.load(), settings.max_reading_kwh)
    buckets = settings.state_buckets
    staged = parsed.select(
        "reason", "event_time", "household_id", "kwh_units", "dead_letter",
        F.floor(F.unix_timestamp("event_time") / rule.slide_s).alias("pane"),
        F.when(F.col("reason").isNull(), F.pmod(F.xxhash64("household_id"), F.lit(buckets)))
         .otherwise(F.pmod(F.xxhash64("dead_letter"), F.lit(buckets))).alias("bucket"),
    )
    return (staged.withWatermark("event_time", f"{rule.watermark_s} seconds")
            .groupBy("bucket")
            .applyInPandasWithState(make_state_function(rule), OUTPUT_SCHEMA, STATE_SCHEMA,
                                    "Append", GroupStateTimeout.NoTimeout))


def make_sink(settings: Settings, on_batch: Callable[[BatchCounts], None]):
    from pyspark.sql import functions as F

    def sink(df, batch_id: int) -> None:
        df.persist()
        try:
            summary = df.groupBy("kind", "reason").agg(F.sum("n").alias("n")).collect()
            outgoing = df.filter(F.col("kind").isin("alert", "dlq")).select(
                F.when(F.col("kind") == "alert", F.lit(settings.alerts_topic))
                 .otherwise(F.lit(settings.dlq_topic)).alias("topic"),
                "key", "value")
            (outgoing.write.format("kafka")
             .option("kafka.bootstrap.servers", settings.bootstrap_servers)
             .option("kafka.acks", "all")
             .save())
        finally:
            df.unpersist()
        counts = BatchCounts(batch_id)
        for row in summary:
            if row.kind == "alert":
                counts.alerts += row.n
            elif row.kind == "late":
                counts.late_readings += row.n
            elif row.kind == "dlq":
                counts.invalid_by_reason[row.reason] = row.n
        on_batch(counts)

    return sink


def log_batch(counts: BatchCounts) -> None:
    if counts.alerts or counts.late_readings or counts.invalid_by_reason:
        log.info("batch %d: %d alerts, %d late readings dropped, invalid %s", counts.batch_id,
                 counts.alerts, counts.late_readings, counts.invalid_by_reason or "none")


@dataclass
class RunTotals:
    """Counts over every batch of one run, for the summary `stream --once` prints."""

    batches: int = 0
    alerts: int = 0
    late_readings: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, counts: BatchCounts) -> None:
        log_batch(counts)
        self.batches += 1
        self.alerts += counts.alerts
        self.late_readings += counts.late_readings
        for reason, n in counts.invalid_by_reason.items():
            self.invalid_by_reason[reason] = self.invalid_by_reason.get(reason, 0) + n

    def summary(self) -> str:
        invalid = sum(self.invalid_by_reason.values())
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.invalid_by_reason.items()))
        return (f"batches {self.batches}, alerts {self.alerts}, late readings dropped "
                f"{self.late_readings}, invalid readings {invalid}" + (f" ({reasons})" if reasons else ""))


def attach_metrics(spark, metrics) -> None:
    """Feed `metrics` (a metrics.StreamMetrics) from the query's progress events."""
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressListener(StreamingQueryListener):
        def onQueryStarted(self, event) -> None:
            metrics.last_progress.set(time.time())

        def onQueryProgress(self, event) -> None:
            metrics.observe_progress(json.loads(event.progress.json))

        def onQueryIdle(self, event) -> None:
            metrics.last_progress.set(time.time())  # alive and polling, just nothing new

        def onQueryTerminated(self, event) -> None:
            log.info("query terminated%s", f": {event.exception}" if event.exception else "")

    spark.streams.addListener(ProgressListener())


def start_query(spark, settings: Settings, once: bool,
                on_batch: Callable[[BatchCounts], None] = log_batch):
    checkpoint = settings.checkpoint_dir()
    rule = settings.rule
    log.info("rule %r (mode %s, window %ds, slide %ds, threshold %g kWh, watermark %ds)",
             rule.description, rule.mode, rule.window_s, rule.slide_s, rule.threshold_kwh,
             rule.watermark_s)
    log.info("checkpoint %s", checkpoint)
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    writer = (build_stream(spark, settings).writeStream
              .queryName(f"energy-alerts-{rule.mode}")
              .foreachBatch(make_sink(settings, on_batch))
              .option("checkpointLocation", str(checkpoint)))
    writer = (writer.trigger(availableNow=True) if once
              else writer.trigger(processingTime=settings.trigger_interval))
    return writer.start()
