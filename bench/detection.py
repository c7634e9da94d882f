"""What the operator would be told: `make bench-detection`.

    .venv/bin/python -m bench.detection [--simulated N] [--set NAME=VALUE,... ...] [--quick]

Real and simulated households with labelled injected events (detection_data.py), prod mode, go
through the job's state step (job/state.py: the fixed rule and the baseline rule, exactly as the
stateful operator runs them; the conformance tests hold the job to it), a day of readings per
batch, once per parameter set (the first: the defaults). The alerts of both rules are grouped
into incidents by core/incidents.py, the grouping the view and `history --incidents` use, and
scored per half of the households (tuning, reporting) and per data set:
- an incident is true when it overlaps a target event of its run (at least +1 kW for at least 30
  minutes), counting a window that ends up to one window after the event; not counted when it
  overlaps only other labelled events (an appliance under 1 kW, a step change); else false;
- recall: target events overlapped by an incident; false incidents per household-day;
- time to detect: from the event's start to the end of the minute whose reading took one of the
  incident's windows over its alert's threshold, median;
- 95% intervals: 1,000 resamplings of the households (a household's runs stay together).
Prints the tables, writes bench/results/detection.json and detection.png.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import detection_data as data
from bench.detection_score import INTERVAL_DRAWS, score, table_rows
from pipeline.core.alert import Kind
from pipeline.core.incidents import incidents
from pipeline.core.rules.baseline import BaselineState, band
from pipeline.core.rules.fixed import FixedState
from pipeline.core.settings import Settings, load_settings
from pipeline.job.panes import PaneState, Readings, household_code
from pipeline.job.state import Rules, Stored, step

log = logging.getLogger(__name__)
OUT = Path(__file__).resolve().parent / "results"
DEFAULT_SETS = ("", "BASELINE_FAST_RUN=0", "BASELINE_FAST_KWH=0.5,BASELINE_FAST_SCALE=3", "BASELINE_FAST_SCALE=0",
                "BASELINE_RUN=2", "BASELINE_EXCESS_KWH=0.13")
FIRST_CODE = household_code("H000000")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="what the operator would be told, scored per incident")
    parser.add_argument("--simulated", type=int, default=40, help="simulated households")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--set", dest="sets", action="append",
                        help="NAME=VALUE,... of BASELINE_* variables (repeatable; the first is reported as the "
                             f"default; '' is the defaults); default: {' '.join(repr(s) for s in DEFAULT_SETS)}")
    parser.add_argument("--output", type=Path, default=OUT, help="folder for detection.json and detection.png")
    parser.add_argument("--quick", action="store_true",
                        help="8 simulated households, 40 runs of each real data set, the defaults only: checks "
                             "that the bench completes")
    args = parser.parse_args()
    args.sets = args.sets or list(DEFAULT_SETS[:1] if args.quick else DEFAULT_SETS)
    return args


def households(args: argparse.Namespace) -> tuple[list[data.Run], list[data.Event]]:
    rng = np.random.default_rng(args.seed)
    limit = 40 if args.quick else None
    runs = (data.simulated(8 if args.quick else args.simulated, rng)
            + data.real_runs("lcl_2013", data.lcl_2013(), limit) + data.real_runs("edrp_2009", data.edrp_2009(), limit))
    events = [event for index, run in enumerate(runs) for event in data.inject(index, run, rng)]
    return runs, events


def settings_for(overrides: str) -> Settings:
    env = dict(item.split("=", 1) for item in overrides.split(",") if item)
    return load_settings({"RUN_MODE": "prod", **env})


def alerts_of(settings: Settings, runs: list[data.Run]) -> pd.DataFrame:
    """Both rules' alerts over the runs, a day of readings per batch, as rows of the alerts
    table (household_id H<run index, 6 digits>)."""
    rule, learning = settings.rule, settings.baseline
    rules = Rules(rule, learning, len(runs) + 1)
    state = Stored(PaneState.empty(), FixedState.empty(), BaselineState.empty(*rules.fingerprints))
    kwh = np.stack([run.kwh for run in runs])
    watermark_ms, found = 0, []
    for day in range(data.RUN_DAYS):
        readings = _day(kwh, day, rule.slide_s)
        state, alerts, _counts = step(state, rules, readings, watermark_ms)
        found += [_rows(frame, kind, settings) for kind, frame in alerts.items() if len(frame)]
        newest_s = int(readings.record_ms.max()) // 1000
        watermark_ms = max(watermark_ms, (newest_s - rule.watermark_s) * 1000)
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame()


def _day(kwh: np.ndarray, day: int, slide_s: int) -> Readings:
    """One day of every run's readings, as published: kWh to 6 decimals, stamped on the minute."""
    block = kwh[:, day * 1440:(day + 1) * 1440]
    run, minute = np.nonzero(np.isfinite(block))
    seconds = data.START + (day * 1440 + minute) * 60
    units = np.rint(np.round(block[run, minute], 6) * 1e9).astype(np.int64)
    panes = seconds // slide_s
    return Readings(FIRST_CODE + run.astype(np.int64), panes, units, seconds * 1000, seconds - panes * slide_s)


