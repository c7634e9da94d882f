from __future__ import annotations

import re

import numpy as np

from pipeline.ingest.simulator import Simulator, format_reading, household_ids, profile_kw

LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z,H\d{3,},\d+\.\d{5}$")


def run(seed: int, ticks: int = 50, households: int = 20, start: int = 1_783_000_800):
    sim = Simulator(households, 15, 10.0, seed, start)
    return [sim.tick() for _ in range(ticks)]


def test_lines_follow_the_contract():
    assert format_reading(1_767_632_415, "H001", 0.012344) == "2026-01-05T17:00:15Z,H001,0.01234"
    epoch, kwh = run(1, ticks=1)[0]
    for h, v in zip(household_ids(20), kwh):
        assert LINE.match(format_reading(epoch, h, float(v)))


def test_same_seed_same_readings_other_seed_other_readings():
    a, b, c = run(3), run(3), run(4)
    assert all(ea == eb and np.array_equal(ka, kb) for (ea, ka), (eb, kb) in zip(a, b))
    assert not all(np.array_equal(ka, kc) for (_, ka), (_, kc) in zip(a, c))


def test_event_time_advances_one_tick_at_a_time_from_an_aligned_start():
    epochs = [e for e, _ in run(1, ticks=5, start=1_783_000_807)]
    assert epochs == [1_783_000_800 + 15 * i for i in range(5)]


def test_daily_profile_peaks_and_night_low():
    night, morning, midday, evening = profile_kw(np.array([3.0, 7.5, 13.0, 19.5]))
    assert evening > morning > midday > night
    assert profile_kw(0.0) == profile_kw(24.0)


def test_households_differ_and_values_are_plausible():
    ticks = run(5, ticks=86400 // 15, households=30)  # one day
    kwh = np.array([k for _, k in ticks])
    assert (kwh >= 0).all() and kwh.max() < 10.0
    daily_kwh = kwh.sum(axis=0)
    assert daily_kwh.max() > 1.5 * daily_kwh.min()
    assert 3 < np.median(daily_kwh) < 60  # a home uses a few to a few tens of kWh a day


def test_a_burst_shorter_than_the_tick_adds_its_energy_not_a_whole_tick_of_its_power():
    """A 30-minute meter: a 2-25 minute burst of at most 7 kW adds at most 7 kW x 25 min to a
    reading, so no reading exceeds the profile's power for the tick plus that, with the jitter."""
    tick_s, households = 1800, 2000
    sim = Simulator(households, tick_s, 10.0, 5, 1_783_000_800)
    most_burst_kwh = 7.0 * 25 / 60
    for _ in range(48):
        epoch, kwh = sim.tick()
        hour = (epoch % 86400) / 3600.0
        profile_kwh = profile_kw(hour + sim.homes.shift_h) * sim.homes.scale * tick_s / 3600
        assert (kwh <= (profile_kwh + most_burst_kwh) * 1.1 + 1e-9).all()
