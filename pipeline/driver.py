"""The stream job's driver: the Spark session, the query's start and end, and its bookkeeping
(progress metrics, per-batch counts, the run's totals). The dataflow itself is stream.py.

`run(settings, once)` is what `energy-monitor stream` does; the benchmark and the tests start
the same query through `start_query`.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry

from .clock import utc_stamp
from .config import MODES, PROJECT_ROOT, Settings, jvm_bytes
from .kafka_io import ensure_topics
from .metrics import StreamMetrics, serve
from .processes import stop_flag_on_signals
from .runs import RunRecord, cause_of, pending_batch
from .seeding import baseline_seed
from .stream import SINK_OPTIONS, BatchCounts, build_stream, outgoing, recent_since_ms
from .contract import REASONS

log = logging.getLogger(__name__)

SPARK_JARS_DIR = PROJECT_ROOT / ".cache" / "jars" / "spark"
SPARK_LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


STATE_STORE_PROVIDER_CONF = "spark.sql.streaming.stateStore.providerClass"
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


class StreamFailed(RuntimeError):
    """The query stopped with an error; the message is its first line."""


def spark_session(settings: Settings, app_name: str = "energy-monitor-stream"):
    from pyspark.sql import SparkSession

    jars = sorted(str(p) for p in SPARK_JARS_DIR.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no Kafka connector jars in {SPARK_JARS_DIR}: run `make deps` first")
    # Workers must run this interpreter (it has pandas and pyarrow), not whatever python3 is on
    # PATH, and the Spark UI binds to SPARK_LOCAL_IP: both are read from the environment only.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_bind_address)
    builder = (SparkSession.builder.appName(app_name).master(settings.spark_master)
               .config("spark.jars", ",".join(jars))
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={SPARK_LOG_CONFIG}")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", settings.shuffle_partitions)
               .config("spark.driver.memory", settings.spark_driver_memory)
               .config("spark.executor.memory", settings.spark_executor_memory)
               # The state off the heap (docs/decisions/0013-rocksdb-state-store.md).
               .config(STATE_STORE_PROVIDER_CONF, ROCKSDB_PROVIDER)
               .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
               .config("spark.sql.streaming.minBatchesToRetain", 20)
               # Without Hadoop's native library, the default (FileContext) checkpoint manager
               # ran `readlink` as a child process for every rename of a checkpoint file:
               # about 16 processes a batch (offset log, commit log, a state delta per
               # partition), which took 40-55 ms of each log write and 60 ms of each state
               # commit. The FileSystem manager renames with File.renameTo, atomic on a local
               # or POSIX file system like the FileContext one.
               .config("spark.sql.streaming.checkpointFileManagerClass",
                       "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.ui.port", settings.spark_ui_port)
               # JVM heap, GC time, active and failed tasks of the driver and each executor,
               # served at /metrics/executors/prometheus on the UI port.
               .config("spark.ui.prometheus.enabled", "true")
               .config("spark.driver.bindAddress", settings.spark_bind_address)
               .config("spark.driver.host", settings.spark_driver_host)
               .config("spark.sql.adaptive.enabled", "false")
               .config("spark.python.daemon.module", "pipeline.worker_daemon"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def state_memory_bytes(spark, settings: Settings) -> int:
    """The heap the state's tasks run in: the driver's in local mode, else every executor's."""
    if settings.spark_master.startswith("local"):
        return int(spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory())
    executors = len(spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()) - 1  # less the driver
    name, value = settings.state_memory
    return max(executors, 1) * jvm_bytes(value, name)


def log_batch(counts: BatchCounts) -> None:
    if counts.alerts or counts.late_readings or counts.invalid_by_reason or counts.duplicate_readings:
        log.info("batch %d: %d alerts, %d late readings dropped, %d duplicates, invalid %s", counts.batch_id,
                 counts.alerts, counts.late_readings, counts.duplicate_readings, counts.invalid_by_reason or "none")


@dataclass
class RunTotals:
    """Counts over every batch of one run, for the summary `stream --once` prints."""

    batches: int = 0
    alerts: int = 0
    late_readings: int = 0
    duplicate_readings: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    readings: int = 0  # records read from Kafka (query progress)
    seconds: float = 0.0  # from the query's start to its end
    bucket_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # the newest of each bucket touched

    def add(self, counts: BatchCounts) -> None:
        self.batches += 1
        self.bucket_sizes.update(counts.bucket_sizes)
        self.alerts += counts.alerts
        self.late_readings += counts.late_readings
        self.duplicate_readings += counts.duplicate_readings
        for reason, n in counts.invalid_by_reason.items():
            self.invalid_by_reason[reason] = self.invalid_by_reason.get(reason, 0) + n

    def add_progress(self, progress: dict) -> None:
        self.readings += int(progress.get("numInputRows") or 0)

    def summary(self) -> str:
        invalid = sum(self.invalid_by_reason.values())
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.invalid_by_reason.items()))
        rate = f" ({self.readings / self.seconds:,.0f}/s)" if self.seconds > 0 else ""
        return (f"batches {self.batches}, readings {self.readings} in {self.seconds:.1f} s{rate}, alerts "
                f"{self.alerts}, late readings dropped {self.late_readings}, invalid readings {invalid}"
                + (f" ({reasons})" if reasons else "") + f", duplicate readings {self.duplicate_readings}")


