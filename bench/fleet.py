"""A fleet: N households, one reading each every 30 minutes, prod mode, the baseline rule on.

    .venv/bin/python -m bench.fleet [--households 100000] [--live-seconds 120] [--state-buckets 64]
        [--backlog-ticks 48] [--state-operators jvm,python] [--use simulated|real]

For each N, on its own broker topic and a fresh checkpoint, in one Spark session with the
default settings (1 s trigger, MAX_OFFSETS_PER_TRIGGER): a day of backlog (48 readings a
household, ending now; `--backlog-ticks` fewer to reach a large fleet's live state sooner) is
published first, then the job starts and drains it, then the
simulator publishes in real time, each household once in 30 minutes (N / 1800 readings a
second, spread over the seconds). Reports the backlog's drain rate (readings over the time from
the first batch's start to the end of the batch that read its last reading), the live
batches' p50, p95 and max, and the state's bytes per household (its values, and RocksDB's files
on disk). Writes bench/results/fleet.json; asserts nothing.

`--use real` takes each household's half hours from a real one's instead (RealFleet): the
simulator puts 12% of its half hours above 2 kWh, where the real households of bench/data put
0.19%, and each such reading alerts all 60 of its sliding windows under the fixed rule, so the
simulated fleet's backlog is mostly alerts.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench.drains import start
from bench.live import percentiles, progress_ms

from pipeline.core.kafka import ReadingProducer, ensure_topics
from pipeline.core.settings import Settings, with_values
from pipeline.ingest.simulator import Simulator, format_reading, household_ids
from pipeline.job.counts import BatchCounts
from pipeline.job.session import spark_session
from pipeline.ops import broker

OUT = Path(__file__).resolve().parent / "results"
TICK_S = 1800
BACKLOG_TICKS = 48


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="a fleet of households reading every 30 minutes")
    parser.add_argument("--households", type=lambda v: [int(x) for x in v.split(",")], default=[100_000],
                        help="comma-separated fleet sizes, each run in turn (1,000,000 is the issue's target: about "
                             "25 minutes with a day's backlog)")
    parser.add_argument("--live-seconds", type=float, default=120.0)
    parser.add_argument("--state-buckets", type=lambda v: [int(x) for x in v.split(",")], default=[64],
                        help="comma-separated STATE_BUCKETS values, each run in turn for each fleet size")
    parser.add_argument("--state-operators", type=lambda v: v.split(","), default=["jvm"],
                        help="comma-separated STATE_OPERATOR values, each run in turn for each fleet size")
    parser.add_argument("--backlog-ticks", type=int, default=BACKLOG_TICKS,
                        help="readings a household in the backlog, one every 30 minutes (48: a day)")
    parser.add_argument("--use", choices=("simulated", "real"), default="simulated",
                        help="the simulator's half hours, or real households' (RealFleet)")
    parser.add_argument("--output", type=Path, default=OUT, help="folder for the results")
    parser.add_argument("--json", default="fleet.json", help="name of the results file")
    return parser.parse_args()


class RealFleet:
    """Households whose half hours are real ones: household i reads what the real household
    i mod n of bench/data/lcl_2013 read, from a half hour of its own in 2013 on (a missing half
    hour is a missing reading). The Simulator's tick_lines and lines."""

    def __init__(self, households: int, start: int):
        from bench.detection_data import lcl_2013

        series = [s for s in lcl_2013().values() if np.isfinite(s).mean() >= 0.95]
        self.kwh = np.stack(series)
        self.ids = household_ids(households)
        index = np.arange(households)
        self.rows = index % len(series)
        self.columns = (index * 7919) % (self.kwh.shape[1] - 10 * 48)
        self.epoch = start

    def tick_lines(self) -> tuple[int, list[tuple[str, str]]]:
        epoch, values = self.epoch, self.kwh[self.rows, self.columns]
        self.epoch, self.columns = self.epoch + TICK_S, self.columns + 1
        return epoch, [(household, format_reading(epoch, household, value))
                       for household, value in zip(self.ids, values.tolist()) if value == value]

    def lines(self, ticks: int):
        for _ in range(ticks):
            yield from self.tick_lines()[1]


def meters(use: str, households: int, start: int, seed: int):
    return RealFleet(households, start) if use == "real" else Simulator(households, TICK_S, 10.0, seed, start)


def publish_backlog(settings: Settings, households: int, now: int, ticks: int, use: str) -> int:
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
    began, sent = time.perf_counter(), 0
    for household, line in meters(use, households, now - ticks * TICK_S, 5).lines(ticks):
        producer.send(household, line)
        sent += 1
        if sent % 1_000_000 == 0:
            print(f"    published {sent:,} of {households * ticks:,}", flush=True)
    producer.flush(600)
    print(f"    backlog of {sent:,} readings published in {time.perf_counter() - began:.0f} s", flush=True)
    return sent


class Held:
    """What the job's state holds, from the batch counts' per-bucket figures (each batch reports
    the buckets it read): households and the bytes of their state."""

    def __init__(self):
        self._lock, self._total = threading.Lock(), BatchCounts()

    def __call__(self, counts: BatchCounts) -> None:
        with self._lock:
            self._total = self._total + counts  # each bucket keeps its newest figures

    def figures(self) -> dict:
        with self._lock:
            households, stored = self._total.households()
        return {"households_held": households, "stored_bytes_per_household": round(stored / max(1, households))}