def _rows(frame: pd.DataFrame, kind: Kind, settings: Settings) -> pd.DataFrame:
    rule = settings.rule
    starts = pd.to_datetime(frame.start_pane.to_numpy() * rule.slide_s, unit="s", utc=True)
    baseline = kind == Kind.BASELINE
    return pd.DataFrame({
        "household_id": [f"H{code - FIRST_CODE:06d}" for code in frame.household.to_numpy()],
        "kind": kind.value, "window_start": starts, "window_end": starts + pd.Timedelta(seconds=rule.window_s),
        "kwh": frame.units.to_numpy() / 1e9,
        "threshold_kwh": frame.threshold.to_numpy() if baseline else rule.threshold,
        "baseline_kwh": frame["usual"].to_numpy() if baseline else np.nan})


def evaluate(overrides: str, runs: list[data.Run], events: list[data.Event]) -> tuple[dict, pd.DataFrame]:
    settings = settings_for(overrides)
    began = time.perf_counter()
    alerts = alerts_of(settings, runs)
    seconds = time.perf_counter() - began
    learning = settings.baseline
    merged = incidents(alerts, learning.slot_s, learning.slots)
    result = {"set": overrides or "defaults", "alerts": len(alerts), "incidents": len(merged),
              "seconds": round(seconds, 1), "scores": {}}
    for name, kinds in (("both rules", None), ("fixed rule", Kind.THRESHOLD), ("baseline rule", Kind.BASELINE)):
        chosen = alerts if kinds is None else alerts[alerts.kind == kinds.value]
        found = merged if kinds is None else incidents(chosen, learning.slot_s, learning.slots)
        result["scores"][name] = score(found, chosen, runs, events, settings.rule.window_s)
    print(f"  {result['set']}: {len(alerts):,} alerts, {len(merged):,} incidents in {result['seconds']} s", flush=True)
    return result, alerts


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    began = time.perf_counter()
    runs, events = households(args)
    print(describe(runs, events), flush=True)
    results = []
    for overrides in args.sets:
        result, alerts = evaluate(overrides, runs, events)
        if not results:
            picture(runs, events, alerts, settings_for(overrides), args.output / "detection.png")
        results.append(result)
    summary = {"runs": len(runs), "households": _counts(runs), "days_per_run": data.RUN_DAYS,
               "learning_days": data.LEARN_DAYS, "events": _event_counts(events), "interval_draws": INTERVAL_DRAWS,
               "results": results, "seconds": round(time.perf_counter() - began, 1)}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "detection.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_tables(summary)
    print(f"wrote {args.output / 'detection.json'} and {args.output / 'detection.png'}")


def describe(runs: list[data.Run], events: list[data.Event]) -> str:
    lines = [f"{len(runs):,} runs of {data.RUN_DAYS} days ({data.LEARN_DAYS} for learning), "
             f"{sum(e.target for e in events):,} target events, {len(events):,} labelled in all"]
    for name, count in sorted(_counts(runs).items()):
        lines.append(f"  {name} half: {count['households']} households, {count['runs']} runs")
    return "\n".join(lines)


def _counts(runs: list[data.Run]) -> dict:
    out: dict = {}
    for run in runs:
        entry = out.setdefault((run.dataset, run.half), {"households": set(), "runs": 0})
        entry["households"].add(run.household)
        entry["runs"] += 1
    return {f"{dataset}, {half}": {"households": len(v["households"]), "runs": v["runs"]}
            for (dataset, half), v in out.items()}


def _event_counts(events: list[data.Event]) -> dict:
    counts: dict[str, int] = {}
    for e in events:
        name = e.kind + (" (target)" if e.target else "")
        counts[name] = counts.get(name, 0) + 1
    return counts


