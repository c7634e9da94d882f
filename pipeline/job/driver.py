"""The stream job's driver: starts the query (query.py) on its checkpoint, keeps its books
(progress metrics, per-batch counts, the run's totals), ends it, and turns a failure into one line.

`run(job, once)` is what `energy-monitor stream` does; the benchmark and the tests start the same
query through `start_query`.
"""
from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry

from pipeline.core.checkpoint import checkpoint_dir, other_checkpoints, pending_batch
from pipeline.core.clock import utc_stamp
from pipeline.core.kafka import ensure_topics
from pipeline.core.metrics import StateShape, StreamMetrics, serve
from pipeline.core.settings import JobSettings
from pipeline.core.signals import stop_flag_on_signals
from pipeline.job.counts import BatchCounts, BatchTally, PythonTally, RunTotals
from pipeline.job.jvm import JvmTally, tally_accumulator
from pipeline.job.listener import batch_counts_router
from pipeline.job.query import build_query, query_name, recent_since_ms
from pipeline.job.runs import RunRecord, cause_of
from pipeline.job.seeding import baseline_seed
from pipeline.job.session import TRACK_KEYS_CONF, spark_session, state_memory_bytes, store_counts_keys
from pipeline.job.state import Rules

log = logging.getLogger(__name__)

# In the checkpoint directory, beside what Spark writes there.
START_BOUND_FILE = "energy-start-bound"


class StreamFailed(RuntimeError):
    """The run failed; the message is its cause and what to do, in one line."""


def log_batch(counts: BatchCounts) -> None:
    if counts.alert_total or counts.late_readings or counts.invalid_by_reason or counts.duplicate_readings:
        log.info("batch %d: %d alerts, %d late readings dropped, %d duplicates, invalid %s", counts.batch_id,
                 counts.alert_total, counts.late_readings, counts.duplicate_readings,
                 dict(counts.invalid_by_reason) or "none")


def start_query(spark, job: JobSettings, once: bool, on_batch: Callable[[BatchCounts], None] = log_batch,
                checkpoint: Path | str | None = None, on_progress: Callable[[dict], None] | None = None,
                on_idle: Callable[[], None] | None = None):
    """Start the job's query; `checkpoint` defaults to the settings' own. `on_batch` gets each
    batch's counts once Spark reports the batch, `on_progress` the report itself (listener.py)."""
    checkpoint = checkpoint or checkpoint_dir(job)
    rule = job.rule
    log.info("rule %r (mode %s, window %ds, slide %ds, threshold %g kWh, watermark %ds)",
             rule.description, rule.mode, rule.window_s, rule.slide_s, rule.threshold, rule.watermark_s)
    log.info("checkpoint %s (a new one starts from %s offsets, at most %d readings per batch)",
             checkpoint, job.starting_offsets, job.max_offsets_per_trigger)
    since_ms = seed = None
    if isinstance(checkpoint, Path):
        if not checkpoint.exists() and other_checkpoints(checkpoint):
            log.warning("a new checkpoint %s: the state in %s (another state layout or operator, or other "
                        "settings) is not read; the baselines are seeded from the history, and with "
                        "STARTING_OFFSETS=recent the open windows are read again from Kafka", checkpoint.name, ", ".join(other_checkpoints(checkpoint)))
        checkpoint.mkdir(parents=True, exist_ok=True)
        since_ms = start_bound_ms(checkpoint, job)
        seed = baseline_seed(job, checkpoint)
    if job.state_operator == "jvm":  # the seed is broadcast as bytes the operator reads (jvm.py)
        tally = tally_accumulator(spark)
        taker = JvmTally(tally)
    else:
        tally = spark.sparkContext.accumulator({}, BatchTally())
        taker = PythonTally(tally)
        seed = None if seed is None else spark.sparkContext.broadcast(seed)
    rules = Rules(rule, job.baseline, job.bucket_capacity, seed)
    # Read when the query starts, so a session may run either operator.
    spark.conf.set(TRACK_KEYS_CONF, str(store_counts_keys(job)).lower())
    writer = build_query(spark, job, rules, tally, checkpoint, since_ms, once)
    router = batch_counts_router(spark)
    route = router.announce(query_name(job), taker, on_batch, on_progress, on_idle)
    try:
        return writer.start()
    except Exception:
        router.withdraw(query_name(job), route)
        raise