@dataclass(frozen=True, eq=False)  # a route is itself, whatever it holds
class _Route:
    tally: object  # the query's accumulator of batch entries
    on_batch: Callable[[BatchCounts], None]
    on_progress: Callable[[dict], None] | None
    on_idle: Callable[[], None] | None


class BatchCountsRouter:
    """The session's one StreamingQueryListener's other half: hands each query run its reports.
    A batch's counts go to its `on_batch` when Spark reports the batch's progress (after its
    write and commit), after the progress itself to `on_progress`; idle notices to `on_idle`.

    Each run of a query is routed by its run id (a restart from the same checkpoint keeps the
    query's id). A query is announced by name before it starts and bound to its run id when
    Spark reports its start, which comes before any batch's report, and a finished run's last
    reports keep going to it, never to the next query of the same name."""

    def __init__(self):
        self._lock = threading.Lock()
        self._announced: dict[str, deque] = {}
        self._routes: dict[str, _Route] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # the last 100 run ids, for wait_reported
        self._changed = threading.Condition(self._lock)

    def announce(self, name: str, tally, on_batch: Callable[[BatchCounts], None],
                 on_progress: Callable[[dict], None] | None = None,
                 on_idle: Callable[[], None] | None = None) -> _Route:
        route = _Route(tally, on_batch, on_progress, on_idle)
        with self._lock:
            self._announced.setdefault(name, deque()).append(route)
        return route

    def withdraw(self, name: str, route: _Route) -> None:
        """A query that did not start (unless Spark reported its start all the same)."""
        with self._lock:
            waiting = self._announced.get(name, deque())
            if route in waiting:
                waiting.remove(route)

    def started(self, run_id: str, name: str) -> None:
        with self._lock:
            waiting = self._announced.get(name)
            if waiting:
                self._routes[run_id] = waiting.popleft()

    def progressed(self, run_id: str, batch_id: int, progress: Callable[[], dict] = dict) -> None:
        """`progress` gives the report as a dict, read only when the run has an `on_progress`."""
        route = self._routes.get(run_id)
        if route is None:
            return
        if route.on_progress is not None:
            route.on_progress(progress())
        # Every task of the batch has added to the accumulator before its job ended, and a later
        # batch's keys stay for its own report.
        entries = {key: route.tally.value.pop(key) for key in list(route.tally.value) if key[0] <= batch_id}
        route.on_batch(BatchCounts.from_tally(batch_id, entries, time.time() * 1000))

    def idle(self, run_id: str) -> None:
        route = self._routes.get(run_id)
        if route is not None and route.on_idle is not None:
            route.on_idle()

    def terminated(self, run_id: str) -> None:
        with self._lock:
            self._routes.pop(run_id, None)
            self._finished[run_id] = None
            while len(self._finished) > 100:
                self._finished.popitem(last=False)
            self._changed.notify_all()

    def wait_reported(self, run_id: str, timeout_s: float = 60.0) -> None:
        """Until the ended run's every report has been handed over (Spark delivers them to
        listeners asynchronously)."""
        with self._lock:
            if not self._changed.wait_for(lambda: run_id in self._finished, timeout_s):
                raise TimeoutError(f"query run {run_id}: no end reported within {timeout_s:.0f} s")


def batch_counts_router(spark) -> BatchCountsRouter:
    """The session's router, and its listener registered with Spark on first use."""
    from pyspark.sql.streaming import StreamingQueryListener

    router = getattr(spark, "_batch_counts_router", None)
    if router is not None:
        return router
    router = BatchCountsRouter()

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event) -> None:
            log.info("query %s started (id %s)", event.name, event.id)
            router.started(str(event.runId), event.name)

        def onQueryProgress(self, event) -> None:
            router.progressed(str(event.progress.runId), event.progress.batchId,
                              lambda: json.loads(event.progress.json))

        def onQueryIdle(self, event) -> None:
            router.idle(str(event.runId))

        def onQueryTerminated(self, event) -> None:
            log.info("query terminated%s", f": {event.exception}" if event.exception else "")
            router.terminated(str(event.runId))

    spark.streams.addListener(Listener())
    spark._batch_counts_router = router
    return router


