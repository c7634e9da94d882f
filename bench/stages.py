"""Where a micro-batch of the job spends its time, from Spark's own metrics.

    .venv/bin/python bench/stages.py [--households N] [--ticks T] [--live-batches B] [--interval S] [--output F]

Starts its own Kafka broker and warms the JVM with a small drain per mode; then it fills a
backlog, and for each mode runs our job on it:
  * drain: the whole backlog in one batch (as `make bench` drains it);
  * live: then B batches of one tick each (one reading per household), against the state the
    drain built; their medians are reported.
For each it prints the query progress `durationMs` and, per Spark stage of the batch's jobs,
task time, CPU time and rows/bytes, and the SQL metrics of each plan node that measures time
(shuffle write, the state operator's update and commit, Python data sizes). Writes the result
as JSON (default bench/results/stages.json). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path


from pipeline.ops import broker
from pipeline.core.settings import MAX_BATCH_READINGS, Settings, with_values
from pipeline.job.driver import start_query
from pipeline.job.session import spark_session
from pipeline.core.kafka import ensure_topics
from bench.drains import START, fill

# SQL metrics worth a line in the profile: time spent, and what crossed into Python.
NODE_METRICS = ("time", "data sent to Python", "data returned from Python", "number of output rows",
                "number of updated state rows", "memory used by state")


class SparkUI:
    """The driver UI's REST API (stages, jobs, SQL executions) of the running application."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1/applications"
        self.app = self.get("")[0]["id"]

    def get(self, path: str):
        with urllib.request.urlopen(f"{self.base}{path}", timeout=30) as answer:
            return json.loads(answer.read())

    def jobs_after(self, job_id: int) -> list[dict]:
        return sorted((j for j in self.get(f"/{self.app}/jobs") if j["jobId"] > job_id), key=lambda j: j["jobId"])

    def last_job_id(self) -> int:
        return max((j["jobId"] for j in self.get(f"/{self.app}/jobs")), default=-1)

    def stage(self, stage_id: int) -> dict:
        attempts = self.get(f"/{self.app}/stages/{stage_id}")
        return attempts[0] if attempts else {}

    def executions_after(self, execution_id: int) -> list[dict]:
        return [e for e in self.get(f"/{self.app}/sql?details=true&planDescription=false&length=100000")
                if e["id"] > execution_id]

    def last_execution_id(self) -> int:
        return max((e["id"] for e in self.get(f"/{self.app}/sql?details=false&length=100000")), default=-1)


def stage_rows(ui: SparkUI, jobs: list[dict]) -> list[dict]:
    rows = []
    for job in jobs:
        for stage_id in job["stageIds"]:
            st = ui.stage(stage_id)
            if not st or st.get("status") == "SKIPPED":
                continue
            rows.append({"job": job["jobId"], "stage": stage_id, "name": st["name"][:60], "tasks": st["numTasks"],
                         "task_ms": st["executorRunTime"], "cpu_ms": round(st["executorCpuTime"] / 1e6),
                         "deserialize_ms": st.get("executorDeserializeTime", 0),
                         "gc_ms": st.get("jvmGcTime", 0),
                         "input_records": st.get("inputRecords", 0),
                         "shuffle_read_bytes": st.get("shuffleReadBytes", 0),
                         "shuffle_write_bytes": st.get("shuffleWriteBytes", 0)})
    return rows


def node_rows(executions: list[dict]) -> list[dict]:
    rows = []
    for execution in executions:
        for node in execution.get("nodes", []):
            metrics = {m["name"]: m["value"].splitlines()[-1] for m in node.get("metrics", [])
                       if any(key in m["name"] for key in NODE_METRICS)}
            if metrics:
                rows.append({"execution": execution["id"], "node": node["nodeName"], "metrics": metrics})
    return rows


def batch_profile(ui: SparkUI, progress: dict, job_before: int, execution_before: int) -> dict:
    time.sleep(1)  # the UI learns of a finished execution through the listener bus, a moment later
    jobs = ui.jobs_after(job_before)
    # The state operator's own timings come from the progress, which reports them per batch.
    state = [{k: op.get(k) for k in ("numRowsTotal", "numRowsUpdated", "allUpdatesTimeMs", "allRemovalsTimeMs",
                                     "commitTimeMs", "memoryUsedBytes")} for op in progress.get("stateOperators", [])]
    return {"input_rows": progress["numInputRows"], "duration_ms": progress["durationMs"], "state_operator": state,
            "stages": stage_rows(ui, jobs), "nodes": node_rows(ui.executions_after(execution_before))}


