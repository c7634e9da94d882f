"""Sustained live throughput in prod mode: the highest simulator rate at which a query's backlog
stays bounded for a whole run, for our job and for the original, measured in one run.

    .venv/bin/python bench/sustained.py [--ours-rates R,R] [--original-rates R,R] [--seconds S]

Starts its own Kafka broker and one Spark session. For each query, rates are tried in ascending
order (a new topic each) until one fails; each run publishes `--households` simulated households
at the rate for `--seconds` (event time runs rate * 15 / households times faster than the clock)
while the query runs with a 1 s trigger, and samples the backlog (records in the topic that the
query has not processed) every 10 s. A run holds the rate when the backlog at the end is under
10 s of input and the last third's mean backlog is not above the middle third's by more than
2 s of input. Adds `live_sustained_readings_per_s: {ours, original}` and the samples
(`live_sustained_detail`) to the output folder's latest.json. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path


from pipeline.ops import broker
from pipeline.core.settings import Settings, with_values
from pipeline.job.session import spark_session
from pipeline.core.kafka import ReadingProducer, ensure_topics, topic_end_offsets
from pipeline.ingest.simulator import Simulator
from bench.drains import start

SAMPLE_S = 10


def publish_at_rate(settings: Settings, households: int, rate: int, seconds: float, stop: threading.Event) -> None:
    """The simulator at `rate` readings/s: a tick of every household each households/rate s."""
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
    sim = Simulator(households, 15, 10.0, 7, int(time.time()))
    interval = households / rate
    next_tick, deadline = time.monotonic(), time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        for household, line in sim.tick_lines()[1]:
            producer.send(household, line)
        next_tick += interval
        producer.wait(max(0.0, next_tick - time.monotonic()))
    producer.flush(60)


def processed(query) -> int:
    """Records of the readings topic the query has processed (its last batch's end offsets)."""
    progress = query.lastProgress
    if not progress or not progress.get("sources"):
        return 0
    end = progress["sources"][0].get("endOffset") or {}
    end = json.loads(end) if isinstance(end, str) else end
    return sum(offset for partitions in end.values() for offset in partitions.values())


def run_at_rate(spark, settings: Settings, which: str, households: int, rate: int, seconds: float) -> dict:
    run = with_values(settings, readings_topic=f"sus_{uuid.uuid4().hex[:8]}",
                              alerts_topic=f"alerts_{uuid.uuid4().hex[:8]}")
    ensure_topics(run.kafka.bootstrap_servers, {run.kafka.readings_topic: run.kafka.readings_partitions, run.kafka.alerts_topic: 1,
                                          run.kafka.dlq_topic: 1})
    query = start(spark, run, which, once=False)
    stop = threading.Event()
    producer = threading.Thread(target=publish_at_rate, args=(run, households, rate, seconds, stop), daemon=True)
    producer.start()
    samples = []
    started = time.monotonic()
    try:
        while producer.is_alive() and query.isActive:
            time.sleep(SAMPLE_S)
            if not producer.is_alive():  # a backlog sampled after the input stopped says nothing
                break
            written = sum(topic_end_offsets(run.kafka.bootstrap_servers, run.kafka.readings_topic).values())
            samples.append(max(0, written - processed(query)))
            print(f"    {which} {rate:,}/s at {time.monotonic() - started:5.0f} s: backlog {samples[-1]:,}", flush=True)
    finally:
        stop.set()
        producer.join(120)
        deadline = time.monotonic() + 30  # stopping mid-batch cancels its jobs: let it commit
        while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
            time.sleep(0.1)
        query.stop()
    third = max(1, len(samples) // 3)
    middle, last = samples[third:2 * third] or samples, samples[-third:]
    held = bool(samples) and samples[-1] < 10 * rate and statistics.mean(last) <= statistics.mean(middle) + 2 * rate
    return {"rate": rate, "held": held, "backlog_samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description="sustained live throughput, ours and the original (prod)")
    parser.add_argument("--ours-rates", default="40000,80000")
    parser.add_argument("--original-rates", default="20000,40000")
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="small rates and short runs, for CI")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder whose latest.json gets the result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    if args.quick:
        args.ours_rates, args.original_rates, args.households, args.seconds = "1000", "1000", 500, 30.0
    rates = {"ours": [int(r) for r in args.ours_rates.split(",")],
             "original": [int(r) for r in args.original_rates.split(",")]}
    detail = {}
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            settings = with_values(None, bootstrap_servers=bootstrap, run_mode="prod", dlq_topic=f"dlq_{uuid.uuid4().hex[:8]}",
                                checkpoint_root=str(Path(folder) / "chk"), stream_metrics_port=0,
                                history_root=str(Path(folder) / "history"),
                                starting_offsets="earliest", trigger_interval="1 second")
            spark = spark_session(settings.job, app_name="energy-monitor-sustained")
            for which, tried in rates.items():
                detail[which] = []
                for rate in tried:
                    print(f"{which}: {rate:,} readings/s for {args.seconds:.0f} s", flush=True)
                    try:
                        result = run_at_rate(spark, settings, which, args.households, rate, args.seconds)
                    except Exception as exc:  # py4j raises Java's failures (an exhausted heap) as one type or another
                        result = {"rate": rate, "held": False, "error": str(exc).strip().splitlines()[0][:300]}
                    detail[which].append(result)
                    print(f"  {which} {rate:,}/s: {'held' if result['held'] else 'fell behind'}", flush=True)
                    if not result["held"]:
                        break
            try:
                spark.stop()
            except Exception as exc:  # a JVM that ran out of heap is gone: the results stand
                print(f"  Spark did not stop cleanly: {str(exc).strip().splitlines()[0][:200]}", flush=True)
        finally:
            broker.stop(process)
    best = {which: max((r["rate"] for r in runs if r["held"]), default=None) for which, runs in detail.items()}
    path = args.output / "latest.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["live_sustained_readings_per_s"] = best
    result["live_sustained_detail"] = {"mode": "prod", "households": args.households, "seconds": args.seconds,
                                       "trigger_s": 1, "runs": detail}
    args.output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    for which, rate in best.items():
        tried = ", ".join(f"{r['rate']:,} {'held' if r['held'] else 'fell behind'}" for r in detail[which])
        print(f"sustained {which:<9} {rate if rate is None else f'{rate:,}'} readings/s  ({tried})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
