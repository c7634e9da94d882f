"""Drains: a backlog already in Kafka, processed from a fresh checkpoint in one batch.

Each query and mode drains in a Spark session (driver JVM) of its own: this file run with
`--drain-session`, settings from its environment; the three sessions of a mode take turns.
Our job drains with the baseline rule on (the default) and off, so its cost is visible beside
the original query's. Also the household sweep
(prod drains at growing household counts) and the real producer path's throughput.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path


from bench.original import original_stream
from bench.report import peak_rss_mib

from pipeline.core.settings import Settings, load_settings, with_values
from pipeline.job.driver import start_query
from pipeline.job.query import trigger
from pipeline.job.session import ROCKSDB_PROVIDER, STATE_STORE_PROVIDER_CONF, spark_session
from pipeline.core.kafka import ReadingProducer, ensure_topics, topic_end_offsets
from pipeline.ingest.simulator import Simulator

START = 1_783_000_800
# Turns of drains of the whole backlog, each query in its own session per mode (see drain):
# (warm-up, measured). --quick runs one of each: it only checks that the bench completes.
DRAINS = (2, 3)
QUICK_DRAINS = (1, 1)
# What drain() runs in each mode: (name in the results, query, BASELINE).
DRAINED = (("ours", "ours", "on"), ("ours_baseline_off", "ours", "off"), ("original", "original", "on"))


def fill(settings: Settings, households: int, ticks: int, start: int = START, interval_s: int = 15) -> int:
    ensure_topics(settings.kafka.bootstrap_servers, {settings.kafka.readings_topic: settings.kafka.readings_partitions})
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
    for household, line in Simulator(households, interval_s, 10.0, 1, start).lines(ticks):
        producer.send(household, line)
    assert producer.flush(120) == 0 and producer.stats.failed == 0
    return producer.stats.acknowledged


def simulator_throughput(settings: Settings, readings: int) -> int:
    """The real producer path: `energy-monitor produce --no-pacing` (simulator, format, send)."""
    from pipeline.ingest.producer import simulate

    run = with_values(settings, readings_topic=f"sim_{uuid.uuid4().hex[:8]}")
    ensure_topics(run.kafka.bootstrap_servers, {run.kafka.readings_topic: run.kafka.readings_partitions})
    producer = ReadingProducer(run.kafka.bootstrap_servers, run.kafka.readings_topic)
    started = time.perf_counter()
    summary = simulate(producer, Simulator(1000, 15, 10.0, 1, START), 0, count=readings)
    elapsed = time.perf_counter() - started
    assert summary.acknowledged == readings, summary
    return round(readings / elapsed)


# The original query keeps Spark's default state store, as the seed ran it; ours runs on RocksDB.
HDFS_PROVIDER = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"


def start(spark, settings: Settings, which: str, once: bool, on_batch=lambda _counts: None, on_progress=None):
    checkpoint = Path(settings.job.checkpoint_root) / f"{which}-{uuid.uuid4().hex[:6]}"
    spark.conf.set(STATE_STORE_PROVIDER_CONF, ROCKSDB_PROVIDER if which == "ours" else HDFS_PROVIDER)
    if which == "ours":
        return start_query(spark, settings.job, once, on_batch=on_batch, checkpoint=checkpoint, on_progress=on_progress)
    writer = (original_stream(spark, settings).writeStream.format("kafka").outputMode("append")
              .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
              .option("topic", settings.kafka.alerts_topic)
              .option("checkpointLocation", str(checkpoint)))
    return trigger(writer, settings.job, once).start()


def release_state(spark) -> None:
    """Let Spark unload the finished query's state stores (its maintenance runs every 2 s in the
    bench's sessions) and collect them, so the next query does not pay for the last one's state:
    the original's reached 500 MiB in a 1 GiB heap, and the run after it was up to 40% slower."""
    time.sleep(5)
    spark.sparkContext._jvm.System.gc()


def drain_once(spark, settings: Settings, which: str, readings: int) -> dict:
    """One query drains the backlog from a fresh checkpoint, in one batch."""
    run = with_values(settings, alerts_topic=f"alerts_{uuid.uuid4().hex[:8]}")
    ensure_topics(run.kafka.bootstrap_servers, {run.kafka.alerts_topic: 1, run.kafka.dlq_topic: 1})
    started = time.perf_counter()
    query = start(spark, run, which, once=True)
    query.awaitTermination()
    elapsed = time.perf_counter() - started
    state = (query.lastProgress or {}).get("stateOperators") or [{}]
    release_state(spark)
    return {"readings_per_s": round(readings / elapsed), "seconds": round(elapsed, 1),
            "alerts": sum(topic_end_offsets(run.kafka.bootstrap_servers, run.kafka.alerts_topic).values()),
            "state_memory_mib": round(sum(o.get("memoryUsedBytes", 0) for o in state) / 2**20, 1)}


