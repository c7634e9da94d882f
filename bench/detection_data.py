"""The households and labelled events of `make bench-detection` (detection.py).

Every household is one reading a minute over DAYS days from START, as kWh per minute:
- simulated: the simulator's daily profile (pipeline/simulator.py), scaled and shifted per
  household, a factor per day and noise per minute; a fifth charge an electric car most nights
  and a tenth heat electrically (three times the profile): big loads that are usual for them;
- real: weeks of the Low Carbon London and UCI samples, each week one household, restamped onto
  the same days at the same time of day; an LCL half hour's kWh is spread evenly over its minutes.

Events are injected from day LEARN_DAYS on, the days before being left for learning (a slot of
the hour-of-day baseline is warm after 8 of its 15-minute windows: 2 days). They do not overlap
within a household. Kettles (short spikes) are added on every day, labelled, not injected as
anomalies: they should not count.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.ingest.importers import convert
from pipeline.ingest.simulator import profile_kw

START = int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp())
DAYS = 7
LEARN_DAYS = 2
MINUTES = DAYS * 1440
TARGET_MIN_KW, TARGET_MIN_MINUTES = 1.0, 30
REAL_IDS_FROM = 901  # real households are H901 on; simulated ones H001 on


@dataclass(frozen=True)
class Event:
    household: str
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
class Household:
    id: str
    source: str  # simulated, or the sample file and week
    kwh: np.ndarray  # per minute from START; NaN where the meter sent nothing

    @property
    def real(self) -> bool:
        return not self.source.startswith("simulated")


def simulated(count: int, rng: np.random.Generator) -> list[Household]:
    minutes = np.arange(MINUTES)
    hours = (minutes % 1440) / 60.0
    out = []
    for i in range(count):
        scale = rng.lognormal(np.log(0.5), 0.35) * (3.0 if i % 10 == 9 else 1.0)
        kw = profile_kw(hours + rng.uniform(-1.0, 1.0)) * scale
        kw *= np.repeat(rng.lognormal(0.0, 0.1, DAYS), 1440) * rng.uniform(0.8, 1.2, MINUTES)
        kind = "simulated, electric heating" if i % 10 == 9 else "simulated"
        if i % 5 == 4:
            kw += _car_charging(rng)
            kind = "simulated, electric car"
        out.append(Household(f"H{i + 1:03d}", kind, kw / 60.0))
    return out


def _car_charging(rng: np.random.Generator) -> np.ndarray:
    """7.2-7.6 kW from about 00:30 for 2.5-3.5 hours, on six nights of seven."""
    kw = np.zeros(MINUTES)
    for day in range(DAYS):
        if rng.random() < 6 / 7:
            start = day * 1440 + 30 + int(rng.integers(-20, 21))
            kw[start:start + int(rng.integers(150, 211))] += rng.uniform(7.2, 7.6)
    return kw


def real(folder: Path, weeks_per_file: int) -> list[Household]:
    """Weeks of each LCL and UCI sample in `folder`, spaced through the file; [] without it."""
    out = []
    for path in sorted(folder.glob("lcl_*.csv")) + sorted(folder.glob("uci_*.csv")):
        per_minute = _per_minute(path, "lcl" if path.name.startswith("lcl_") else "uci")
        first, last = min(per_minute) // 86400, max(per_minute) // 86400
        weeks = (last - first) // DAYS
        for w in np.linspace(0, weeks - 1, min(weeks, weeks_per_file)).astype(int) if weeks > 0 else []:
            day0 = (first + w * DAYS) * 86400
            kwh = np.full(MINUTES, np.nan)
            for minute in range(MINUTES):
                kwh[minute] = per_minute.get(day0 + minute * 60, np.nan)
            if np.isfinite(kwh).mean() > 0.9:
                out.append(Household(f"H{REAL_IDS_FROM + len(out)}", f"{path.name}, week from day {w * DAYS}", kwh))
    return out


def _per_minute(path: Path, fmt: str) -> dict[int, float]:
    """epoch minute (s) -> kWh in that minute, from the importer's readings of the file."""
    from pipeline.core.clock import parse_utc

    spread = 30 if fmt == "lcl" else 1
    out: dict[int, float] = {}
    for item in convert(path, fmt):
        if item.value is None:
            continue
        stamp, _, kwh = item.value.decode().split(",")
        t = parse_utc(stamp)
        for minute in range(spread):
            out[t + minute * 60] = float(kwh) / spread
    return out


def inject(home: Household, rng: np.random.Generator) -> list[Event]:
    """Adds the labelled events to the household's use; returns them."""
    events: list[Event] = []
    scored = (LEARN_DAYS * 1440, MINUTES)

    def place(kind: str, kw: float, start: int, length: int) -> None:
        end = min(start + length, MINUTES)
        if all(end + 30 <= e.start_min or start >= e.end_min + 30 for e in events if e.kind != "kettle"):
            events.append(Event(home.id, kind, start, end, kw))

    for _ in range(2):
        length = int(rng.integers(30, 241))
        place("appliance", round(rng.uniform(0.5, 3.0), 2), int(rng.integers(scored[0], scored[1] - length)), length)
    night = int(rng.integers(LEARN_DAYS, DAYS))
    place("night heater", round(rng.uniform(2.0, 4.0), 2), night * 1440 + int(rng.integers(0, 241)),
          int(rng.integers(60, 181)))
    if rng.random() < 0.3:
        day = int(rng.integers(LEARN_DAYS, DAYS))
        place("step change", 1.5, day * 1440, 1440)
    for event in events:
        if event.kind == "step change":
            home.kwh[event.start_min:event.end_min] *= event.kw
        else:
            home.kwh[event.start_min:event.end_min] += event.kw / 60.0
    return events + _kettles(home, rng)


def _kettles(home: Household, rng: np.random.Generator) -> list[Event]:
    """About four a day, 2-3 kW for 2-4 minutes, mostly when the household is up."""
    out = []
    for day in range(DAYS):
        for _ in range(rng.poisson(4)):
            minute = day * 1440 + int(rng.choice([7 * 60, 12 * 60, 18 * 60, 21 * 60])) + int(rng.integers(-90, 91))
            length, kw = int(rng.integers(2, 5)), round(rng.uniform(2.0, 3.0), 2)
            home.kwh[minute:minute + length] += kw / 60.0
            out.append(Event(home.id, "kettle", minute, minute + length, kw))
    return out
