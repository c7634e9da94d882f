"""Drains: a backlog already in Kafka, processed from a fresh checkpoint in one batch.

Each query and mode drains in a Spark session (driver JVM) of its own: this file run with
`--drain-session`, settings from its environment. Our job drains with the baseline rule on (the
default) and off, so its cost is visible beside the original query's. Also the household sweep
(prod drains at growing household counts) and the real producer path's throughput.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from original import original_stream  # noqa: E402
from report import peak_rss_mib  # noqa: E402

from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.driver import spark_session, start_query, trigger  # noqa: E402
from pipeline.kafka_io import ReadingProducer, ensure_topics, topic_end_offsets  # noqa: E402
from pipeline.simulator import Simulator  # noqa: E402

START = 1_783_000_800
# Drains of the whole backlog in each query's own session per mode (see drain): (warm-up,
# measured). --quick runs one of each: it only checks that the bench completes.
DRAINS = (3, 2)
QUICK_DRAINS = (1, 1)
# What drain() runs in each mode: (name in the results, query, BASELINE).
DRAINED = (("ours", "ours", "on"), ("ours_baseline_off", "ours", "off"), ("original", "original", "on"))


def fill(settings: Settings, households: int, ticks: int, start: int = START) -> int:
    ensure_topics(settings.bootstrap_servers, {settings.readings_topic: settings.readings_partitions})
    producer = ReadingProducer(settings.bootstrap_servers, settings.readings_topic)
    for household, line in Simulator(households, 15, 10.0, 1, start).lines(ticks):
        producer.send(household, line)
    assert producer.flush(120) == 0 and producer.stats.failed == 0
    return producer.stats.acknowledged


def simulator_throughput(settings: Settings, readings: int) -> int:
    """The real producer path: `energy-monitor produce --no-pacing` (simulator, format, send)."""
    from pipeline.producer import simulate

    run = dataclasses.replace(settings, readings_topic=f"sim_{uuid.uuid4().hex[:8]}")
    ensure_topics(run.bootstrap_servers, {run.readings_topic: run.readings_partitions})
    producer = ReadingProducer(run.bootstrap_servers, run.readings_topic)
    started = time.perf_counter()
    summary = simulate(producer, Simulator(1000, 15, 10.0, 1, START), 0, count=readings)
    elapsed = time.perf_counter() - started
    assert summary.acknowledged == readings, summary
    return round(readings / elapsed)


def start(spark, settings: Settings, which: str, once: bool, on_batch=lambda _counts: None):
    checkpoint = Path(settings.checkpoint_root) / f"{which}-{uuid.uuid4().hex[:6]}"
    if which == "ours":
        return start_query(spark, settings, once, on_batch=on_batch, checkpoint=checkpoint)
    writer = (original_stream(spark, settings).writeStream.format("kafka").outputMode("append")
              .option("kafka.bootstrap.servers", settings.bootstrap_servers)
              .option("topic", settings.alerts_topic)
              .option("checkpointLocation", str(checkpoint)))
    return trigger(writer, settings, once).start()


def release_state(spark) -> None:
    """Let Spark unload the finished query's state stores (its maintenance runs every 2 s in the
    bench's sessions) and collect them, so the next query does not pay for the last one's state:
    the original's reached 500 MiB in a 1 GiB heap, and the run after it was up to 40% slower."""
    time.sleep(5)
    spark.sparkContext._jvm.System.gc()


def drain_once(spark, settings: Settings, which: str, readings: int) -> dict:
    """One query drains the backlog from a fresh checkpoint, in one batch."""
    run = dataclasses.replace(settings, alerts_topic=f"alerts_{uuid.uuid4().hex[:8]}")
    ensure_topics(run.bootstrap_servers, {run.alerts_topic: 1, run.dlq_topic: 1})
    started = time.perf_counter()
    query = start(spark, run, which, once=True)
    query.awaitTermination()
    elapsed = time.perf_counter() - started
    state = (query.lastProgress or {}).get("stateOperators") or [{}]
    release_state(spark)
    return {"readings_per_s": round(readings / elapsed), "seconds": round(elapsed, 1),
            "alerts": sum(topic_end_offsets(run.bootstrap_servers, run.alerts_topic).values()),
            "state_memory_mib": round(sum(o.get("memoryUsedBytes", 0) for o in state) / 2**20, 1)}


