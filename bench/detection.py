"""What each rule catches: `make bench-detection`.

    .venv/bin/python bench/detection.py [--simulated N] [--real DIR] [--set K,MIN_KWH,MIN_SIGMA ...]

Households and labelled events as detection_data.py makes them (7 days, prod mode, a reading a
minute) go through a Kafka broker and the real job (one batch from a fresh checkpoint), once for
each parameter set of the baseline rule (the first: the contract's defaults). Alerts are grouped
into incidents (history.incidents) and scored per rule, from the third day on (the first two are
for learning):
- an incident is true when its windows overlap a target event of its household (at least +1 kW
  for at least 30 minutes: an appliance left on, a night heater), counting a window that ends
  up to one window after the event; it is not counted when it overlaps only other labelled
  events (an appliance under 1 kW, a step change); else (nothing, or only kettles) it is false;
- recall: target events overlapped by at least one incident of the rule; precision: true over
  true and false incidents; false incidents per household-day;
- time to detect: from the event's start to the first reading that made one of its windows
  cross (the running sum of the window's readings above the alert's threshold), median.
Prints the table, writes bench/results/detection.json and detection.png (one household's day).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd


from bench import detection_data as data
from bench.drains import start

from pipeline.ops import broker
from pipeline.core.settings import Settings, with_values
from pipeline.job.session import spark_session
from pipeline.core.history import incidents
from pipeline.core.kafka import ReadingProducer, ensure_topics, read_topic
from pipeline.ingest.simulator import format_reading

OUT = Path(__file__).resolve().parent / "results"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
DEFAULT_SETS = ("3,0.5,0.05", "4,0.5,0.05", "6,0.5,0.05", "6,0.3,0.05")
WINDOW_S = 900


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="what each rule catches, scored per incident")
    parser.add_argument("--simulated", type=int, default=40, help="simulated households")
    parser.add_argument("--real", type=Path, default=REAL, help="folder of the LCL and UCI samples (skipped if absent)")
    parser.add_argument("--weeks-per-file", type=int, default=6, help="weeks taken from each real sample")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--set", dest="sets", action="append",
                        help="BASELINE_K,BASELINE_MIN_KWH,BASELINE_MIN_SIGMA_KWH (repeatable; the first is reported "
                             f"as the default); default: {' '.join(DEFAULT_SETS)}")
    parser.add_argument("--output", type=Path, default=OUT, help="folder for detection.json and detection.png")
    parser.add_argument("--quick", action="store_true", help="8 simulated households, a week of each sample, "
                                                              "the defaults only: checks that the bench completes")
    args = parser.parse_args()
    args.sets = args.sets or list(DEFAULT_SETS[:1] if args.quick else DEFAULT_SETS)
    if args.quick:
        args.simulated, args.weeks_per_file = 8, 1
    return args


def households(args: argparse.Namespace) -> tuple[list[data.Household], list[data.Event]]:
    rng = np.random.default_rng(args.seed)
    homes = data.simulated(args.simulated, rng)
    if args.real.is_dir():
        homes += data.real(args.real, args.weeks_per_file)
    else:
        print(f"no real samples at {args.real}: simulated households only", flush=True)
    events = [event for home in homes for event in data.inject(home, rng)]
    return homes, events


def publish(settings: Settings, homes: list[data.Household]) -> int:
    ensure_topics(settings.kafka.bootstrap_servers, {settings.kafka.readings_topic: settings.kafka.readings_partitions})
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
    for home in homes:
        for minute in np.flatnonzero(np.isfinite(home.kwh)):
            producer.send(home.id, format_reading(data.START + int(minute) * 60, home.id, float(home.kwh[minute]), 6))
    assert producer.flush(300) == 0 and producer.stats.failed == 0
    return producer.stats.acknowledged


def run_job(spark, settings: Settings) -> pd.DataFrame:
    """The job over the whole topic in one batch; its alerts as rows of the alerts table."""
    ensure_topics(settings.kafka.bootstrap_servers, {settings.kafka.alerts_topic: 1, settings.kafka.dlq_topic: 1})
    query = start(spark, settings, "ours", once=True)
    query.awaitTermination()
    alerts = [json.loads(m.value()) for m in read_topic(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic,
                                                         stop_at_end=True, idle_timeout_s=10)]
    frame = pd.DataFrame(alerts)
    for name in ("window_start", "window_end"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


def minute_of(stamps: pd.Series) -> np.ndarray:
    return ((stamps - pd.Timestamp(data.START, unit="s", tz="UTC")) // pd.Timedelta(minutes=1)).to_numpy()


def crossing_minute(home: data.Household, start_min: int, threshold: float) -> int | None:
    """The minute of the reading that took the window starting then above `threshold`."""
    kwh = np.nan_to_num(home.kwh[start_min:start_min + WINDOW_S // 60])
    rounded = np.round(kwh, 6)  # as published
    over = np.flatnonzero(np.cumsum(rounded) > threshold)
    return start_min + int(over[0]) if len(over) else None


def score_all(alerts: pd.DataFrame, kind: str, events: list[data.Event], homes: dict[str, data.Household]) -> dict:
    """The rule's scores over all households, and over the simulated and the real ones apart."""
    out = score(alerts, kind, events, homes)
    for population, real in (("simulated", False), ("real", True)):
        ids = {h for h, home in homes.items() if home.real == real}
        if ids and any(e.target and e.household in ids for e in events):
            out[population] = score(alerts[alerts.household_id.isin(ids)], kind,
                                    [e for e in events if e.household in ids], {h: homes[h] for h in ids})
    return out