class Batches:
    """The progress report of every batch that read readings, as the job's listener hands them over."""

    def __init__(self):
        self._lock, self._reports = threading.Lock(), []

    def __call__(self, progress: dict) -> None:
        if progress["numInputRows"] > 0:
            with self._lock:
                self._reports.append(progress)

    def poll(self) -> list[dict]:
        with self._lock:
            return list(self._reports)


def drain_backlog(query, batches: Batches, backlog: int) -> dict:
    """Waits until the query has read the backlog; its batches' times give the rate."""
    while sum(p["numInputRows"] for p in batches.poll()) < backlog:
        if query.exception():
            raise RuntimeError(f"the query failed: {query.exception()}")
        time.sleep(1)
    batches = batches.poll()
    first, last = batches[0], batches[-1]
    seconds = (progress_ms(last) + last["durationMs"]["triggerExecution"] - progress_ms(first)) / 1000
    return {"readings": backlog, "batches": len(batches), "seconds": round(seconds, 1),
            "readings_per_s": round(backlog / seconds), **percentiles([p["durationMs"]["triggerExecution"]
                                                                        for p in batches])}


def live(batches: Batches, settings: Settings, households: int, now: int, seconds: float, use: str) -> dict:
    """Each household once in TICK_S seconds, in real time, from `now`; the batches that follow."""
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
    lines = meters(use, households, now, 6).tick_lines()[1]
    live_from_ms = time.time() * 1000
    per_second = max(1, households // TICK_S)
    next_second = time.monotonic()
    for second in range(int(seconds)):
        for household, line in lines[second * per_second:(second + 1) * per_second]:
            producer.send(household, line)
        next_second += 1.0
        producer.wait(max(0.0, next_second - time.monotonic()))
    producer.flush(60)
    time.sleep(5)
    measured = [p for p in batches.poll() if progress_ms(p) >= live_from_ms]
    state = (measured[-1].get("stateOperators") or [{}]) if measured else [{}]
    disk = sum((o.get("customMetrics") or {}).get("rocksdbSstFileSize", 0) for o in state)
    return {"readings_per_s": per_second, **percentiles([p["durationMs"]["triggerExecution"] for p in measured]),
            "state_memory_mib": round(sum(o.get("memoryUsedBytes", 0) for o in state) / 2**20, 1),
            "state_disk_bytes_per_household": round(disk / households)}


def fleet(spark, settings: Settings, households: int, seconds: float, buckets: int, ticks: int,
          operator: str, use: str) -> dict:
    run = with_values(settings, readings_topic=f"fleet_{uuid.uuid4().hex[:8]}",
                      alerts_topic=f"alerts_{uuid.uuid4().hex[:8]}", state_buckets=buckets, state_operator=operator)
    ensure_topics(run.kafka.bootstrap_servers, {run.kafka.readings_topic: run.kafka.readings_partitions,
                                                run.kafka.alerts_topic: 1, run.kafka.dlq_topic: 1})
    now = int(time.time()) // TICK_S * TICK_S
    print(f"  {households:,} {use} households, {buckets} state buckets, the {operator} operator: a backlog of "
          f"{ticks} readings each", flush=True)
    backlog = publish_backlog(run, households, now, ticks, use)
    batches, held = Batches(), Held()
    query = start(spark, run, "ours", once=False, on_batch=held, on_progress=batches)
    try:
        drained = drain_backlog(query, batches, backlog)
        print(f"    drained at {drained['readings_per_s']:,} readings/s in {drained['batches']} batches "
              f"(p50 {drained['batch_ms_p50']} ms, max {drained['batch_ms_max']} ms)", flush=True)
        measured = live(batches, run, households, now, seconds, use)
    finally:
        query.stop()
    measured.update(held.figures())
    print(f"    live, {measured['readings_per_s']} readings/s: {measured['batches']} batches, p50 "
          f"{measured['batch_ms_p50']} ms, p95 {measured['batch_ms_p95']} ms, max {measured['batch_ms_max']} ms "
          f"(trigger 1000 ms); state {measured['state_memory_mib']} MiB, {measured['households_held']:,} households "
          f"of {measured['stored_bytes_per_household']} bytes each, on disk "
          f"{measured['state_disk_bytes_per_household']} bytes each", flush=True)
    return {"households": households, "use": use, "state_buckets": buckets, "state_operator": operator,
            "backlog_ticks": ticks, "backlog": drained, "live": measured}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            settings = with_values(None, bootstrap_servers=bootstrap, run_mode="prod", baseline="on",
                                   dlq_topic=f"dlq_{uuid.uuid4().hex[:8]}", checkpoint_root=str(Path(folder) / "chk"),
                                   history_root=str(Path(folder) / "history"), stream_metrics_port=0,
                                   starting_offsets="earliest", trigger_interval="1 second")
            spark = spark_session(settings.job, app_name="energy-monitor-fleet")
            results = [fleet(spark, settings, households, args.live_seconds, buckets, args.backlog_ticks, operator,
                             args.use)
                       for households in args.households for buckets in args.state_buckets
                       for operator in args.state_operators]
            spark.stop()
        finally:
            broker.stop(process)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / args.json).write_text(json.dumps({"tick_s": TICK_S, "trigger_ms": 1000, "results": results},
                                                    indent=1) + "\n")
    print(f"wrote {args.output / args.json}")


if __name__ == "__main__":
    main()