def start_query(spark, settings: Settings, once: bool, on_batch: Callable[[BatchCounts], None] = log_batch,
                checkpoint: Path | str | None = None, on_progress: Callable[[dict], None] | None = None,
                on_idle: Callable[[], None] | None = None):
    """Start the job's query; `checkpoint` defaults to the one of the settings' rule. `on_batch`
    gets each batch's counts once Spark reports the batch, `on_progress` the report itself
    (BatchCountsRouter)."""
    checkpoint = checkpoint or settings.checkpoint_dir()
    rule = settings.rule
    log.info("rule %r (mode %s, window %ds, slide %ds, threshold %g kWh, watermark %ds)",
             rule.description, rule.mode, rule.window_s, rule.slide_s, rule.threshold_kwh, rule.watermark_s)
    log.info("checkpoint %s (a new one starts from %s offsets, at most %d readings per batch)",
             checkpoint, settings.starting_offsets, settings.max_offsets_per_trigger)
    since_ms = seed = None
    if isinstance(checkpoint, Path):
        checkpoint.mkdir(parents=True, exist_ok=True)
        since_ms = start_bound_ms(checkpoint, settings)
        seed = baseline_seed(settings, checkpoint)
    stream, tally = build_stream(spark, settings, since_ms, seed)
    name = f"energy-alerts-{rule.mode}"
    router = batch_counts_router(spark)
    route = router.announce(name, tally, on_batch, on_progress, on_idle)
    writer = (outgoing(stream, settings).writeStream.format("kafka")
              .queryName(name)
              .option("kafka.bootstrap.servers", settings.bootstrap_servers)
              .options(**SINK_OPTIONS)
              .option("checkpointLocation", str(checkpoint)))
    try:
        return trigger(writer, settings, once).start()
    except Exception:
        router.withdraw(name, route)
        raise


# In the checkpoint directory, beside what Spark writes there.
START_BOUND_FILE = "energy-start-bound"


def start_bound_ms(checkpoint: Path, settings: Settings) -> int | None:
    """The record time before which a `recent` checkpoint reads nothing, fixed when the
    checkpoint is made (START_BOUND_FILE), so a restart filters as the first start did. None
    for a checkpoint made without one, whose offsets alone say where it is."""
    if settings.starting_offsets != "recent":
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
    since_ms = recent_since_ms(settings)
    bound_file.write_text(f"{since_ms}\n")
    log.info("a new checkpoint: records written before %s are not read", utc_stamp(since_ms // 1000))
    return since_ms


def trigger(writer, settings: Settings, once: bool):
    """`--once`: everything available now, in bounded batches; live: every TRIGGER_INTERVAL."""
    return writer.trigger(availableNow=True) if once else writer.trigger(processingTime=f"{settings.trigger_s} seconds")


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


def run(settings: Settings, once: bool) -> RunTotals:
    """`energy-monitor stream`: run the query until it ends (`once`) or is interrupted. A run that
    fails raises StreamFailed with its cause in one line; the full trace goes to the log."""
    ensure_topics(settings.bootstrap_servers, settings.topics, **settings.topic_replication)
    checkpoint = settings.checkpoint_dir()
    record = None
    if isinstance(checkpoint, Path):
        checkpoint.mkdir(parents=True, exist_ok=True)
        record = RunRecord(checkpoint)
        loop = record.begin()
        if loop is not None:
            log.error("%s", loop.line(settings.state_memory, settings.max_offsets_per_trigger))
            record.replan(loop, settings.max_offsets_per_trigger)
    spark = spark_session(settings)
    totals = RunTotals()
    try:
        failure = _run_query(spark, settings, once, totals)
        jvm_exit = None
    except Exception as exc:  # py4j's calls fail when the JVM has gone away
        log.error("the stream run failed", exc_info=True)
        failure, jvm_exit = exc, _jvm_exit_code()
    finally:
        _stop_session(spark)
    if failure is None:
        if record is not None:
            record.end(None)
        if totals.bucket_sizes:
            log.info("state: %d households, %.1f MiB stored, in the %d state buckets this run touched",
                     sum(h for h, _ in totals.bucket_sizes.values()),
                     sum(b for _, b in totals.bucket_sizes.values()) / 2**20, len(totals.bucket_sizes))
        return totals
    text = str(failure)
    cause = cause_of(text, jvm_exit)
    batch = pending_batch(checkpoint) if record is not None else None
    if record is not None:
        record.end(cause)
    log.error("stream query failed: %s", text)
    where = f" in batch {batch}" if batch is not None else ""
    raise StreamFailed(f"stream job failed{where}: {cause}{_remedy(cause, settings)} (the full trace is in the log)")


def _run_query(spark, settings: Settings, once: bool, totals: RunTotals):
    """Runs the query with its metrics until it ends; the query's exception, or None."""
    metrics = None
    if settings.stream_metrics_port:
        registry = CollectorRegistry()
        metrics = StreamMetrics(registry, settings.rule.mode, settings.trigger_s,
                                settings.alert_latency_slo_seconds, tuple(MODES), REASONS,
                                settings.max_households, state_memory_bytes(spark, settings))
        serve(registry, settings.metrics_host, settings.stream_metrics_port)

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
    query = start_query(spark, settings, once, on_batch, on_progress=on_progress, on_idle=on_idle)
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


def _remedy(cause: str, settings: Settings) -> str:
    if cause.startswith("out of memory"):
        name, value = settings.state_memory
        return (f"; raise {name} (now {value}), or lower MAX_HOUSEHOLDS (now {settings.max_households:,}) "
                f"or MAX_OFFSETS_PER_TRIGGER (now {settings.max_offsets_per_trigger:,})")
    if cause.startswith("Kafka unreachable"):
        return f"; check BOOTSTRAP_SERVERS ({settings.bootstrap_servers}) and the brokers"
    return ""
