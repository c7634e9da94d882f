"""A flood of new households, then a normal case, through the CLI as an operator runs it.

One reading each from FLOOD new household ids (`H9000000000` …, 0.001 kWh, an hour before the
case) are replayed into the readings topic and `energy-monitor stream --once` runs in prod with
the default settings; then the public baseline prod case (its two phases, each followed by a
`stream --once`). Reports each run's exit code, time and peak memory, the state the job reports,
the checkpoint's size on disk, the dead letters of the household bound against the job's
counter, and whether the case's alerts equal its expected alerts.

    .venv/bin/python bench/flood.py [--households N] [--env NAME=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path


from pipeline.ops import broker
from pipeline.core.settings import Settings, with_values
from pipeline.core.kafka import ReadingProducer, ensure_topics, read_topic

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT.parent / "shared" / "conformance"
FLOOD_STAMP = "2026-09-06T23:00:00Z"  # an hour before the case's first reading


def _tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            pages = int((proc / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(proc.name))
        rss[int(proc.name)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 2**20


def run_cli(env: dict, *args: str) -> dict:
    """One `energy-monitor` command; its exit code, seconds, peak memory of its process tree,
    stdout and the end of stderr."""
    started, peak = time.monotonic(), 0.0
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), process.communicate())))
    reader.start()
    while reader.is_alive():
        peak = max(peak, _tree_rss_mib(process.pid))
        reader.join(0.5)
    state = re.search(r"state: (\d+) households, ([\d.]+) MiB stored", out["stderr"])
    return {"command": " ".join(args), "exit": process.returncode, "seconds": round(time.monotonic() - started, 1),
            "peak_rss_mib": round(peak), "summary": out["stdout"].strip().splitlines()[-1:],
            "households": int(state.group(1)) if state else None,
            "state_mib": float(state.group(2)) if state else None,
            "last_error": [ln for ln in out["stderr"].splitlines() if ln.startswith("energy-monitor:")][-1:]}


def flood(settings: Settings, households: int) -> None:
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
    for i in range(households):
        household = f"H9{i:010d}"
        producer.send(household, f"{FLOOD_STAMP},{household},0.001")
    assert producer.flush(300) == 0 and producer.stats.failed == 0


def case_matches(settings: Settings) -> dict:
    """The case's alerts against its expected ones: (household, window start, end) per kind."""
    expected = json.loads((CASE / "baseline_prod_expected.json").read_text())
    got: dict[str, set] = {"threshold": set(), "baseline": set()}
    for message in read_topic(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic, stop_at_end=True, idle_timeout_s=10):
        alert = json.loads(message.value())
        got[alert["kind"]].add((alert["household_id"], alert["window_start"], alert["window_end"]))
    want = {"threshold": {tuple(a[:3]) for a in expected["threshold_alerts"]},
            "baseline": {tuple(a[:3]) for a in expected["baseline_alerts"]}}
    return {kind: {"equal": got[kind] == want[kind], "alerts": len(got[kind]), "expected": len(want[kind])}
            for kind in want}


def refused(settings: Settings) -> int:
    return sum(json.loads(m.value()).get("reason") == "household_limit"
               for m in read_topic(settings.kafka.bootstrap_servers, settings.kafka.dlq_topic, stop_at_end=True, idle_timeout_s=10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE over the defaults")
    parser.add_argument("--output", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder) / "kafka", broker.free_port(), broker.free_port())
        try:
            suffix = uuid.uuid4().hex[:8]
            settings = with_values(None, bootstrap_servers=bootstrap, run_mode="prod", readings_topic=f"readings_{suffix}",
                                alerts_topic=f"alerts_{suffix}", dlq_topic=f"dlq_{suffix}",
                                checkpoint_root=str(Path(folder) / "checkpoints"), var_dir=str(Path(folder) / "var"),
                                history_root=str(Path(folder) / "history"), stream_metrics_port=0,
                                spark_ui_port=broker.free_port())
            env = {**os.environ, **settings.to_env(), **dict(e.split("=", 1) for e in args.env)}
            ensure_topics(bootstrap, settings.kafka.topics)
            started = time.monotonic()
            flood(settings, args.households)
            print(f"flood: {args.households:,} new households in {time.monotonic() - started:.0f} s", flush=True)
            runs = [run_cli(env, "stream", "--once")]
            print(json.dumps(runs[-1]), flush=True)
            for phase in (1, 2):
                run_cli(env, "replay", str(CASE / f"baseline_prod_phase{phase}.csv"))
                runs.append(run_cli(env, "stream", "--once"))
                print(json.dumps(runs[-1]), flush=True)
            checkpoint = Path(folder) / "checkpoints"
            result = {"households": args.households, "env": args.env, "runs": runs,
                      "checkpoint_mib": round(sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2**20, 1),
                      "household_limit_letters": refused(settings), "case": case_matches(settings)}
        finally:
            broker.stop(process)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