def score(alerts: pd.DataFrame, kind: str, events: list[data.Event], homes: dict[str, data.Household]) -> dict:
    mine = alerts[alerts.kind == kind]
    found = incidents(mine) if len(mine) else None
    first, last = (minute_of(found.first_window_start), minute_of(found.last_window_end)) if len(mine) else ([], [])
    scored_from = data.LEARN_DAYS * 1440
    reach = WINDOW_S // 60
    by_household: dict[str, list[data.Event]] = {}
    for event in events:
        by_household.setdefault(event.household, []).append(event)
    true = false = 0
    hit: set[data.Event] = set()
    for household, lo, hi in zip(found.household_id if found is not None else [], first, last):
        if hi <= scored_from:
            continue
        overlapped = [e for e in by_household.get(household, []) if lo < e.end_min + reach and e.start_min < hi]
        if any(e.target for e in overlapped):
            true += 1
            hit.update(e for e in overlapped if e.target)
        elif not any(e.kind != "kettle" for e in overlapped):
            false += 1
        hit.update(e for e in overlapped if not e.target)
    targets = [e for e in events if e.target]
    recall = sum(e in hit for e in targets) / len(targets)
    precision = true / (true + false) if true + false else 0.0
    days = len(homes) * (data.DAYS - data.LEARN_DAYS)
    per_kind = {k: round(sum(e in hit for e in events if e.kind == k and not e.target)
                         / max(1, sum(e.kind == k and not e.target for e in events)), 3)
                for k in ("appliance", "step change", "kettle")}
    return {"incidents": true + false, "true": true, "false": false, "recall": round(recall, 3),
            "precision": round(precision, 3), "f1": round(2 * precision * recall / (precision + recall), 3)
            if precision + recall else 0.0, "false_per_household_day": round(false / days, 3),
            "detect_minutes_median": detection_delay(mine, [e for e in targets if e in hit], homes),
            "other_events_overlapped": per_kind}


