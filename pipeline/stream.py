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

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from .config import PROJECT_ROOT, Rule, Settings
from .panes import PaneState, advance
from .validate import KWH_UNITS, parse_readings

log = logging.getLogger(__name__)

# pyspark's Arrow serializer concatenates the frames this job returns, whose alert-only and
# dead-letter-only columns are all null by design; pandas 2.2 warns about that on every batch.
warnings.filterwarnings("ignore", category=FutureWarning,
                        message="The behavior of DataFrame concatenation with empty or all-NA entries")

SPARK_JARS_DIR = PROJECT_ROOT / ".cache" / "jars" / "spark"
SPARK_LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
# One row per alert (window_start, kwh_units), dead letter (value, reason) or bucket's late count (n).
OUTPUT_SCHEMA = ("kind string, key string, value string, reason string, n long, "
                 "window_start long, kwh_units long")
STATE_SCHEMA = "panes binary, alerted binary"


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
        alerts, n_alerts, n_invalid = result.alerts, len(result.alerts), len(invalid)
        no_value = [None] * n_invalid + [None]
        yield pd.DataFrame({
            "kind": ["alert"] * n_alerts + ["dlq"] * n_invalid + ["late"],
            "key": alerts.household_id.tolist() + no_value,
            "value": [None] * n_alerts + invalid.dead_letter.tolist() + [None],
            "reason": [None] * n_alerts + invalid.reason.tolist() + [None],
            "n": [1] * (n_alerts + n_invalid) + [result.late_readings],
            "window_start": (alerts.start_pane * rule.slide_s).tolist() + no_value,
            "kwh_units": alerts.units.tolist() + no_value,
        })

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


def alert_json(rule: Rule):
    """The alert document, built natively from the state function's alert rows.

    alert_id = first 32 hex digits of sha256("household|rule key|window start epoch"): the same
    on every re-delivery of the window's alert."""
    from pyspark.sql import functions as F

    def stamp(seconds):
        return F.date_format(F.timestamp_seconds(seconds), "yyyy-MM-dd'T'HH:mm:ss'Z'")

    start = F.col("window_start")
    return F.to_json(F.struct(
        F.substring(F.sha2(F.concat_ws("|", F.col("key"), F.lit(rule.key), start.cast("string")), 256),
                    1, 32).alias("alert_id"),
        F.col("key").alias("household_id"),
        stamp(start).alias("window_start"),
        stamp(start + rule.window_s).alias("window_end"),
        (F.col("kwh_units") / F.lit(KWH_UNITS)).alias("kwh"),
        F.lit(rule.threshold_kwh).alias("threshold_kwh"),
        F.lit(rule.description).alias("rule"),
        F.lit(rule.mode).alias("mode"),
        stamp(F.unix_timestamp(F.current_timestamp())).alias("detected_at"),
    ))


def make_sink(settings: Settings, on_batch: Callable[[BatchCounts], None]):
    from pyspark.sql import functions as F

    alert = alert_json(settings.rule)

    def sink(df, batch_id: int) -> None:
        df.persist()
        try:
            summary = df.groupBy("kind", "reason").agg(F.sum("n").alias("n")).collect()
            is_alert = F.col("kind") == "alert"
            outgoing = df.filter(F.col("kind").isin("alert", "dlq")).select(
                F.when(is_alert, F.lit(settings.alerts_topic)).otherwise(F.lit(settings.dlq_topic)).alias("topic"),
                "key", F.when(is_alert, alert).otherwise(F.col("value")).alias("value"))
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
