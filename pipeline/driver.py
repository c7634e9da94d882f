"""The stream job's driver: the Spark session, the query's start and end, and its bookkeeping
(progress metrics, per-batch counts, the run's totals). The dataflow itself is stream.py.

`run(settings, once)` is what `energy-monitor stream` does; the benchmark and the tests start
the same query through `start_query`.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry

from .clock import utc_stamp
from .config import MODES, PROJECT_ROOT, Settings
from .kafka_io import ensure_topics
from .metrics import StreamMetrics, serve
from .processes import stop_flag_on_signals
from .seeding import baseline_seed
from .stream import SINK_OPTIONS, BatchCounts, build_stream, outgoing, recent_since_ms
from .contract import REASONS

log = logging.getLogger(__name__)

SPARK_JARS_DIR = PROJECT_ROOT / ".cache" / "jars" / "spark"
SPARK_LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


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

    def add(self, counts: BatchCounts) -> None:
        self.batches += 1
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
    """`energy-monitor stream`: run the query until it ends (`once`) or is interrupted."""
    ensure_topics(settings.bootstrap_servers, settings.topics, **settings.topic_replication)
    spark = spark_session(settings)
    totals = RunTotals()
    metrics = None
    if settings.stream_metrics_port:
        registry = CollectorRegistry()
        metrics = StreamMetrics(registry, settings.rule.mode, settings.trigger_s,
                                settings.alert_latency_slo_seconds, tuple(MODES), REASONS)
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

    try:
        started = time.monotonic()
        query = start_query(spark, settings, once, on_batch, on_progress=on_progress, on_idle=on_idle)
        _wait_or_stop(query)
        totals.seconds = time.monotonic() - started
        failure = query.exception()
    finally:
        spark.stop()  # drains the listener bus while this process can still answer its callbacks
    if failure is not None:
        log.error("stream query failed: %s", failure)
        text = str(failure).strip()
        raise StreamFailed(f"stream query failed: {text.splitlines()[0] if text else repr(failure)} "
                           "(details in the log above)")
    return totals
