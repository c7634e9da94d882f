"""The pane table and the fixed rule (the job's state step) against the naive reference, without Spark."""
from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest

from pipeline.core.settings import Rule
from pipeline.job.panes import PaneState, household_code, household_id
from reference import Expectation, iso
from steps import empty, run_step, stored_again

UNITS = 1_000_000_000


def rule_of(window_s: int, slide_s: int, threshold, watermark_s: int = 600) -> Rule:
    return Rule(window_duration=window_s, slide_duration=slide_s, threshold_kwh=float(threshold), watermark_delay=watermark_s)


def readings(households, panes, units, record_ms=None, seconds=None) -> dict:
    out = {"households": np.asarray(households), "panes": np.asarray(panes), "units": np.asarray(units)}
    if record_ms is not None:
        out["record_ms"] = np.asarray(record_ms)
    if seconds is not None:
        out["seconds"] = np.asarray(seconds)
    return out


def run_batches(batches, window_s, slide_s, threshold, watermark_s):
    """Drive the state step batch by batch with Spark's watermark rule; return alerts and late."""
    state, watermark_ms, max_event = empty(), 0, None
    rule = rule_of(window_s, slide_s, threshold, watermark_s)
    fired, late = [], 0
    for batch in batches:
        households = np.array([household_code(h) for _, h, _ in batch], dtype=np.int64)
        seconds = np.array([t for t, _, _ in batch], dtype=np.int64)
        units = np.array([round(Decimal(k) * UNITS) for _, _, k in batch], dtype=np.int64)
        result = run_step(state, rule, readings(households, seconds // slide_s, units, seconds=seconds % slide_s),
                          watermark_ms)
        state = stored_again(result.state)  # as Spark stores it
        late += result.late_readings
        for h, p, u in zip(result.alerts.household, result.alerts.start_pane, result.alerts.units):
            fired.append(((household_id(h), iso(int(p) * slide_s), iso(int(p) * slide_s + window_s)), Decimal(int(u)) / UNITS))
        if batch:
            max_event = max([max_event or 0] + [t for t, _, _ in batch])
            watermark_ms = max(watermark_ms, (max_event - watermark_s) * 1000)
    return fired, late, state


def reference(batches, window_s, slide_s, threshold, watermark_s):
    expect = Expectation(window_s, slide_s, Decimal(threshold), watermark_s)
    for batch in batches:
        expect.batch([(iso(t), h, k) for t, h, k in batch])
    return expect


@pytest.mark.parametrize("window_s,slide_s,threshold", [(60, 15, "0.05"), (900, 15, "2.0"), (60, 60, "0.03")])
@pytest.mark.parametrize("seed", range(6))
def test_random_streams_match_reference(window_s, slide_s, threshold, seed):
    rng = random.Random(seed)
    start = 1_767_225_600  # 2026-01-01T00:00:00Z
    batches, sent = [], set()
    for b in range(5):
        batch = []
        for _ in range(rng.randint(0, 200)):
            t = start + b * 300 + rng.randint(-900, 600)  # disorder, some far behind the watermark
            household = f"H{rng.randint(1, 7):03d}"
            if (t, household) not in sent:  # a repeat counts once: tested on its own below
                sent.add((t, household))
                batch.append((t, household, f"{rng.uniform(0, 0.04):.5f}"))
        batches.append(batch)
    fired, late, _ = run_batches(batches, window_s, slide_s, threshold, 600)
    expect = reference(batches, window_s, slide_s, threshold, 600)
    keys = [key for key, _ in fired]
    assert len(keys) == len(set(keys)), "a window alerted twice"
    assert set(keys) == set(expect.alerts())
    assert late == expect.late
    for key, kwh in fired:
        assert Decimal(threshold) < kwh <= expect.alerts()[key]


def test_reading_at_window_start_counts_in_that_window():
    t = 1_767_225_600  # a multiple of 60 and of 15
    fired, _, _ = run_batches([[(t, "H001", "0.06")]], 60, 15, "0.05", 600)
    assert {key for key, _ in fired} == {("H001", iso(t - 45), iso(t + 15)), ("H001", iso(t - 30), iso(t + 30)),
                                         ("H001", iso(t - 15), iso(t + 45)), ("H001", iso(t), iso(t + 60))}


def test_sum_equal_to_threshold_does_not_alert():
    t = 1_767_225_600
    fired, _, _ = run_batches([[(t, "H001", "0.03"), (t + 15, "H001", "0.02")]], 60, 60, "0.05", 600)
    assert fired == []


def test_state_keeps_only_open_windows():
    t = 1_767_225_600
    batches = [[(t, "H001", "0.1")], [(t + 3600, "H002", "0.01")], [(t + 3601, "H002", "0.01")]]
    _, _, state = run_batches(batches, 60, 15, "0.05", 600)
    assert set(state.panes.households) == {household_code("H002")}
    assert set(state.fixed.households) == set()


@pytest.mark.parametrize("seed", range(50))
def test_windows_are_every_window_that_contains_a_touched_pane_in_runs_of_the_same_panes(seed):
    from pipeline.job.panes import _same_windows, _window_runs

    rng = np.random.default_rng(seed)
    panes = np.unique(rng.integers(0, 500, size=rng.integers(1, 80)))
    touched = np.unique(rng.choice(panes, size=rng.integers(1, len(panes) + 1)))
    k = int(rng.integers(1, 70))
    naive = np.unique(np.concatenate([touched - j for j in range(k)]))
    starts, counts = _same_windows(panes, *_window_runs(touched, k), k)
    every = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, counts)])
    assert np.array_equal(every, naive)

    def held(s):
        return tuple(panes[(panes >= s) & (panes < s + k)])

    for s, n in zip(starts, counts):
        assert all(held(w) == held(s) for w in range(s, s + n))
        assert s - 1 not in every or held(s - 1) != held(s)  # a piece is as long as its panes stay