def detection_delay(alerts: pd.DataFrame, detected: list[data.Event], homes: dict[str, data.Household]) -> float | None:
    """Median minutes from an event's start to the first reading after it that made one of its
    windows cross."""
    delays = []
    starts = minute_of(alerts.window_start)
    for event in detected:
        near = (alerts.household_id.to_numpy() == event.household) & (starts < event.end_min) \
            & (starts + WINDOW_S // 60 > event.start_min)
        crossings = [crossing_minute(homes[event.household], int(s), t)
                     for s, t in zip(starts[near], alerts.threshold_kwh.to_numpy()[near])]
        after = [c for c in crossings if c is not None and c >= event.start_min]
        if after:
            delays.append(min(after) - event.start_min)
    return statistics.median(delays) if delays else None


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    homes, events = households(args)
    by_id = {h.id: h for h in homes}
    print(f"{len(homes)} households ({sum(h.real for h in homes)} real), {data.DAYS} days; "
          f"{sum(e.target for e in events)} target events, {len(events)} labelled in all", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            base = with_values(None, run_mode="prod", bootstrap_servers=bootstrap, readings_topic=f"detect_{uuid.uuid4().hex[:8]}",
                            dlq_topic=f"dlq_{uuid.uuid4().hex[:8]}", checkpoint_root=str(Path(folder) / "chk"),
                            history_root=str(Path(folder) / "history"),  # nothing to seed the baselines from
                            stream_metrics_port=0, starting_offsets="earliest", max_offsets_per_trigger=100_000_000)
            print(f"published {publish(base, homes):,} readings", flush=True)
            spark = spark_session(base.job, app_name="energy-monitor-bench-detection")
            for params in args.sets:
                k, min_kwh, min_sigma = params.split(",")
                settings = with_values(base, alerts_topic=f"alerts_{uuid.uuid4().hex[:8]}", baseline_k=float(k),
                                               baseline_min_kwh=min_kwh, baseline_min_sigma_kwh=min_sigma)
                began = time.perf_counter()
                alerts = run_job(spark, settings)
                run = {"baseline_k": float(k), "baseline_min_kwh": float(min_kwh),
                       "baseline_min_sigma_kwh": float(min_sigma), "alerts": len(alerts),
                       "seconds": round(time.perf_counter() - began, 1),
                       "baseline": score_all(alerts, "baseline", events, by_id)}
                if not runs:
                    run["threshold"] = score_all(alerts, "threshold", events, by_id)
                    picture(homes, events, alerts, settings, args.output / "detection.png")
                runs.append(run)
                print(f"  k={k} min_kwh={min_kwh} min_sigma={min_sigma}: {len(alerts):,} alerts in {run['seconds']} s",
                      flush=True)
            spark.stop()
        finally:
            broker.stop(process)
    result = {"households": len(homes), "real_households": sum(h.real for h in homes),
              "days": data.DAYS, "learning_days": data.LEARN_DAYS, "events": _event_counts(events),
              "fixed_rule": runs[0]["threshold"], "baseline_runs": runs}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "detection.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.output / 'detection.json'} and {args.output / 'detection.png'}")


def _event_counts(events: list[data.Event]) -> dict:
    counts: dict[str, int] = {}
    for e in events:
        name = e.kind + (" (target)" if e.target else "")
        counts[name] = counts.get(name, 0) + 1
    return counts


def print_table(result: dict) -> None:
    fixed = result["fixed_rule"]
    print(f"\n{'rule':<42}{'recall':>8}{'precision':>11}{'F1':>7}{'false/hh-day':>14}{'detect (min)':>14}")
    rows = [("fixed (2.0 kWh per 15 min)", fixed)] + [
        (f"baseline k={r['baseline_k']:g} min_kwh={r['baseline_min_kwh']:g} min_sigma={r['baseline_min_sigma_kwh']:g}",
         r["baseline"]) for r in result["baseline_runs"]]
    for name, s in rows:
        print(f"{name:<42}{s['recall']:>8}{s['precision']:>11}{s['f1']:>7}{s['false_per_household_day']:>14}"
              f"{str(s['detect_minutes_median']):>14}")
    default = result["baseline_runs"][0]["baseline"]
    ratio = default["f1"] / fixed["f1"] if fixed["f1"] else float("inf")
    print(f"baseline (defaults) F1 / fixed F1: {ratio:.2f}")


def picture(homes, events, alerts, settings: Settings, path: Path) -> None:
    """The first household with a night heater and an appliance left on: its day with a target event."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.core.rules.baseline import band

    real = {h.id for h in homes if h.real}
    target = next((e for e in events if e.target and e.household in real), None) or next(e for e in events if e.target)
    home = next(h for h in homes if h.id == target.household)
    day = target.start_min // 1440
    rule = settings.baseline
    minutes = np.flatnonzero(np.isfinite(home.kwh))
    panes = (data.START + minutes * 60) // rule.slide_s
    units = np.rint(np.round(home.kwh[minutes], 6) * 1e9).astype(np.int64)
    window_minutes = np.arange(day * 1440, (day + 1) * 1440)
    sums = np.array([np.nansum(np.round(home.kwh[m:m + 15], 6)) for m in window_minutes])
    learned = band(rule, panes, units, (data.START + window_minutes * 60) // rule.slide_s)
    warm = learned.warm.to_numpy()
    hours = (window_minutes - day * 1440 + 15) / 60.0  # by the window's end
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.fill_between(hours, np.where(warm, learned["mean"], np.nan), np.where(warm, learned.threshold, np.nan),
                    color="orange", alpha=0.25, label="baseline band (usual use to threshold)")
    ax.plot(hours, sums, color="tab:blue", lw=1, label="kWh per 15-minute window")
    ax.axhline(settings.rule.threshold, color="red", ls="--", lw=1, label="fixed threshold")
    for e in (e for e in events if e.household == home.id and e.kind != "kettle" and e.start_min // 1440 <= day <= e.end_min // 1440):
        ax.axvspan(max(e.start_min - day * 1440, 0) / 60, min(e.end_min - day * 1440, 1440) / 60, color="grey", alpha=0.2)
        ax.text(max(e.start_min - day * 1440, 0) / 60, ax.get_ylim()[1] * 0.92, f" {e.kind} +{e.kw:g} kW", fontsize=8)
    mine = alerts[(alerts.household_id == home.id)]
    for kind, marker, colour in (("threshold", "o", "red"), ("baseline", "^", "darkorange")):
        of = mine[mine.kind == kind]
        end = minute_of(of.window_end) - day * 1440
        inside = (end >= 0) & (end <= 1440)
        ax.scatter(end[inside] / 60, of.kwh.to_numpy()[inside], marker=marker, color=colour, s=14, label=f"{kind} alert")
    ax.set_xlim(0, 24)
    ax.set_xlabel(f"hour of day {day + 1} (UTC)")
    ax.set_ylabel("kWh")
    ax.set_title(f"{home.id} ({home.source}): day {day + 1} of {data.DAYS}, prod mode")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
