"""Scores of `make bench-detection` (detection.py): incidents against labelled events, per half
of the households and per data set, with 95% intervals from resampling households."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench import detection_data as data

INTERVAL_DRAWS = 1000
GROUPS = ("all real", "lcl_2013", "edrp_2009", "simulated")


@dataclass
class Tally:
    """One household's outcome over its runs."""

    targets: int = 0
    hit: int = 0
    true: int = 0
    false: int = 0
    days: int = 0
    delays: list = field(default_factory=list)


def score(found: pd.DataFrame, alerts: pd.DataFrame, runs: list[data.Run], events: list[data.Event],
          window_s: int) -> dict:
    """found: incidents (core/incidents.py) of `alerts`; household ids are H<run index>."""
    reach = window_s // 60
    by_run = defaultdict(list)
    for index, event in enumerate(events):
        by_run[event.run].append(index)
    tallies: dict[tuple, Tally] = defaultdict(Tally)
    for index, run in enumerate(runs):
        tally = tallies[(run.dataset, run.half, run.household)]
        tally.days += data.RUN_DAYS - data.LEARN_DAYS
        tally.targets += sum(events[i].target for i in by_run[index])
    hits = _judge(found, runs, events, by_run, tallies, reach)
    crossings = _crossings(alerts, runs)
    for index in hits:
        event = events[index]
        run = runs[event.run]
        delay = _delay(event, crossings.get(event.run), reach)
        tally = tallies[(run.dataset, run.half, run.household)]
        tally.hit += 1
        if delay is not None:
            tally.delays.append(delay)
    return {half: {group: summarize([t for (dataset, h, _), t in tallies.items() if h == half and _in(dataset, group)])
                   for group in GROUPS} for half in data.HALVES}


def _in(dataset: str, group: str) -> bool:
    return dataset == group or (group == "all real" and dataset != "simulated")


def _minutes(stamps: pd.Series) -> np.ndarray:
    return ((stamps - pd.Timestamp(data.START, unit="s", tz="UTC")) / pd.Timedelta(minutes=1)).to_numpy()


def _judge(found: pd.DataFrame, runs, events, by_run: dict, tallies: dict, reach: int) -> set[int]:
    """Counts each incident as true or false in its household's tally; returns the target events hit."""
    hits: set[int] = set()
    if found.empty:
        return hits
    first, last = _minutes(found.first_window_start), _minutes(found.last_window_end)
    for household, lo, hi in zip(found.household_id, first, last):
        if hi <= data.LEARN_DAYS * 1440:
            continue
        index = int(household[1:])
        run = runs[index]
        overlapped = [i for i in by_run[index] if lo < events[i].end_min + reach and events[i].start_min < hi]
        tally = tallies[(run.dataset, run.half, run.household)]
        if any(events[i].target for i in overlapped):
            tally.true += 1
            hits.update(i for i in overlapped if events[i].target)
        elif not any(events[i].kind != "kettle" for i in overlapped):
            tally.false += 1
    return hits


def _crossings(alerts: pd.DataFrame, runs: list[data.Run]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per run: each alert's window start and the minute after the reading that took the window
    over the alert's threshold (the sums as published: kWh to 6 decimals)."""
    out = {}
    if alerts.empty:
        return out
    starts = _minutes(alerts.window_start)
    lengths = _minutes(alerts.window_end) - starts
    runs_of = alerts.household_id.str[1:].astype(int).to_numpy()
    for index in np.unique(runs_of):
        mine = np.flatnonzero(runs_of == index)
        use = np.nan_to_num(np.round(runs[index].kwh, 6))
        crossed = np.full(len(mine), np.nan)
        for k, at in enumerate(mine):
            first = int(np.ceil(starts[at]))
            running = np.cumsum(use[first:int(np.ceil(starts[at] + lengths[at]))])
            over = np.flatnonzero(running > alerts.threshold_kwh.iat[at] + 1e-9)
            crossed[k] = first + over[0] + 1 if len(over) else np.nan
        out[int(index)] = (starts[mine], crossed)
    return out


def _delay(event: data.Event, crossings: tuple | None, reach: int) -> float | None:
    if crossings is None:
        return None
    starts, crossed = crossings
    near = (starts < event.end_min + reach) & (starts + reach > event.start_min) & (crossed >= event.start_min)
    return float(np.nanmin(crossed[near]) - event.start_min) if near.any() else None


def summarize(tallies: list[Tally], seed: int = 11) -> dict:
    """Recall, false incidents per household-day and the median time to detect, each with the
    95% interval of INTERVAL_DRAWS resamplings of the households."""
    if not tallies:
        return {"households": 0}
    columns = np.array([[t.targets, t.hit, t.false, t.days, t.true] for t in tallies], dtype=np.float64)
    targets, hit, false, days, true = columns.T
    draws = np.random.default_rng(seed).integers(0, len(tallies), (INTERVAL_DRAWS, len(tallies)))
    weights = np.stack([np.bincount(row, minlength=len(tallies)) for row in draws]).astype(np.float64)
    recall = (weights @ hit) / np.maximum(weights @ targets, 1)
    false_rate = (weights @ false) / (weights @ days)
    delays = [np.concatenate([tallies[i].delays for i in row] + [[]]) for row in draws]
    medians = [np.median(d) for d in delays if len(d)]
    everything = np.concatenate([t.delays for t in tallies] + [[]])
    return {"households": len(tallies), "targets": int(targets.sum()), "hit": int(hit.sum()),
            "true_incidents": int(true.sum()), "false_incidents": int(false.sum()), "household_days": int(days.sum()),
            "recall": round(hit.sum() / max(targets.sum(), 1), 3), "recall_95": _interval(recall),
            "false_per_household_day": round(false.sum() / days.sum(), 3), "false_95": _interval(false_rate),
            "detect_median_minutes": float(np.median(everything)) if len(everything) else None,
            "detect_95": _interval(np.array(medians)) if medians else None}


def _interval(values: np.ndarray) -> list[float]:
    return [round(float(np.percentile(values, 2.5)), 3), round(float(np.percentile(values, 97.5)), 3)]


def table_rows(result: dict, half: str, datasets: tuple = GROUPS) -> list[tuple[str, dict]]:
    """(rule and data set, formatted cells) of one half of a result."""
    rows = []
    for rule, halves in result["scores"].items():
        for group in datasets:
            s = halves[half][group]
            if not s.get("households"):
                continue
            detect = s["detect_median_minutes"]
            rows.append((f"{rule}, {group}", {
                "recall": f"{s['recall']:.3f} [{s['recall_95'][0]:.2f}, {s['recall_95'][1]:.2f}]",
                "false": f"{s['false_per_household_day']:.3f} [{s['false_95'][0]:.2f}, {s['false_95'][1]:.2f}]",
                "detect": "-" if detect is None else f"{detect:g} [{s['detect_95'][0]:g}, {s['detect_95'][1]:g}]",
                "households": s["households"]}))
    return rows