def print_tables(summary: dict) -> None:
    header = (f"{'':<44}{'recall':>22}{'false / household-day':>26}{'minutes to detect':>22}"
              f"{'households':>12}")
    default = summary["results"][0]
    print(f"\nreporting half, {default['set']} (95% intervals, households resampled)\n{header}")
    for name, row in table_rows(default, "reporting"):
        print(f"{name:<44}{row['recall']:>22}{row['false']:>26}{row['detect']:>22}{row['households']:>12}")
    print(f"\ntuning half, every set\n{header}")
    for result in summary["results"]:
        for name, row in table_rows(result, "tuning", datasets=("all real",)):
            print(f"{result['set'] + ', ' + name:<44}{row['recall']:>22}{row['false']:>26}{row['detect']:>22}"
                  f"{row['households']:>12}")


def picture(runs: list[data.Run], events: list[data.Event], alerts: pd.DataFrame, settings: Settings,
            path: Path) -> None:
    """A real household of the reporting half on the day of a target event the rules caught."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = _pictured(runs, events, alerts)
    run, day, rule = runs[target.run], target.start_min // 1440, settings.baseline
    window_min = rule.window_s // 60
    minutes = np.flatnonzero(np.isfinite(run.kwh))
    units = np.rint(np.round(run.kwh[minutes], 6) * 1e9).astype(np.int64)
    starts = np.arange(day * 1440, (day + 1) * 1440, window_min)
    sums = np.array([np.nansum(np.round(run.kwh[m:m + window_min], 6)) for m in starts])
    learned = band(rule, (data.START + minutes * 60) // rule.slide_s, units, (data.START + starts * 60) // rule.slide_s)
    warm = learned.warm.to_numpy()
    hours = (starts - day * 1440 + window_min) / 60.0  # by the window's end
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.fill_between(hours, np.where(warm, learned.usual, np.nan), np.where(warm, learned.limit, np.nan), step="pre",
                    color="orange", alpha=0.3, label="usual use to usual + allowance (baseline)")
    ax.step(hours, sums, where="pre", color="tab:blue", lw=1, label=f"kWh per {window_min}-minute window")
    ax.axhline(settings.rule.threshold, color="red", ls="--", lw=1, label="fixed threshold")
    _mark(ax, events, alerts, target, day)
    ax.set_xlim(0, 24)
    ax.set_xlabel(f"hour of day {day + 1} of {data.RUN_DAYS} (UTC)")
    ax.set_ylabel("kWh")
    ax.set_title(f"{run.household} ({run.dataset}, reporting half), prod mode defaults")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _pictured(runs: list[data.Run], events: list[data.Event], alerts: pd.DataFrame) -> data.Event:
    """The first target event of a real reporting-half run that both a baseline alert and no
    fixed alert overlap (what the baseline adds), else the first target event."""
    def overlapped(event: data.Event, kind: str) -> bool:
        mine = alerts[(alerts.household_id == f"H{event.run:06d}") & (alerts.kind == kind)]
        start = (mine.window_start - pd.Timestamp(data.START, unit="s", tz="UTC")) // pd.Timedelta(minutes=1)
        return bool(((start < event.end_min) & (start + 15 > event.start_min)).any())

    for event in events:
        run = runs[event.run]
        if event.target and run.dataset != "simulated" and run.half == "reporting" \
                and overlapped(event, "baseline") and not overlapped(event, "threshold"):
            return event
    return next(e for e in events if e.target)


def _mark(ax, events: list[data.Event], alerts: pd.DataFrame, target: data.Event, day: int) -> None:
    """The day's labelled events as spans, its alerts as points at their windows' ends."""
    for e in events:
        if e.run == target.run and e.kind != "kettle" and e.start_min // 1440 <= day <= e.end_min // 1440:
            left, right = max(e.start_min - day * 1440, 0) / 60, min(e.end_min - day * 1440, 1440) / 60
            ax.axvspan(left, right, color="grey", alpha=0.2)
            ax.text(left, ax.get_ylim()[1] * 0.92, f" {e.kind} +{e.kw:g} kW", fontsize=8)
    mine = alerts[alerts.household_id == f"H{target.run:06d}"]
    for kind, marker, colour in (("threshold", "o", "red"), ("baseline", "^", "darkorange")):
        of = mine[mine.kind == kind]
        end = (of.window_end - pd.Timestamp(data.START + day * 86400, unit="s", tz="UTC")) / pd.Timedelta(hours=1)
        inside = ((end >= 0) & (end <= 24)).to_numpy()
        ax.scatter(end.to_numpy()[inside], of.kwh.to_numpy()[inside], marker=marker, color=colour, s=16,
                   label=f"{kind} alert", zorder=3)


if __name__ == "__main__":
    main()
