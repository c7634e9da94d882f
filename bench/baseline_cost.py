"""What the baseline rule costs the job: drains of one backlog with BASELINE=on and off, in each
mode, each in a Spark session of its own (as run.py drains), side by side in one run.

Writes bench/baseline_cost.json; prints each drain as it ends and the on/off ratios.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import DRAINS, QUICK_DRAINS, drain_in_own_session, fill  # noqa: E402

from pipeline import broker  # noqa: E402
from pipeline.config import Settings  # noqa: E402

OUT = Path(__file__).resolve().parent / "baseline_cost.json"


def main() -> int:
    parser = argparse.ArgumentParser(description="drain readings/s with the baseline rule on and off")
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="small sizes, one measured drain")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    households, ticks, drains = (500, 20, QUICK_DRAINS) if args.quick else (args.households, args.ticks, DRAINS)
    result = {"households": households, "ticks": ticks, "drains": list(drains), "modes": {}}
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            settings = Settings(bootstrap_servers=bootstrap, readings_topic=f"backlog_{uuid.uuid4().hex[:8]}",
                                dlq_topic=f"dlq_{uuid.uuid4().hex[:8]}", checkpoint_root=str(Path(folder) / "chk"),
                                stream_metrics_port=0, starting_offsets="earliest", max_offsets_per_trigger=100_000_000)
            print(f"backlog: {households} households x {ticks} ticks", flush=True)
            readings = fill(settings, households, ticks)
            for mode in ("demo", "prod"):
                rates = {}
                for baseline in ("off", "on"):
                    run = dataclasses.replace(settings, baseline=baseline)
                    runs = drain_in_own_session(run, "ours", mode, readings, drains)["runs"]
                    rates[baseline] = round(sum(r["readings_per_s"] for r in runs) / len(runs))
                    print(f"  {mode:<4} BASELINE={baseline:<3} {rates[baseline]:>10,} readings/s", flush=True)
                result["modes"][mode] = {**rates, "on_over_off": round(rates["on"] / rates["off"], 3)}
        finally:
            broker.stop(process)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for mode, rates in result["modes"].items():
        print(f"{mode}: on/off = {rates['on_over_off']:.3f} ({rates['on']:,} vs {rates['off']:,} readings/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
