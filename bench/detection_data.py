"""The households and labelled events of `make bench-detection` (detection.py).

A run is one household's use over RUN_DAYS days, one reading a minute (kWh per minute), stamped
onto the same days from START. Real households come from bench/data/ (README there): every
RUN_DAYS days of a household's half-hourly series with at most 5% missing is a run, a half
hour's kWh spread evenly over its 30 minutes. Simulated households are the simulator's daily
profile, scaled and shifted per household, a factor per day and noise per minute; a fifth charge
an electric car most nights and a tenth heat electrically: big loads that are usual for them.

Each household falls in the tuning or the reporting half by a hash of its id, all its runs with
it. Events are injected every week after the first LEARN_DAYS (left for learning): two
appliances left on (+0.5-3 kW for 30-240 minutes, any hour), a night heater (+2-4 kW for 1-3
hours after midnight), three weeks in ten a step change (x1.5 for a day); they do not overlap
within a run. Kettles (2-3 kW for 2-4 minutes, about four a day) are added every day, labelled,
not anomalies: they should not count.
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.ingest.simulator import profile_kw

DATA = Path(__file__).resolve().parent / "data"
START = int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp())
RUN_DAYS, LEARN_DAYS = 35, 7
MINUTES = RUN_DAYS * 1440
HALF_HOURS = RUN_DAYS * 48
TARGET_MIN_KW, TARGET_MIN_MINUTES = 1.0, 30
HALVES = ("tuning", "reporting")


@dataclass(frozen=True)
class Event:
    run: int
    kind: str  # appliance, night heater, step change, kettle
    start_min: int  # minutes from START
    end_min: int
    kw: float  # added power; for a step change, the factor

    @property
    def target(self) -> bool:
        """What the goal is scored on: a load of at least +1 kW for at least 30 minutes."""
        return (self.kind in ("appliance", "night heater") and self.kw >= TARGET_MIN_KW
                and self.end_min - self.start_min >= TARGET_MIN_MINUTES)


@dataclass
class Run:
    household: str  # the data set's own id: what the halves are drawn on
    dataset: str  # lcl_2013, edrp_2009 or simulated
    part: int  # which RUN_DAYS of the household's series
    kwh: np.ndarray  # per minute from START; NaN where the meter sent nothing

    @property
    def half(self) -> str:
        return HALVES[hashlib.sha256(self.household.encode()).digest()[0] % 2]


def lcl_2013(folder: Path = DATA / "lcl_2013") -> dict[str, np.ndarray]:
    """Household -> its half-hourly kWh over 2013 (NaN where missing)."""
    out = {}
    for path in sorted(folder.glob("MAC*.csv.gz")):
        with gzip.open(path, "rt") as text:
            frame = pd.read_csv(text, skipinitialspace=True)
        stamps = pd.to_datetime(frame["tstp"])
        kwh = pd.to_numeric(frame["energy(kWh/hh)"], errors="coerce").to_numpy()
        at = ((stamps - pd.Timestamp("2013-01-01")) // pd.Timedelta(minutes=30)).to_numpy()
        series = np.full(365 * 48, np.nan)
        inside = (at >= 0) & (at < len(series))
        series[at[inside]] = kwh[inside]
        out["L" + path.name.split(".")[0]] = series
    return out


def edrp_2009(path: Path = DATA / "edrp_2009" / "loadsample.rda") -> dict[str, np.ndarray]:
    """Household -> its half-hourly kWh from 2009-03-01 (the rows sorted into time order)."""
    import pyreadr

    frame = pyreadr.read_r(str(path))["loadsample"]
    stamps = pd.to_datetime(frame["date"].astype(str) + " " + frame["time"].astype(str))
    at = ((stamps - stamps.min()) // pd.Timedelta(minutes=30)).to_numpy()
    values = frame.iloc[:, 6:].to_numpy(dtype=np.float64)
    series = np.full((at.max() + 1, values.shape[1]), np.nan)
    series[at] = values
    return {f"E{column:03d}": series[:, column] for column in range(values.shape[1])}


def real_runs(dataset: str, series: dict[str, np.ndarray], limit: int | None = None) -> list[Run]:
    """Every RUN_DAYS of each household with at most 5% missing, up to `limit` runs in all."""
    out = []
    for household, half_hours in series.items():
        for part in range(len(half_hours) // HALF_HOURS):
            chunk = half_hours[part * HALF_HOURS:(part + 1) * HALF_HOURS]
            if np.isfinite(chunk).mean() > 0.95:
                out.append(Run(household, dataset, part, np.repeat(chunk / 30.0, 30)))
            if limit is not None and len(out) >= limit:
                return out
    return out


def simulated(count: int, rng: np.random.Generator) -> list[Run]:
    hours = (np.arange(MINUTES) % 1440) / 60.0
    out = []
    for i in range(count):
        heating = i % 10 == 9
        scale = rng.lognormal(np.log(0.5), 0.35) * (3.0 if heating else 1.0)
        kw = profile_kw(hours + rng.uniform(-1.0, 1.0)) * scale
        kw *= np.repeat(rng.lognormal(0.0, 0.1, RUN_DAYS), 1440) * rng.uniform(0.8, 1.2, MINUTES)
        if i % 5 == 4:
            kw += _car_charging(rng)
        out.append(Run(f"S{i + 1:03d}", "simulated", 0, kw / 60.0))
    return out


def _car_charging(rng: np.random.Generator) -> np.ndarray:
    """7.2-7.6 kW from about 00:30 for 2.5-3.5 hours, on six nights of seven."""
    kw = np.zeros(MINUTES)
    for day in range(RUN_DAYS):
        if rng.random() < 6 / 7:
            start = day * 1440 + 30 + int(rng.integers(-20, 21))
            kw[start:start + int(rng.integers(150, 211))] += rng.uniform(7.2, 7.6)
    return kw


def inject(index: int, run: Run, rng: np.random.Generator) -> list[Event]:
    """Adds the labelled events to run `index`'s use; returns them."""
    events: list[Event] = []

    def place(kind: str, kw: float, start: int, length: int) -> None:
        end = min(start + length, MINUTES)
        if all(end + 30 <= e.start_min or start >= e.end_min + 30 for e in events):
            events.append(Event(index, kind, start, end, kw))

    for week in range(LEARN_DAYS // 7, RUN_DAYS // 7):
        first, last = week * 7 * 1440, (week + 1) * 7 * 1440
        for _ in range(2):
            length = int(rng.integers(30, 241))
            place("appliance", round(rng.uniform(0.5, 3.0), 2), int(rng.integers(first, last - length)), length)
        night = week * 7 + int(rng.integers(0, 7))
        place("night heater", round(rng.uniform(2.0, 4.0), 2), night * 1440 + int(rng.integers(0, 241)),
              int(rng.integers(60, 181)))
        if rng.random() < 0.3:
            place("step change", 1.5, (week * 7 + int(rng.integers(0, 7))) * 1440, 1440)
    for event in events:
        if event.kind == "step change":
            run.kwh[event.start_min:event.end_min] *= event.kw
        else:
            run.kwh[event.start_min:event.end_min] += event.kw / 60.0
    return events + _kettles(index, run, rng)


def _kettles(index: int, run: Run, rng: np.random.Generator) -> list[Event]:
    """About four a day, 2-3 kW for 2-4 minutes, mostly when the household is up."""
    out = []
    for day in range(RUN_DAYS):
        for _ in range(rng.poisson(4)):
            minute = day * 1440 + int(rng.choice([7 * 60, 12 * 60, 18 * 60, 21 * 60])) + int(rng.integers(-90, 91))
            length, kw = int(rng.integers(2, 5)), round(rng.uniform(2.0, 3.0), 2)
            run.kwh[minute:minute + length] += kw / 60.0
            out.append(Event(index, "kettle", minute, minute + length, kw))
    return out