def profile_mode(spark, ui: SparkUI, settings: Settings, households: int, ticks: int, live_batches: int,
                 interval_s: int) -> dict:
    """One drain batch of the backlog, then `live_batches` batches of one tick each."""
    run = with_values(settings, readings_topic=f"r_{uuid.uuid4().hex[:8]}",
                              alerts_topic=f"a_{uuid.uuid4().hex[:8]}", dlq_topic=f"d_{uuid.uuid4().hex[:8]}")
    ensure_topics(run.kafka.bootstrap_servers, {run.kafka.readings_topic: run.kafka.readings_partitions, run.kafka.alerts_topic: 1,
                                          run.kafka.dlq_topic: 1})
    readings = fill(run, households, ticks, START, interval_s)
    checkpoint = Path(run.job.checkpoint_root) / f"profile-{uuid.uuid4().hex[:6]}"
    out = {"readings": readings}
    job, execution = ui.last_job_id(), ui.last_execution_id()
    started = time.perf_counter()
    query = start_query(spark, run.job, once=True, checkpoint=checkpoint)
    query.awaitTermination()
    out["drain_seconds"] = round(time.perf_counter() - started, 2)
    out["drain"] = batch_profile(ui, query.lastProgress, job, execution)
    live = []
    for tick in range(live_batches):
        fill(run, households, 1, START + (ticks + tick) * interval_s, interval_s)
        job, execution = ui.last_job_id(), ui.last_execution_id()
        query = start_query(spark, run.job, once=True, checkpoint=checkpoint)
        query.awaitTermination()
        live.append(batch_profile(ui, query.lastProgress, job, execution))
    out["live"] = live
    return out


def print_batch(title: str, batch: dict) -> None:
    d = batch["duration_ms"]
    print(f"\n{title}: {batch['input_rows']:,} readings; triggerExecution {d.get('triggerExecution')} ms, "
          f"addBatch {d.get('addBatch')} ms, planning {d.get('queryPlanning')} ms, "
          f"latestOffset {d.get('latestOffset')} ms, walCommit {d.get('walCommit')} ms, "
          f"commitOffsets {d.get('commitOffsets')} ms")
    print(f"  {'job':>4} {'stage':>5} {'tasks':>5} {'task ms':>8} {'cpu ms':>7} {'gc ms':>6} {'shuffle r/w KiB':>16}  name")
    for s in batch["stages"]:
        shuffle = f"{s['shuffle_read_bytes'] // 1024}/{s['shuffle_write_bytes'] // 1024}"
        print(f"  {s['job']:>4} {s['stage']:>5} {s['tasks']:>5} {s['task_ms']:>8} {s['cpu_ms']:>7} {s['gc_ms']:>6} "
              f"{shuffle:>16}  {s['name']}")
    for op in batch["state_operator"]:
        print(f"    state operator: {op}")
    for n in batch["nodes"]:
        shown = ", ".join(f"{k}: {v.splitlines()[0][:60]}" for k, v in n["metrics"].items())
        print(f"    [{n['execution']}] {n['node']}: {shown}")


def median_live(live: list[dict]) -> dict:
    keys = {k for b in live for k in b["duration_ms"]}
    return {k: statistics.median(b["duration_ms"].get(k, 0) for b in live) for k in sorted(keys)}


def main() -> None:
    parser = argparse.ArgumentParser(description="per-stage profile of our job's batches")
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--live-batches", type=int, default=5)
    parser.add_argument("--modes", default="demo,prod")
    parser.add_argument("--interval", type=int, default=15,
                        help="seconds between a household's readings (1800: the fleet's sparse meters)")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "stages.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            base = with_values(None, bootstrap_servers=bootstrap, checkpoint_root=str(Path(folder) / "chk"), stream_metrics_port=0,
                            history_root=str(Path(folder) / "history"),
                            starting_offsets="earliest", max_offsets_per_trigger=MAX_BATCH_READINGS,
                            spark_ui_port=broker.free_port())
            spark = spark_session(base.job, app_name="energy-monitor-profile")
            ui = SparkUI(base.job.spark_ui_port)
            for mode in args.modes.split(","):  # warm the JVM: a first query pays its JIT compiling
                profile_mode(spark, ui, with_values(base, run_mode=mode), args.households,
                             max(1, args.ticks // 10), 0, args.interval)
            for mode in args.modes.split(","):
                result[mode] = profile_mode(spark, ui, with_values(base, run_mode=mode),
                                            args.households, args.ticks, args.live_batches, args.interval)
                print_batch(f"{mode} drain ({result[mode]['drain_seconds']} s)", result[mode]["drain"])
                print_batch(f"{mode} live batch (last of {args.live_batches})", result[mode]["live"][-1])
                print(f"  {mode} live medians (ms): {median_live(result[mode]['live'])}", flush=True)
            spark.stop()
        finally:
            broker.stop(process)
    args.output.write_text(json.dumps({"households": args.households, "ticks": args.ticks,
                                       "interval_s": args.interval, **result}, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
