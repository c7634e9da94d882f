"""Scaling on the compose cluster: the same backlog drained with one Spark worker and with two.

    .venv/bin/python bench/cluster.py [--readings N] [--households H] [--mode prod] [--rounds 2]

Starts the cluster variant (scripts/compose-local.sh cluster: 3 brokers, a master, two workers of
SPARK_WORKER_CORES=1 each), fills one readings topic (3 replicas) from the host, then runs
`energy-monitor stream --once` as a driver container against the master, alternating one worker
and two (`--rounds` of each, so neither order pays the other's warm-up), each run on a fresh
checkpoint from the earliest offset. The rate is the job's own summary line: readings read over
the seconds from its query's start to its end (the driver's JVM and session start excluded).
Writes bench/results/cluster.json; `--keep` leaves the cluster running.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from pipeline.ops.broker import live_brokers
from pipeline.core.kafka import ReadingProducer, ensure_topics
from pipeline.ingest.simulator import Simulator

HOST_BOOTSTRAP = "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
INFRA = ["kafka", "kafka-2", "kafka-3", "spark-master", "spark-worker", "spark-worker-2"]
START = 1_783_000_800
SUMMARY = re.compile(r"readings (\d+) in ([\d.]+) s \(([\d,]+)/s\)")


def compose(*args: str, capture: bool = False) -> str:
    env = {**os.environ, "SPARK_WORKER_CORES": "1"}
    result = subprocess.run([str(ROOT / "scripts" / "compose-local.sh"), "cluster", *args], env=env, text=True,
                            capture_output=capture, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"compose {' '.join(args)} failed:\n{(result.stderr or '')[-3000:]}")
    return result.stdout or ""


def wait(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(2)


def alive_workers() -> int:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8080/json/", timeout=5) as response:
            return int(json.loads(response.read())["aliveworkers"])
    except (OSError, ValueError, KeyError):
        return -1


def fill(topic: str, households: int, readings: int) -> int:
    ensure_topics(HOST_BOOTSTRAP, {topic: 4})
    producer = ReadingProducer(HOST_BOOTSTRAP, topic)
    for household, line in Simulator(households, 15, 10.0, 1, START).lines(readings // households):
        producer.send(household, line)
    assert producer.flush(300) == 0 and producer.stats.failed == 0, producer.stats
    return producer.stats.acknowledged


def drain(topic: str, workers: int, mode: str) -> dict:
    compose("start" if workers == 2 else "stop", "spark-worker-2", capture=True)
    wait(f"{workers} alive Spark workers", lambda: alive_workers() == workers, 180)
    run = uuid.uuid4().hex[:8]
    env = {"READINGS_TOPIC": topic, "ALERTS_TOPIC": f"scale_alerts_{run}", "DLQ_TOPIC": f"scale_dlq_{run}",
           "STARTING_OFFSETS": "earliest", "CHECKPOINT_ROOT": f"/data/checkpoints/scale-{run}", "RUN_MODE": mode,
           "SPARK_MASTER": "spark://spark-master:7077", "SPARK_DRIVER_HOST": "stream",
           "SPARK_BIND_ADDRESS": "0.0.0.0", "STREAM_METRICS_PORT": "0",
           "BOOTSTRAP_SERVERS": "kafka:29092,kafka-2:29092,kafka-3:29092"}
    flags = [item for name, value in env.items() for item in ("-e", f"{name}={value}")]
    started = time.monotonic()
    out = compose("run", "--rm", "--no-deps", "--use-aliases", *flags, "stream", "energy-monitor", "stream", "--once",
                  capture=True)
    total_s = time.monotonic() - started
    match = SUMMARY.search(out)
    if not match:
        raise SystemExit(f"no summary in the job's output:\n{out[-2000:]}")
    readings, seconds = int(match.group(1)), float(match.group(2))
    result = {"workers": workers, "readings": readings, "query_seconds": seconds,
              "readings_per_s": round(readings / seconds), "container_seconds": round(total_s, 1)}
    print(f"  {workers} worker(s): {result['readings_per_s']:>8,} readings/s  ({seconds:.1f} s query, "
          f"{total_s:.1f} s with the driver's start)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=500_000)
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--mode", choices=["demo", "prod"], default="prod")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "cluster.json")
    args = parser.parse_args()

    print("starting the compose cluster (3 brokers, master, 2 workers of 1 core)", flush=True)
    compose("up", *INFRA, capture=True)  # prepares the engine and images, builds, starts these only
    try:
        wait("3 live brokers", lambda: live_brokers(HOST_BOOTSTRAP) == 3, 300)
        topic = f"scale_readings_{uuid.uuid4().hex[:8]}"
        filled = fill(topic, args.households, args.readings)
        print(f"backlog: {filled:,} readings of {args.households:,} households in {topic} (3 replicas)", flush=True)
        runs = [drain(topic, workers, args.mode) for _ in range(args.rounds) for workers in (1, 2)]
    finally:
        if not args.keep:
            compose("down", "-v", capture=True)
    best = {w: max(r["readings_per_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    result = {"mode": args.mode, "readings": filled, "households": args.households, "cores_per_worker": 1,
              "host_cores": os.cpu_count(), "runs": runs,
              "readings_per_s_by_workers": {str(w): rate for w, rate in best.items()},
              "scaling_two_over_one": round(best[2] / best[1], 2)}
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"two workers / one: {result['scaling_two_over_one']}x (best of {args.rounds} each); {args.output}")


if __name__ == "__main__":
    main()
