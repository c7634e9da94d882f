"""Live runs: the simulator publishes in real time (or `--speedup` times faster) while a query runs.

- `live_prod_batches`: our job in prod mode at 100,000 households, one reading each every 15 s,
  on top of a state built from a backlog; reports the batches' durations.
- `latency`: reading→alert latency in demo mode of our job, of our job with the archiver
  writing the history beside it, and of the original. An alert's latency is its record's Kafka
  timestamp minus that of the reading that pushed its window over the threshold (both stamped by
  their producers on this host). The job's own latency histogram is checked against it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from bench.drains import start
from prometheus_client import CollectorRegistry

from pipeline.core.clock import parse_utc
from pipeline.core.settings import MAX_BATCH_READINGS, Settings, with_values
from pipeline.core.kafka import ReadingProducer, ensure_topics, read_topic
from pipeline.core.metrics import StreamMetrics
from pipeline.ingest.simulator import Simulator

LIVE_RUNS = 3  # consecutive live demo runs of ours (see latency)


def percentiles(durations: list[int]) -> dict:
    durations = sorted(durations)
    pick = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] if durations else None
    return {"batches": len(durations), "batch_ms_p50": pick(0.5), "batch_ms_p95": pick(0.95),
            "batch_ms_max": durations[-1] if durations else None}


def live_prod_batches(spark, settings: Settings, households: int, backlog_ticks: int, seconds: float,
                      warm_up_s: float = 30.0) -> dict:
    """Our job in prod mode on `households` households in real time (SPEEDUP 1, one reading per
    household every 15 s, each tick's readings spread over its 15 s), on top of a state built
    from `backlog_ticks` ticks of history that end now. Reports the live batches' durations:
    all of them, and those that started `warm_up_s` after the live load did (`steady`). The
    first live batches after the backlog's took 1.1-1.6 s where later ones took 0.7-0.9 s, and
    they kept getting faster for about 20 batches, as the drains do on a cold JVM."""
    run = with_values(settings, run_mode="prod", readings_topic=f"liveprod_{uuid.uuid4().hex[:8]}",
                              alerts_topic=f"alerts_{uuid.uuid4().hex[:8]}", trigger_interval="1 second")
    ensure_topics(run.kafka.bootstrap_servers, {run.kafka.readings_topic: run.kafka.readings_partitions, run.kafka.alerts_topic: 1,
                                          run.kafka.dlq_topic: 1})
    now = int(time.time()) // 15 * 15
    producer = ReadingProducer(run.kafka.bootstrap_servers, run.kafka.readings_topic)
    for household, line in Simulator(households, 15, 10.0, 5, now - backlog_ticks * 15).lines(backlog_ticks):
        producer.send(household, line)
    producer.flush(300)
    query = start(spark, run, "ours", once=False)
    backlog = households * backlog_ticks
    while sum(p["numInputRows"] for p in query.recentProgress) < backlog:
        if query.exception():
            raise RuntimeError(f"the query failed on the backlog: {query.exception()}")
        time.sleep(0.5)  # the backlog's batches (MAX_OFFSETS_PER_TRIGGER each), which build the state
    read = [p for p in query.recentProgress if p["numInputRows"] > 0]
    backlog_batch_ms, last_backlog_batch = max(p["durationMs"]["triggerExecution"] for p in read), read[-1]["batchId"]
    sim = Simulator(households, 15, 10.0, 6, now)
    steady_from_ms = (time.time() + warm_up_s) * 1000
    stop, next_slice = time.monotonic() + seconds, time.monotonic()
    while time.monotonic() < stop:
        lines = sim.tick_lines()[1]
        for part in range(15):  # one fifteenth of the households each second
            for household, line in lines[part::15]:
                producer.send(household, line)
            next_slice += 1.0
            producer.wait(max(0.0, next_slice - time.monotonic()))
    producer.flush(60)
    time.sleep(5)
    # Not the backlog's batches, nor the first live one, which read what came during the last of them.
    progress = [p for p in query.recentProgress if p["numInputRows"] > 0 and p["batchId"] > last_backlog_batch + 1]
    state = (progress[-1].get("stateOperators") or [{}]) if progress else [{}]
    query.stop()
    steady = [p for p in progress if progress_ms(p) >= steady_from_ms]
    baseline = "on" if settings.baseline else "off"
    out = {"households": households, "baseline": baseline, "readings_per_s": round(households / 15),
           "trigger_ms": 1000,
           "backlog_readings": backlog, "backlog_batch_ms_max": backlog_batch_ms,
           **percentiles([p["durationMs"]["triggerExecution"] for p in progress]),
           "steady": {"after_s": warm_up_s, **percentiles([p["durationMs"]["triggerExecution"] for p in steady])},
           "readings_per_batch_p50": sorted(p["numInputRows"] for p in progress)[len(progress) // 2] if progress else None,
           "state_memory_mib": round(sum(o.get("memoryUsedBytes", 0) for o in state) / 2**20, 1)}
    print(f"  live prod {households:,} households, BASELINE={baseline}: {out['batches']} batches, duration p50 {out['batch_ms_p50']} ms, "
          f"p95 {out['batch_ms_p95']} ms, max {out['batch_ms_max']} ms (trigger 1000 ms); after the first "
          f"{warm_up_s:.0f} s: {out['steady']['batches']} batches, p50 {out['steady']['batch_ms_p50']} ms, "
          f"p95 {out['steady']['batch_ms_p95']} ms, max {out['steady']['batch_ms_max']} ms; state "
          f"{out['state_memory_mib']} MiB", flush=True)
    return out


def progress_ms(progress: dict) -> float:
    """A query progress report's trigger start, epoch ms."""
    return datetime.strptime(progress["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000


def window_starts(stamp: str, window_s: int, slide_s: int) -> range:
    """Starts of the epoch-aligned windows [s, s + window) that contain the reading."""
    t = parse_utc(stamp)
    last = t - t % slide_s
    return range(last - window_s + slide_s, last + 1, slide_s)


def crossing_times(settings: Settings, threshold: float, window_s: int, slide_s: int) -> dict:
    """(household, window_start) -> Kafka timestamp (s) of the reading that pushed it over."""
    per_household = defaultdict(list)
    for msg in read_topic(settings.kafka.bootstrap_servers, settings.kafka.readings_topic, stop_at_end=True, idle_timeout_s=10):
        stamp, household, kwh = msg.value().decode().split(",")
        per_household[household].append((msg.timestamp()[1] / 1000, stamp, Decimal(kwh)))
    crossed = {}
    for household, rows in per_household.items():
        sums = defaultdict(Decimal)
        for produced_at, stamp, kwh in rows:  # partition order = produce order
            for start_s in window_starts(stamp, window_s, slide_s):
                before = sums[start_s]
                sums[start_s] = before + kwh
                if before <= Decimal(str(threshold)) < sums[start_s]:
                    crossed[(household, start_s)] = produced_at
    return crossed


def histogram_p99(metrics: StreamMetrics) -> float | None:
    """p99 of energy_alert_latency_seconds as Prometheus' histogram_quantile computes it:
    linear interpolation inside the bucket that holds the 99th percentile."""
    buckets = [(float(s.labels["le"]), s.value) for s in next(iter(metrics.alert_latency.collect())).samples
               if s.name.endswith("_bucket")]
    total = buckets[-1][1]
    if not total:
        return None
    rank, lower, below = 0.99 * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def histogram_check(metrics: StreamMetrics, measured: float | None) -> dict:
    """The job's own histogram p99 next to the p99 measured from Kafka timestamps, and whether
    they fall in the same or neighbouring buckets."""
    from pipeline.core.metrics import ALERT_LATENCY_BUCKETS

    from_histogram = histogram_p99(metrics)
    if from_histogram is None or measured is None:
        return {"histogram": from_histogram, "measured": measured, "buckets_apart": None}
    bucket = lambda value: next((i for i, b in enumerate(ALERT_LATENCY_BUCKETS) if value <= b), len(ALERT_LATENCY_BUCKETS))
    apart = abs(bucket(from_histogram) - bucket(measured))
    print(f"  latency histogram p99 {from_histogram:.2f} s vs measured p99 {measured:.2f} s: "
          f"{apart} bucket(s) apart", flush=True)
    return {"histogram": round(from_histogram, 3), "measured": measured, "buckets_apart": apart}


def start_archiver(settings: Settings, folder: Path) -> subprocess.Popen:
    """`energy-monitor archive` on the run's topics, into a history of its own."""
    env = {**os.environ, **settings.to_env(), "HISTORY_ROOT": str(folder / "history"), "HISTORY_METRICS_PORT": "0"}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "archive"], env=env,
                            stdout=(folder / "archiver.log").open("ab"), stderr=subprocess.STDOUT)


def live_run(spark, settings: Settings, which: str, households: int, seconds: float,
             folder: Path) -> tuple[list[float], StreamMetrics]:
    """One live run of `which` (ours, ours+history, original): its sorted reading->alert delays."""
    run = with_values(settings, run_mode="demo", readings_topic=f"live_{uuid.uuid4().hex[:8]}",
                              alerts_topic=f"alerts_{uuid.uuid4().hex[:8]}")
    ensure_topics(run.kafka.bootstrap_servers, {run.kafka.readings_topic: run.kafka.readings_partitions,
                                          run.kafka.alerts_topic: 1, run.kafka.dlq_topic: 1})
    metrics = StreamMetrics(CollectorRegistry(), "demo", run.job.trigger_interval, run.job.alert_latency_slo_seconds)
    query = start(spark, run, which.removesuffix("+history"), once=False, on_batch=metrics.observe_batch)
    archiver = start_archiver(run, folder) if which.endswith("+history") else None
    time.sleep(5)
    producer = ReadingProducer(run.kafka.bootstrap_servers, run.kafka.readings_topic)
    sim = Simulator(households, 15, 10.0, 3, int(time.time()))
    stop = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < stop:
        for household, line in sim.tick_lines()[1]:
            producer.send(household, line)
        next_tick += 15 / settings.simulator.speedup
        time.sleep(max(0.0, next_tick - time.monotonic()))
    producer.flush(60)
    time.sleep(10)  # let the last batches finish
    query.stop()
    if archiver is not None:
        archiver.terminate()
        archiver.wait(60)
    rule = run.rule
    crossed = crossing_times(run, rule.threshold, rule.window_s, rule.slide_s)
    delays = []
    for msg in read_topic(run.kafka.bootstrap_servers, run.kafka.alerts_topic, stop_at_end=True, idle_timeout_s=5):
        alert = json.loads(msg.value())
        key = (alert["household_id"], parse_utc(alert["window_start"]))
        if key in crossed:
            delays.append(msg.timestamp()[1] / 1000 - crossed[key])
    return sorted(delays), metrics


def latency(spark, settings: Settings, households: int, seconds: float, folder: Path, runs: int = LIVE_RUNS) -> dict:
    """Live load at households readings per tick; p50/p95/p99 of reading->alert latency of our
    job (`runs` consecutive runs, the first also under "ours"), of our job with the archiver
    writing the history beside it, and of the original. A
    warm-up run of ours comes first and is discarded: the first live run after the drain is
    slower, which would favour whichever variant runs second."""
    live_run(spark, settings, "ours", households, min(30.0, seconds), folder)
    out = {"ours_runs": []}
    for which in ("ours",) * runs + ("ours+history", "original"):
        delays, metrics = live_run(spark, settings, which, households, seconds, folder)
        pick = (lambda q: round(delays[min(len(delays) - 1, int(q * len(delays)))], 3)) if delays else (lambda q: None)
        if which == "ours" and "ours" not in out:
            out["histogram_p99"] = histogram_check(metrics, pick(0.99))
        result = {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "alerts": len(delays),
                  "readings_per_s": round(households * settings.simulator.speedup / 15)}
        if which == "ours":
            out["ours_runs"].append(result)
        out.setdefault(which, result)
        print(f"  latency demo {which:<12} p50 {result['p50']} s  p95 {result['p95']} s  "
              f"p99 {result['p99']} s  ({len(delays)} alerts)", flush=True)
    out["history_p99_over_without"] = (round(out["ours+history"]["p99"] / out["ours"]["p99"], 2)
                                       if out["ours"]["p99"] and out["ours+history"]["p99"] else None)
    return out


def main() -> None:
    """Live prod alone, BASELINE=on then off, after a first live run that warms the JVM."""
    import argparse
    import logging
    import tempfile

    from pipeline.ops import broker
    from pipeline.job.session import spark_session

    parser = argparse.ArgumentParser(description="live prod batch durations, BASELINE=on and off, in one session")
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--backlog-ticks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--warm-up", type=float, default=30.0)
    parser.add_argument("--state-operator", choices=("python", "jvm"), default="jvm")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            settings = with_values(None, bootstrap_servers=bootstrap, dlq_topic=f"dlq_{uuid.uuid4().hex[:8]}",
                                checkpoint_root=str(Path(folder) / "chk"), history_root=str(Path(folder) / "history"),
                                stream_metrics_port=0, starting_offsets="earliest", max_offsets_per_trigger=MAX_BATCH_READINGS,
                                state_operator=args.state_operator)
            spark = spark_session(settings.job, app_name="energy-monitor-bench-live-prod")
            spark.conf.set("spark.sql.streaming.stateStore.maintenanceInterval", "2s")
            for baseline in ("on", "on", "off"):
                live_prod_batches(spark, with_values(settings, baseline=baseline), args.households,
                                  args.backlog_ticks, args.seconds, args.warm_up)
            spark.stop()
        finally:
            broker.stop(process)


if __name__ == "__main__":
    main()