def start_bound_ms(checkpoint: Path, job: JobSettings) -> int | None:
    """The record time before which a `recent` checkpoint reads nothing, fixed when the
    checkpoint is made (START_BOUND_FILE), so a restart filters as the first start did. None
    for a checkpoint made without one, whose offsets alone say where it is."""
    if job.starting_offsets != "recent":
        return None
    bound_file = checkpoint / START_BOUND_FILE
    try:
        return int(bound_file.read_text())
    except FileNotFoundError:
        if (checkpoint / "offsets").exists():
            return None
    except ValueError as exc:
        raise RuntimeError(f"{bound_file} is not a record time in milliseconds; delete the checkpoint "
                           f"to start over") from exc
    since_ms = recent_since_ms(job)
    bound_file.write_text(f"{since_ms}\n")
    log.info("a new checkpoint: records written before %s are not read", utc_stamp(since_ms // 1000))
    return since_ms


def _stop_between_batches(query, grace_s: float = 30.0) -> None:
    """query.stop() once the batch in flight has committed (or after grace_s): stopping mid-batch
    cancels its jobs, and the restarted job would redo the batch."""
    deadline = time.monotonic() + grace_s
    while query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.1)
    log.info("stopping the query (query.stop())")
    query.stop()
    log.info("query stopped")


def _wait_or_stop(query) -> None:
    """Wait for the query to end; SIGTERM or Ctrl-C stop it with query.stop(). The signal only
    sets a flag: raising inside a py4j call would break the gateway mid-command."""
    from pyspark.errors import StreamingQueryException

    with stop_flag_on_signals() as stop:
        try:
            while not query.awaitTermination(1):
                if stop.is_set():
                    _stop_between_batches(query)
                    break
        except StreamingQueryException:
            pass  # the caller reports it, from query.exception()


def run(job: JobSettings, once: bool) -> RunTotals:
    """`energy-monitor stream`: run the query until it ends (`once`) or is interrupted. A run that
    fails raises StreamFailed with its cause in one line; the full trace goes to the log."""
    ensure_topics(job.kafka.bootstrap_servers, job.kafka.topics, **job.kafka.topic_replication)
    record = _begin(job)
    spark = spark_session(job)
    totals = RunTotals()
    try:
        failure, jvm_exit = _run_query(spark, job, once, totals), None
    except Exception as exc:  # py4j's calls fail when the JVM has gone away
        log.error("the stream run failed", exc_info=True)
        failure, jvm_exit = exc, _jvm_exit_code()
    finally:
        _stop_session(spark)
    if failure is None:
        if record is not None:
            record.end(None)
        households, stored = totals.counts.households()
        if totals.counts.buckets:
            log.info("state: %d households, %.1f MiB stored, in the %d state buckets this run touched",
                     households, stored / 2**20, len(totals.counts.buckets))
        return totals
    cause = cause_of(str(failure), jvm_exit)
    batch = pending_batch(record.checkpoint) if record is not None else None
    if record is not None:
        record.end(cause)
    log.error("stream query failed: %s", failure)
    where = f" in batch {batch}" if batch is not None else ""
    raise StreamFailed(f"stream job failed{where}: {cause}{_remedy(cause, job)} (the full trace is in the log)")


def _begin(job: JobSettings) -> RunRecord | None:
    """The run noted in its checkpoint directory (a local one): a crash loop said, and its stuck
    batch planned again when MAX_OFFSETS_PER_TRIGGER was lowered below its size."""
    checkpoint = checkpoint_dir(job)
    if not isinstance(checkpoint, Path):
        return None
    checkpoint.mkdir(parents=True, exist_ok=True)
    record = RunRecord(checkpoint)
    loop = record.begin()
    if loop is not None:
        log.error("%s", loop.line(job.state_memory, job.max_offsets_per_trigger))
        record.replan(loop, job.max_offsets_per_trigger)
    return record


def _run_query(spark, job: JobSettings, once: bool, totals: RunTotals):
    """Runs the query with its metrics until it ends; the query's exception, or None."""
    metrics = None
    if job.stream_metrics_port:
        registry = CollectorRegistry()
        state = StateShape(job.max_households, state_memory_bytes(spark, job),
                           store_counts_keys=store_counts_keys(job))
        metrics = StreamMetrics(registry, job.rule.mode, job.trigger_interval, job.alert_latency_slo_seconds, state)
        serve(registry, job.metrics.metrics_host, job.stream_metrics_port)

    def on_batch(counts: BatchCounts) -> None:
        log_batch(counts)
        totals.add(counts)
        if metrics:
            metrics.observe_batch(counts)

    def on_progress(progress: dict) -> None:
        totals.add_progress(progress)
        if metrics:
            metrics.observe_progress(progress)

    def on_idle() -> None:
        if metrics:
            metrics.last_progress.set(time.time())  # alive, nothing new

    started = time.monotonic()
    query = start_query(spark, job, once, on_batch, on_progress=on_progress, on_idle=on_idle)
    _wait_or_stop(query)
    totals.seconds = time.monotonic() - started
    return query.exception()


def _jvm_exit_code(wait_s: float = 10.0) -> int | None:
    """The exit code of this process's Spark JVM, once it has exited (None if it runs on)."""
    from pyspark import SparkContext

    process = getattr(SparkContext._gateway, "proc", None)
    if process is None:
        return None
    try:
        return process.wait(wait_s)
    except subprocess.TimeoutExpired:
        return None


def _stop_session(spark) -> None:
    """spark.stop(), which drains the listener bus while this process can still answer its
    callbacks; a JVM already gone has nothing to stop."""
    try:
        spark.stop()
    except Exception as exc:  # py4j: the JVM is gone
        log.warning("the Spark session could not be stopped: %s", str(exc).splitlines()[0] if str(exc) else exc)


def _remedy(cause: str, job: JobSettings) -> str:
    if cause.startswith("out of memory"):
        name, value = job.state_memory
        return (f"; raise {name} (now {value}), or lower MAX_HOUSEHOLDS (now {job.max_households:,}) "
                f"or MAX_OFFSETS_PER_TRIGGER (now {job.max_offsets_per_trigger:,})")
    if cause.startswith("Kafka unreachable"):
        return f"; check BOOTSTRAP_SERVERS ({job.kafka.bootstrap_servers}) and the brokers"
    return ""