def drain(settings: Settings, readings: int, drains: tuple[int, int] = DRAINS) -> tuple[dict, dict]:
    """Each query drains the backlog in each mode in a Spark session of its own: a fresh driver
    JVM (DrainSession), as one job of one mode is deployed. The three sessions of a mode are open
    together and drain in turns, one drain at a time, the order rotating each turn: `drains` =
    (warm-up, measured) turns. So a slow minute of the machine falls on all three rather than on
    whichever ran then. A rate is the mean of the measured drains; `ratio_per_turn` is the
    query's rate over the original's in each measured turn. Returns the rates by mode and query,
    and each session's peak RSS."""
    out: dict = {}
    memory: dict = {}
    for mode in ("demo", "prod"):
        sessions = {name: DrainSession(with_values(settings, baseline=baseline, run_mode=mode), which, readings)
                    for name, which, baseline in DRAINED}
        runs: dict = {name: [] for name in sessions}
        try:
            for turn in range(sum(drains)):
                names = list(sessions)
                for name in names[turn % len(names):] + names[:turn % len(names)]:
                    result = sessions[name].drain()
                    measured = turn >= drains[0]
                    if measured:
                        runs[name].append(result)
                    print(f"  drain {mode:<4} {name:<18} {result['readings_per_s']:>10,} readings/s  "
                          f"({result['seconds']} s){'' if measured else '  warm-up'}", flush=True)
        except BaseException:
            # Asking a session that failed to stop would raise again and hide the first error.
            for session in sessions.values():
                session.kill()
            raise
        for name, session in sessions.items():
            memory[f"{name}_{mode}"] = session.close()
        original = [r["readings_per_s"] for r in runs["original"]]
        out[mode] = {name: {**r[-1], "readings_per_s": round(sum(x["readings_per_s"] for x in r) / len(r)),
                            "runs_readings_per_s": [x["readings_per_s"] for x in r],
                            "ratio_per_turn": [round(x["readings_per_s"] / o, 2) for x, o in zip(r, original)]}
                     for name, r in runs.items()}
    return out, memory


class DrainSession:
    """`--drain-session` in a child process: one query's Spark session, its settings from the
    child's environment, which drains the backlog each time it is asked to."""

    def __init__(self, settings: Settings, which: str, readings: int):
        env = {**os.environ, **settings.to_env()}
        self.process = subprocess.Popen([sys.executable, "-m", "bench.drains", "--drain-session", which, "--readings", str(readings)],
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT):])
            sys.stderr.write(line)  # the JVM's own output: the session shares its stdout
        raise RuntimeError(f"drain session exited with {self.process.wait()} before answering {command!r}")

    def drain(self) -> dict:
        return self._ask("drain")

    def close(self) -> dict:
        """The session's peak RSS; it then stops."""
        try:
            return self._ask("stop")
        finally:
            self.process.stdin.close()
            self.process.wait(timeout=120)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


# How a drain session marks its answers among what its JVM prints on the same stdout.
RESULT = "drain-session-result "


def drain_session(which: str, readings: int) -> None:
    """The child side of DrainSession: a drain for each `drain` line on stdin, its result a line
    on stdout; at `stop` or the end of stdin, the peak RSS of its processes, measured then."""
    settings = load_settings(os.environ)
    spark = spark_session(settings.job, app_name=f"energy-monitor-bench-{which}-{settings.rule.run_mode}")
    spark.conf.set("spark.sql.streaming.stateStore.maintenanceInterval", "2s")
    for command in sys.stdin:
        if command.strip() != "drain":
            break
        print(RESULT + json.dumps(drain_once(spark, settings, which, readings)), flush=True)
    print(RESULT + json.dumps(peak_rss_mib()), flush=True)
    spark.stop()


def household_sweep(spark, settings: Settings, sizes: list[int], ticks: int) -> dict:
    """Prod-mode drain of `ticks` readings per household at each household count (our job):
    readings/s and the state it holds afterwards."""
    out = {}
    for households in sizes:
        run = with_values(settings, run_mode="prod", readings_topic=f"sweep_{uuid.uuid4().hex[:8]}")
        readings = fill(run, households, ticks)
        result = drain_once(spark, run, "ours", readings)
        out[str(households)] = {"readings": readings, **result}
        print(f"  sweep {households:>7,} households {readings:>10,} readings {result['readings_per_s']:>10,} readings/s  "
              f"state {result['state_memory_mib']} MiB", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="one query's drains in a Spark session of its own "
                                                 "(run by run.py; settings from the environment)")
    parser.add_argument("--drain-session", choices=("ours", "original"), required=True)
    parser.add_argument("--readings", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    drain_session(args.drain_session, args.readings)


if __name__ == "__main__":
    main()
