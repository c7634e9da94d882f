"""The pipeline side by side with the original query, measured in one run on this machine.

    .venv/bin/python bench/run.py [--quick] [--households N] [--ticks T] [--latency-seconds S]

Starts its own Kafka broker (temporary folder), then measures:
  1. producer throughput of each Kafka client (bench/producer_clients.py);
  2. drain throughput (drains.py): a backlog already in Kafka, processed from a fresh checkpoint
     by our job (BASELINE=on and off) and by the original query (original.py), in both modes,
     each query and mode in a Spark session (driver JVM) of its own; then the household sweep;
  3. live prod batch durations and demo alert latency (live.py), ours also with the archiver;
  4. peak RSS of the driver JVM and of the Python processes, of this session and of each drain session.
Prints a table, writes bench/results/latest.json and latest.png (report.py). No thresholds are asserted.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import uuid
from pathlib import Path


from bench import producer_clients
from bench.drains import DRAINS, QUICK_DRAINS, drain, drain_once, fill, household_sweep, simulator_throughput
from bench.live import LIVE_RUNS, latency, live_prod_batches
from bench.report import chart, machine, peak_rss_mib, print_drains, print_table

from pipeline.ops import broker
from pipeline.core.settings import MAX_BATCH_READINGS, Settings, with_values
from pipeline.job.session import spark_session
from pipeline.core.kafka import ensure_topics

OUT = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pipeline vs original query")
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--live-households", type=int, default=10_000, help="readings per tick under live load")
    parser.add_argument("--speedup", type=float, default=7.5, help="event-time speed of the live load")
    parser.add_argument("--latency-seconds", type=float, default=120.0,
                        help="live load duration; the original needs (window + watermark) / speedup to alert")
    parser.add_argument("--sweep-households", type=lambda v: [int(x) for x in v.split(",")],
                        default=[1_000, 10_000, 100_000], help="household counts of the sweep")
    parser.add_argument("--sweep-ticks", type=int, default=40, help="readings per household in the sweep")
    parser.add_argument("--live-prod-households", type=int, default=100_000)
    parser.add_argument("--live-prod-backlog-ticks", type=int, default=40,
                        help="ticks of history before the live prod run (the steady state holds 100: window + watermark)")
    parser.add_argument("--live-prod-seconds", type=float, default=90.0)
    parser.add_argument("--live-prod-warm-up", type=float, default=30.0,
                        help="live prod batches that start this long after the live load are reported as `steady`")
    parser.add_argument("--output", type=Path, default=OUT, help="folder for latest.json and latest.png")
    parser.add_argument("--state-operator", choices=("python", "jvm"), default=None,
                        help="STATE_OPERATOR of our job (default: the settings' default)")
    parser.add_argument("--drains-only", action="store_true",
                        help="only the drains (about 10 minutes): print them, write nothing")
    args = parser.parse_args()
    if args.quick:
        args.households, args.ticks, args.live_households, args.latency_seconds = 500, 20, 250, 20.0
        args.sweep_households, args.sweep_ticks = [100, 1_000], 10
        args.live_prod_households, args.live_prod_backlog_ticks, args.live_prod_seconds = 1_000, 10, 20.0
        args.live_prod_warm_up = 5.0
    return args


def producer_throughput(settings: Settings, quick: bool) -> dict:
    print("producer throughput", flush=True)
    data = producer_clients.readings(50_000 if quick else 500_000)
    clients = {"simulator+confluent-kafka": simulator_throughput(settings, len(data))}
    print(f"  {'simulator+confluent':<16} {clients['simulator+confluent-kafka']:>10,} readings/s", flush=True)
    for name, run in (("confluent-kafka", producer_clients.confluent), ("kafka-python", producer_clients.kafka_python)):
        topic = f"bench_{uuid.uuid4().hex[:8]}"
        ensure_topics(settings.kafka.bootstrap_servers, {topic: 4})
        producer_clients.confluent(settings.kafka.bootstrap_servers, topic, data[:10])
        elapsed, _ = run(settings.kafka.bootstrap_servers, topic, data)
        clients[name] = round(len(data) / elapsed)
        print(f"  {name:<16} {clients[name]:>10,} readings/s", flush=True)
    return clients


def in_one_session(settings: Settings, args: argparse.Namespace, readings: int, folder: Path) -> dict:
    """The sweep and the live runs, in this process's Spark session, warmed by a drain of each
    query in each mode first."""
    spark = spark_session(settings.job, app_name="energy-monitor-bench")
    spark.conf.set("spark.sql.streaming.stateStore.maintenanceInterval", "2s")
    print("warming this session's JVM for what follows: a drain by each query in each mode", flush=True)
    for mode in ("demo", "prod"):
        for which in ("ours", "original"):
            drain_once(spark, with_values(settings, run_mode=mode), which, readings)
    print(f"household sweep (prod, {args.sweep_ticks} readings per household)", flush=True)
    sweep = household_sweep(spark, settings, args.sweep_households, args.sweep_ticks)
    # A JVM's first live load at a 1 s trigger runs the per-batch code more often than the drains
    # did, and its first ~30 s of batches wait for the JIT: both runs are reported, the second is
    # the measurement (docs/performance.md).
    print(f"live prod: {args.live_prod_households:,} households in real time, three times: this JVM's "
          "first live load, then the measured run, then the same with BASELINE=off", flush=True)
    first, live_prod, live_prod_off = (
        live_prod_batches(spark, with_values(settings, baseline=baseline), args.live_prod_households,
                          args.live_prod_backlog_ticks, args.live_prod_seconds, args.live_prod_warm_up)
        for baseline in ("on", "on", "off"))
    print(f"live load: {args.live_households * args.speedup / 15:,.0f} readings/s for {args.latency_seconds:.0f} s",
          flush=True)
    lat = latency(spark, with_values(settings, trigger_interval="1 second"), args.live_households,
                  args.latency_seconds, folder, 1 if args.quick else LIVE_RUNS)
    # Read at the end, when exited Python workers no longer count; a drain session's are read
    # right after its last drain.
    memory = peak_rss_mib()
    spark.stop()
    return {"sweep": sweep, "live_prod": live_prod, "live_prod_first_run": first, "live_prod_baseline_off": live_prod_off,
            "latency": lat, "memory": memory}


def result_of(args: argparse.Namespace, readings: int, drained: dict, drain_memory: dict, drains: tuple[int, int],
              clients: dict, session: dict) -> dict:
    rate = lambda mode, which: drained[mode][which]["readings_per_s"]
    return {
        "readings": readings, "households": args.households,
        "drain_readings_per_s": {m: {w: rate(m, w) for w in drained[m]} for m in drained},
        "drain_ratio_ours_over_original": {m: round(rate(m, "ours") / rate(m, "original"), 2) for m in drained},
        "drain_ratio_baseline_off_over_original": {
            m: round(rate(m, "ours_baseline_off") / rate(m, "original"), 2) for m in drained},
        "drain_ratio_baseline_on_over_off": {m: round(rate(m, "ours") / rate(m, "ours_baseline_off"), 3)
                                             for m in drained},
        "drain_detail": drained,
        "drain_order": f"each query and mode in a Spark session (driver JVM) of its own, the three of a mode "
                       f"draining the whole backlog in turns (order rotating): {drains[0]} warm-up turns, then "
                       f"{drains[1]} measured; mean of the measured drains",
        "drain_by_households": {h: r["readings_per_s"] for h, r in session["sweep"].items()},
        "sweep_detail": {"mode": "prod", "readings_per_household": args.sweep_ticks, **session["sweep"]},
        "live_prod": session["live_prod"],
        "live_prod_first_run": session["live_prod_first_run"],
        "live_prod_baseline_off": session["live_prod_baseline_off"],
        "latency_s": {"demo": session["latency"]},
        "producer_readings_per_s": clients,
        "memory": {**session["memory"], "drain_sessions": drain_memory},
        "machine": machine(),
        "quick": args.quick,
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("librdkafka").setLevel(logging.ERROR)  # a broker's start-up retries are expected here
    drains = QUICK_DRAINS if args.quick else DRAINS
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            # The drain reads the whole backlog (1M readings by default) in one batch, as the original
            # query does: the largest batch MAX_OFFSETS_PER_TRIGGER allows.
            settings = with_values(None, bootstrap_servers=bootstrap, readings_topic=f"backlog_{uuid.uuid4().hex[:8]}",
                                dlq_topic=f"dlq_{uuid.uuid4().hex[:8]}", checkpoint_root=str(Path(folder) / "chk"),
                                history_root=str(Path(folder) / "history"),  # nothing to seed the baselines from
                                speedup=args.speedup, stream_metrics_port=0, starting_offsets="earliest",
                                max_offsets_per_trigger=MAX_BATCH_READINGS, state_operator=args.state_operator)
            clients = {} if args.drains_only else producer_throughput(settings, args.quick)
            print(f"backlog: {args.households} households x {args.ticks} ticks", flush=True)
            readings = fill(settings, args.households, args.ticks)
            print(f"drain throughput (each query and mode in a Spark session of its own, taking turns: "
                  f"{drains[0]} warm-up turns, then {drains[1]} measured)", flush=True)
            drained, drain_memory = drain(settings, readings, drains)
            if args.drains_only:
                print_drains(drained)
                return
            session = in_one_session(settings, args, readings, Path(folder))
        finally:
            broker.stop(process)
    result = result_of(args, readings, drained, drain_memory, drains, clients, session)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.output / "latest.png")
    print_table(result)
    print(f"wrote {args.output / 'latest.json'} and {args.output / 'latest.png'}")


if __name__ == "__main__":
    main()
