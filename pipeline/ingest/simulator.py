"""Simulated smart meters: a daily load profile per household, jitter, and appliance bursts.

Event time advances `tick_s` per tick; the caller decides how fast that happens in wall-clock
time (`SPEEDUP`). Everything random comes from one seeded generator, so a (seed, start, count)
triple always yields the same lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.core.clock import utc_stamp

# (hour of day, kW) anchor points of a typical home: night low, morning peak, midday bump,
# evening peak. Interpolated linearly and wrapped around midnight.
DAILY_PROFILE_KW = ((0.0, 0.30), (5.0, 0.25), (7.5, 1.8), (10.0, 0.7), (13.0, 1.2),
                    (16.0, 0.8), (19.5, 3.0), (22.0, 1.1), (24.0, 0.30))
# Kettles, ovens, EV chargers: short bursts on top of the profile, at any hour.
BURST_START_PROBABILITY_PER_HOUR = 0.8
BURST_KW_RANGE = (2.0, 7.0)
BURST_MINUTES_RANGE = (2, 25)


def format_reading(epoch_s: int, household_id: str, kwh: float, decimals: int = 5,
                   stamp: str | None = None) -> str:
    """The contract's line: `2026-01-05T17:00:15Z,H001,0.01234` (no spaces, UTC, whole seconds).
    `stamp` is utc_stamp(epoch_s) when the caller already has it (one per tick, not per reading)."""
    value = f"{kwh:.{decimals}f}"
    if "." in value and decimals > 5:
        value = value.rstrip("0").rstrip(".")
    return f"{stamp or utc_stamp(epoch_s)},{household_id},{value}"


def household_ids(count: int) -> list[str]:
    width = max(3, len(str(count)))
    return [f"H{i:0{width}d}" for i in range(1, count + 1)]


def profile_kw(hour_of_day: np.ndarray | float) -> np.ndarray:
    hours, kws = zip(*DAILY_PROFILE_KW)
    return np.interp(np.mod(hour_of_day, 24.0), hours, kws)


@dataclass(frozen=True)
class Households:
    ids: list[str]
    scale: np.ndarray  # how big a consumer each household is
    shift_h: np.ndarray  # when its day starts, relative to the profile


class Simulator:
    def __init__(self, households: int, tick_s: int, jitter_pct: float, seed: int, start_epoch_s: int):
        self._rng = np.random.default_rng(seed)
        self.tick_s = tick_s
        self.jitter = jitter_pct / 100.0
        self.epoch_s = start_epoch_s - start_epoch_s % tick_s
        self.homes = Households(
            ids=household_ids(households),
            scale=self._rng.lognormal(mean=0.0, sigma=0.35, size=households),
            shift_h=self._rng.uniform(-1.0, 1.0, size=households),
        )
        self._burst_kw = np.zeros(households)
        self._burst_s_left = np.zeros(households, dtype=np.int64)

    def _bursts(self) -> np.ndarray:
        """Each household's burst power averaged over this tick. A burst lasts whole minutes; a
        tick longer than what is left of it (a 30-minute meter) gets the burst's energy, not
        the burst's power for the whole tick."""
        n = len(self.homes.ids)
        p_start = BURST_START_PROBABILITY_PER_HOUR * self.tick_s / 3600.0
        starting = (self._burst_s_left == 0) & (self._rng.random(n) < p_start)
        minutes = self._rng.integers(*BURST_MINUTES_RANGE, size=n, endpoint=True)
        self._burst_kw = np.where(starting, self._rng.uniform(*BURST_KW_RANGE, size=n), self._burst_kw)
        self._burst_s_left = np.where(starting, minutes * 60, self._burst_s_left)
        on_s = np.minimum(self._burst_s_left, self.tick_s)
        self._burst_s_left = self._burst_s_left - on_s
        return self._burst_kw * (on_s / self.tick_s)

    def tick(self) -> tuple[int, np.ndarray]:
        """Advance one tick; returns its event time and each household's kWh."""
        hour = (self.epoch_s % 86400) / 3600.0
        kw = profile_kw(hour + self.homes.shift_h) * self.homes.scale + self._bursts()
        noise = 1.0 + self._rng.uniform(-self.jitter, self.jitter, size=len(kw))
        kwh = np.maximum(kw * noise, 0.0) * self.tick_s / 3600.0
        epoch = self.epoch_s
        self.epoch_s += self.tick_s
        return epoch, kwh

    def tick_lines(self) -> tuple[int, list[tuple[str, str]]]:
        """Advance one tick; returns its event time and each household's (id, reading line)."""
        epoch, kwh = self.tick()
        stamp = utc_stamp(epoch)
        return epoch, [(household, format_reading(epoch, household, value, stamp=stamp))
                       for household, value in zip(self.homes.ids, kwh.tolist())]

    def lines(self, ticks: int | None = None) -> Iterator[tuple[str, str]]:
        """(household id, reading line) for `ticks` ticks (None: without end)."""
        done = 0
        while ticks is None or done < ticks:
            yield from self.tick_lines()[1]
            done += 1