def drain(settings: Settings, readings: int, drains: tuple[int, int] = DRAINS) -> tuple[dict, dict]:
    """Each query drains the backlog in each mode in a Spark session of its own: a fresh driver
    JVM (`--drain-session`), as one job of one mode is deployed. In it, `drains` = (warm-up,
    measured) drains of the whole backlog; a rate is the measured ones' mean. Returns the
    rates by mode and query, and each session's peak RSS.

    A session of its own per query and mode keeps either from running on a heap and JIT the
    other shaped; the warm-up drains let the JIT finish compiling before the measured ones
    (docs/performance.md)."""
    out: dict = {}
    memory: dict = {}
    for mode in ("demo", "prod"):
        out[mode] = {}
        for name, which, baseline in DRAINED:
            run = dataclasses.replace(settings, baseline=baseline)
            session = drain_in_own_session(run, which, mode, readings, drains)
            runs = session["runs"]
            out[mode][name] = {**runs[-1], "readings_per_s": round(sum(r["readings_per_s"] for r in runs) / len(runs)),
                               "runs_readings_per_s": [r["readings_per_s"] for r in runs]}
            memory[f"{name}_{mode}"] = session["memory"]
    return out, memory


def drain_in_own_session(settings: Settings, which: str, mode: str, readings: int, drains: tuple[int, int]) -> dict:
    """`--drain-session` in a child process, which reads the settings from its environment: its
    measured drains in order (`runs`), and the peak RSS of its processes (`memory`)."""
    result_file = Path(settings.checkpoint_root) / f"drains-{which}-{mode}-{settings.baseline}.json"
    env = {**os.environ, **dataclasses.replace(settings, run_mode=mode).to_env()}
    subprocess.run([sys.executable, __file__, "--drain-session", which, "--readings", str(readings),
                    "--result-file", str(result_file), "--drains", f"{drains[0]},{drains[1]}"], env=env, check=True)
    return json.loads(result_file.read_text())


def drain_session(which: str, readings: int, result_file: Path, drains: tuple[int, int]) -> None:
    """The child side of drain_in_own_session: warm-up drains, then the measured ones, each
    printed as it ends; the measured results and the session's peak RSS go to result_file as
    JSON."""
    settings = load_settings(os.environ)
    spark = spark_session(settings, app_name=f"energy-monitor-bench-{which}-{settings.run_mode}")
    spark.conf.set("spark.sql.streaming.stateStore.maintenanceInterval", "2s")
    results = []
    for run in range(sum(drains)):
        result = drain_once(spark, settings, which, readings)
        measured = run >= drains[0]
        if measured:
            results.append(result)
        label = f"{which} BASELINE={settings.baseline}" if which == "ours" else which
        print(f"  drain {settings.run_mode:<4} {label:<16} {result['readings_per_s']:>10,} readings/s  "
              f"({result['seconds']} s){'' if measured else '  warm-up'}", flush=True)
    memory = peak_rss_mib()
    spark.stop()
    result_file.write_text(json.dumps({"runs": results, "memory": memory}))


def household_sweep(spark, settings: Settings, sizes: list[int], ticks: int) -> dict:
    """Prod-mode drain of `ticks` readings per household at each household count (our job):
    readings/s and the state it holds afterwards."""
    out = {}
    for households in sizes:
        run = dataclasses.replace(settings, run_mode="prod", readings_topic=f"sweep_{uuid.uuid4().hex[:8]}")
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
    parser.add_argument("--result-file", type=Path, required=True)
    parser.add_argument("--drains", type=lambda v: tuple(int(x) for x in v.split(",")), default=DRAINS,
                        help="warm-up,measured")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    drain_session(args.drain_session, args.readings, args.result_file, args.drains)


if __name__ == "__main__":
    main()