def test_alert_carries_the_newest_record_time_of_its_window_in_the_batch():
    # H1: 30 + 30 at panes 1 and 2 (record times 1 s, 2 s), 25 at pane 5 (9 s); H2 never crosses.
    households = np.array([1, 1, 1, 2])
    panes = np.array([1, 2, 5, 1])
    units = np.array([30, 30, 25, 1]) * 1_000_000
    record_ms = np.array([1000, 2000, 9000, 5000])
    result = run_step(empty(), rule_of(60, 15, 0.05), readings(households, panes, units, record_ms), 0)
    crossed = dict(zip(result.alerts.start_pane, result.alerts.crossed_ms))
    assert crossed == {-1: 2000, 0: 2000, 1: 2000, 2: 9000}


def test_a_pane_the_state_already_holds_gives_its_alert_the_batch_reading_s_record_time():
    # H1: 30 at pane 1 in the first batch (record time 1 s); then 15 more at pane 1 (4 s) and 10
    # at pane 2 (3 s). Windows with both panes cross in the second batch, when the 4 s reading
    # is the newest of the batch's in each: the state's row of pane 1 has no record time to give.
    rule = rule_of(60, 15, 0.05)
    first = run_step(empty(), rule, readings([1], [1], [30_000_000], [1000]), 0)
    assert first.alerts.empty
    second = run_step(stored_again(first.state), rule, readings([1, 1], [1, 2], [15_000_000, 10_000_000],
                                                                 [4000, 3000], [5, 1]), 0)
    assert dict(zip(second.alerts.start_pane, second.alerts.crossed_ms)) == {-1: 4000, 0: 4000, 1: 4000}


@pytest.mark.parametrize("text", ["H000", "H001", "H123", "H0000000", "H999999999999", "H000000000001", "H1000"])
def test_household_code_round_trips_and_keeps_leading_zeros(text):
    assert household_id(household_code(text)) == text


def test_household_codes_differ_by_leading_zeros():
    assert len({household_code(t) for t in ("H001", "H0001", "H00001", "H000000000001")}) == 4


@pytest.mark.parametrize("units,panes", [
    ([5, 7, 11, 13], [100, 101, 100, 250]),  # narrow
    ([5, 7, 11, 13], [100, 101, 250, 251]),  # each household's panes consecutive: offsets implied
    ([12_340_000, 50_000, 2_000_000_000, 10_000], [100, 101, 100, 250]),  # whole 10**4s: stored divided
    ([5, 2**40, 11, 13], [100, 101, 100, 250]),  # a pane over 2.1 kWh: wide units
    ([5, 7, 11, 13], [0, 101, 100, 2**40]),  # panes far apart: wide offsets
    ([-3, 0, 2**62, 1], [-5, 2**40, -(2**40), 7]),  # extremes
])
def test_state_bytes_round_trip(units, panes):
    state = PaneState.from_rows(np.array([3, 3, 9, 9]), np.array(panes), np.array(units))
    back = PaneState.from_bytes(state.to_bytes())
    for name in ("names", "runs", "households", "panes", "units"):
        assert np.array_equal(getattr(back, name), getattr(state, name)), name
    assert PaneState.from_bytes(PaneState.empty().to_bytes()).is_empty()


@pytest.mark.parametrize("gap, off_grid, bytes_a_pane", [(False, False, 2), (True, False, 3), (False, True, 4)])
def test_state_of_five_decimal_readings_takes_two_bytes_a_pane_three_with_gaps(gap, off_grid, bytes_a_pane):
    """And two more where meters report off the slide's grid (the seconds seen differ by pane)."""
    households = np.repeat(np.arange(1_000), 100)
    panes = np.tile(np.arange(10_000, 10_100) + (np.arange(100) >= 50) * gap, 1_000)  # a missed slide
    rng = np.random.default_rng(0)
    units = rng.integers(1, 5_000, len(panes)) * 10_000  # 0.00001 .. 0.05 kWh
    seconds = rng.integers(0, 15, len(panes)) if off_grid else np.zeros(len(panes), dtype=np.int64)
    seen = np.left_shift(np.uint64(1), seconds.astype(np.uint64)).reshape(-1, 1)
    state = PaneState.from_rows(households, panes, units, seen)
    blob = state.to_bytes()
    assert len(blob) <= bytes_a_pane * len(panes) + 16 * 1_000 + 96
    assert len(blob) > (bytes_a_pane - 1) * len(panes) + 16 * 1_000
    decoded = PaneState.from_bytes(blob)
    assert np.array_equal(decoded.panes, panes) and np.array_equal(decoded.seen, seen)


def test_a_reading_sent_again_counts_once_in_its_batch_and_in_later_ones():
    t = 1_767_225_600 // 15
    households, panes = np.array([1, 1, 1, 2]), np.array([t, t, t, t])
    units, seconds = np.array([30, 30, 40, 50]), np.array([0, 0, 7, 0])  # the second line repeats the first
    rule = rule_of(60, 15, 1e-6)
    first = run_step(empty(), rule, readings(households, panes, units, seconds=seconds), 0)
    assert first.duplicates == 1
    assert set(zip(first.state.panes.households.tolist(), first.state.panes.units.tolist())) == {(1, 70), (2, 50)}
    # A retransmission of all four, and one new reading: only the new one counts.
    again = run_step(stored_again(first.state), rule, readings([1, 1, 1, 2, 2], [t] * 5, [30, 30, 40, 50, 5],
                                                                seconds=[0, 0, 7, 0, 3]), 0)
    assert again.duplicates == 4
    assert set(zip(again.state.panes.households.tolist(), again.state.panes.units.tolist())) == {(1, 70), (2, 55)}
    # The first to arrive counts, even with another value.
    changed = run_step(again.state, rule, readings([2], [t], [999], seconds=[3]), 0)
    assert changed.duplicates == 1 and 999 not in changed.state.panes.units


def test_state_of_another_format_is_refused():
    blob = PaneState.empty().to_bytes()
    with pytest.raises(ValueError, match="another version's checkpoint"):
        PaneState.from_bytes(np.int64(2).tobytes() + blob[8:])


def test_households_outside_the_batch_are_carried_until_their_panes_close():
    t = 1_767_225_600 // 15  # pane index
    rule = rule_of(60, 15, 1e-7)
    first = run_step(empty(), rule, readings([1, 2], [t, t + 1], [10, 20]), 0)
    # Household 2 sends again; household 1's panes are still in open windows and stay as they were.
    second = run_step(first.state, rule, readings([2], [t + 2], [5]), (t + 1) * 15_000)
    panes = second.state.panes
    rows = set(zip(panes.households.tolist(), panes.panes.tolist(), panes.units.tolist()))
    assert rows == {(1, t, 10), (2, t + 1, 20), (2, t + 2, 5)}
    # Once household 1's newest pane can no longer be in an open window, it goes.
    third = run_step(second.state, rule, readings([2], [t + 6], [5]), (t + 5) * 15_000)
    assert set(third.state.panes.names.tolist()) == {2}
