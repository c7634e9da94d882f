"""The baseline rule's state machine (core/rules/baseline.py through the job's state step), without
Spark: the public conformance cases cut into batches of several sizes, against their expected alerts."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from dataclasses import replace
from types import SimpleNamespace

from pipeline.core.rules.baseline import BaselineState
from pipeline.core.rules.fixed import FixedState
from pipeline.core.clock import parse_utc
from pipeline.core.settings import load_settings
from pipeline.ingest.importers import per_minute
from pipeline.ingest.simulator import format_reading
from pipeline.job.panes import household_code, household_id
from reference import BaselineExpectation, iso, valid_readings
from steps import empty, run_step, stored_again

CASES = Path(__file__).resolve().parent / "conformance"
UNITS = 10**9


def case_readings(mode: str, phase: int) -> list[tuple[str, int, int]]:
    """(household, epoch s, nano-kWh) of a public baseline case's valid lines."""
    return valid_readings(gzip.decompress((CASES / f"excess_{mode}_phase{phase}.csv.gz").read_bytes()))


def run(mode: str, batch_size: int, **overrides):
    return run_readings(mode, batch_size, [case_readings(mode, phase) for phase in (1, 2)], **overrides)


def run_readings(mode: str, batch_size: int, phases: list[list[tuple[str, int, int]]], **overrides):
    """Both rules' alerts over `phases` of (household, epoch s, nano-kWh), cut into batches."""
    settings = load_settings({"RUN_MODE": mode, **overrides})
    rule, learning = settings.rule, settings.baseline
    state, watermark_ms, newest = empty(), 0, 0
    fixed, scored = set(), {}
    for readings in phases:
        for at in range(0, len(readings), batch_size):
            batch = readings[at:at + batch_size]
            households = np.array([household_code(h) for h, _, _ in batch], dtype=np.int64)
            seconds = np.array([t for _, t, _ in batch], dtype=np.int64)
            units = np.array([u for _, _, u in batch], dtype=np.int64)
            batch_readings = {"households": households, "panes": seconds // rule.slide_s, "units": units,
                              "seconds": seconds % rule.slide_s}
            result = run_step(state, rule, batch_readings, watermark_ms, learning)
            state = stored_again(result.state)  # as Spark stores it
            fixed |= {(household_id(h), iso(int(p) * rule.slide_s)) for h, p in
                      zip(result.alerts.household, result.alerts.start_pane)}
            for alert in result.baseline_alerts.itertuples():
                key = (household_id(alert.household), iso(int(alert.start_pane) * rule.slide_s))
                assert key not in scored, "a window alerted twice"
                scored[key] = (alert.threshold, alert.usual, alert.excess, alert.windows, alert.slot)
            newest = max(newest, int(seconds.max()))
            watermark_ms = max(watermark_ms, (newest - rule.watermark_s) * 1000)
    return fixed, scored


@pytest.mark.parametrize("mode", ["demo", "prod"])
@pytest.mark.parametrize("batch_size", [10**6, 1000, 97])
def test_both_rules_give_the_expected_alerts_however_the_input_is_cut(mode, batch_size):
    expected = json.loads((CASES / f"excess_{mode}_expected.json").read_text())
    fixed, scored = run(mode, batch_size)
    assert fixed == {tuple(a[:2]) for a in expected["threshold_alerts"]}
    want = {tuple(a[:2]): a[4:] for a in expected["baseline_alerts"]}
    assert set(scored) == set(want) and want
    if batch_size < 10**6:
        return  # an alert's numbers are those of the batch it left in; in one batch, the final ones
    for key, (threshold, usual, excess, windows, slot) in scored.items():
        e_threshold, e_usual, e_excess, e_windows, e_slot = want[key]
        assert math.isclose(threshold, e_threshold, rel_tol=1e-9) and math.isclose(usual, e_usual, rel_tol=1e-9)
        assert math.isclose(excess, e_excess, rel_tol=1e-9, abs_tol=1e-12)
        assert (windows, slot) == (e_windows, e_slot)


SENSITIVE = {"demo": {"BASELINE_EXCESS_KWH": "0.003", "BASELINE_PERSIST_KWH": "0.006"},
             "prod": {"BASELINE_EXCESS_KWH": "0.03", "BASELINE_PERSIST_KWH": "0.05", "BASELINE_RUN": "2"}}


@pytest.mark.parametrize("mode,batch_size", [("demo", 13), ("demo", 997), ("prod", 101)])
def test_a_sensitive_setting_gives_the_models_alerts_however_the_input_is_cut(mode, batch_size):
    """Many more alerts than the defaults give, and the same windows as the model in any cut."""
    model = contract_model(mode, **SENSITIVE[mode])
    for phase in (1, 2):
        model.batch(model_readings(CASES / f"excess_{mode}_phase{phase}.csv.gz"))
    _, scored = run(mode, batch_size, **SENSITIVE[mode])
    assert len(model.alerts()) > 12 and set(scored) == set(model.alerts())


def test_a_window_is_judged_without_the_window_before_its_cut_off_learned():
    """Prod: window j's cut-off is j - 2. Another household moves the watermark so that window 5
    of H001 is past every reading, yet window 6 can still take one: 5 must wait to be learned, or
    6 is judged with it (six learning windows where the contract has five)."""
    overrides = {"BASELINE_SLOTS": "1", "BASELINE_WARMUP": "2", "BASELINE_RUN": "1", "BASELINE_PERSIST_KWH": "0.01",
                 "BASELINE_FAST_RUN": "0"}
    first_six = [("H001", 900 * j + 1, (j + 1) * UNITS // 10) for j in range(6)]
    phases = [first_six, [("H002", 7500, UNITS // 100)], [("H002", 7501, UNITS // 100)], [("H001", 6100, UNITS)]]
    _, scored = run_readings("prod", 10**6, phases, **overrides)
    model = contract_model("prod", **overrides)
    for readings in phases:
        model.batch([(h, t, Decimal(u) / UNITS) for h, t, u in readings])
    want = model.alerts()
    assert set(scored) == set(want) and ("H001", iso(5400)) in want
    for key, values in scored.items():
        assert all(math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) for a, b in zip(values, want[key])), key


def _in_order_per_household(seed: int, every_s: int, hours: int, households: int) -> list[list[tuple]]:
    """Readings every `every_s` seconds, now and then a load on top; each household's reach Kafka
    in order after a delay of its own (up to 20 minutes, so some come late), interleaved with the
    others', cut into batches of 1 to 400."""
    rng = np.random.default_rng(seed)
    arrivals = []
    for h in range(households):
        delay, base = int(rng.integers(0, 1200)), rng.uniform(0.005, 0.03)
        for t in range(int(rng.integers(0, every_s)), hours * 3600, every_s):
            kwh = base * (1 + 0.5 * math.sin(t / 7200)) + (rng.uniform(0.05, 0.3) if rng.random() < 0.03 else 0)
            arrivals.append((t + delay, f"H{h:03d}", t, int(round(kwh, 5) * 10**5) * 10**4))
    readings = [(household, t, units) for _, household, t, units in sorted(arrivals)]
    cuts = np.cumsum(rng.integers(1, 400, size=len(readings)))
    return [readings[lo:hi] for lo, hi in zip(np.concatenate([[0], cuts]), cuts) if lo < len(readings)]


@pytest.mark.parametrize("mode,every_s,hours,households,overrides", [
    ("prod", 300, 60, 25, {"BASELINE_EXCESS_KWH": "0.05", "BASELINE_PERSIST_KWH": "0.1", "BASELINE_RUN": "2"}),
    ("prod", 1800, 120, 25, {"BASELINE_EXCESS_KWH": "0.05", "BASELINE_PERSIST_KWH": "0.1", "BASELINE_RUN": "1"}),
    ("demo", 15, 3, 8, {}),
    ("demo", 60, 8, 25, {}),
])
def test_alerts_and_their_explanations_are_the_models_when_each_household_reads_in_order(
        mode, every_s, hours, households, overrides):
    """With each household's readings in order, an alerted window's slot state and the excess
    carried into it are final when it alerts, so the job's explanation is the model's too."""
    overrides = {"BASELINE_WARMUP": "3", **overrides}
    alerted = 0
    for seed in range(3):
        phases = _in_order_per_household(seed, every_s, hours, households)
        _, scored = run_readings(mode, 10**9, phases, **overrides)
        model = contract_model(mode, **overrides)
        for readings in phases:
            model.batch([(h, t, Decimal(u) / UNITS) for h, t, u in readings])
        want = model.alerts()
        assert set(scored) == set(want)
        for key, values in scored.items():
            assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(values, want[key])), key
        alerted += len(scored)
    assert alerted >= 10


def test_more_persistence_alerts_a_subset_and_less_a_superset():
    _, default = run("prod", 5000, BASELINE_FAST_RUN="0")
    _, strict = run("prod", 5000, BASELINE_FAST_RUN="0", BASELINE_RUN="5")
    _, loose = run("prod", 5000, BASELINE_FAST_RUN="0", BASELINE_RUN="2")
    assert set(strict) < set(default) < set(loose)
    _, fast = run("prod", 5000)
    _, higher = run("prod", 5000, BASELINE_FAST_KWH="0.8")
    assert set(default) < set(higher) < set(fast)


def _steady_then(load_kw: float, minutes: int) -> list[tuple[str, int, int]]:
    """A prod household using 0.1 kWh every 15 minutes for three days (a reading a minute), then
    `load_kw` more from 02:00 of the fourth day for `minutes`, then steady for an hour."""
    start = 1_783_036_800  # a midnight, UTC
    load_from = start + 3 * 86400 + 2 * 3600
    readings = []
    for t in range(start, load_from + (minutes + 60) * 60, 60):
        kwh = Decimal("0.1") / 15 + (Decimal(str(load_kw)) / 60 if load_from <= t < load_from + minutes * 60 else 0)
        readings.append(("H001", t, int(kwh * UNITS)))
    return readings


def _alerted_windows(readings, **overrides) -> dict[str, tuple]:
    """Window start (UTC, of the load's day) -> the alert's (threshold, usual, excess carried in), in prod."""
    _, scored = run_readings("prod", 600, [readings], **overrides)
    return {start[11:16]: values[:3] for (_, start), values in scored.items()}


def test_a_large_load_alerts_on_its_second_window_and_a_moderate_one_on_its_third():
    """Usual about 0.1 kWh a window, so the fast level is about 0.4 + 4 x 0.1 = 0.8 kWh of excess:
    +3 kW adds about 0.75 - 0.12 (the allowance) a window, over it after two; +1.2 kW adds about
    0.18, over H (0.3) after three windows only."""
    large = _alerted_windows(_steady_then(3.0, 45))
    assert sorted(large) == ["02:15", "02:30"]
    threshold, usual, carried = large["02:15"]
    assert usual == pytest.approx(0.1, abs=0.01) and carried == pytest.approx(0.63, abs=0.02)
    assert threshold == pytest.approx(usual + 0.12 + (0.4 + 4 * usual - carried))  # k + (L_f - S_prev)
    assert sorted(_alerted_windows(_steady_then(1.2, 45))) == ["02:30"]
    assert sorted(_alerted_windows(_steady_then(3.0, 45), BASELINE_FAST_RUN="0")) == ["02:30"]
    threshold, usual, carried = _alerted_windows(_steady_then(3.0, 45), BASELINE_FAST_SCALE="20")["02:30"]
    assert carried > 0.3 and threshold == pytest.approx(usual + 0.12)  # S_prev already over H: k


def test_half_hourly_readings_alert_in_prod_only_spread_over_their_minutes():
    """A reading every 30 minutes leaves every other 15-minute window empty, so no run reaches two
    windows: the same energy as one reading a minute (replay --per-minute) alerts."""
    minutes = _steady_then(3.0, 90)
    half_hours = {}
    for household, t, units in minutes:
        start = t - t % 1800
        half_hours[(household, start)] = half_hours.get((household, start), 0) + units
    stamped = [(household, start, units) for (household, start), units in sorted(half_hours.items())]
    spread = []
    for household, start, units in stamped:
        for line in per_minute(format_reading(start, household, Decimal(units) / UNITS, 9).encode()):
            stamp, _, kwh = line.decode().split(",")
            spread.append((household, parse_utc(stamp), int(Decimal(kwh) * UNITS)))
    assert sum(u for *_, u in spread) == sum(u for *_, u in stamped) == sum(u for *_, u in minutes)
    assert not _alerted_windows(stamped)
    assert _alerted_windows(spread)


def test_no_baseline_alert_before_warm_up():
    _, scored = run("demo", 500, BASELINE_WARMUP="1000")
    assert scored == {}


def test_the_state_forgets_households_silent_longer_than_forget_after():
    settings = load_settings({})
    code = household_code("H001")
    t0 = 1_783_000_800
    state = empty()
    for t, household in ((t0, code), (t0 + 36 * 86400, household_code("H002"))):
        batch = {"households": np.array([household]), "panes": np.array([t // 15]), "units": np.array([10**7])}
        state = run_step(state, settings.rule, batch, (t - 600) * 1000, settings.baseline).state
    assert household_code("H002") in state.baseline.names and code not in state.baseline.names


def _history_of(readings: list[tuple[str, int, int]], slide_s: int):
    """What the history's energy table holds of readings: one sum per (household, slide)."""
    frame = pd.DataFrame(readings, columns=["household", "t", "units"])
    frame["pane"] = frame.t // slide_s
    sums = frame.groupby(["household", "pane"], as_index=False).units.sum()
    return (np.array([household_code(h) for h in sums.household], dtype=np.int64),
            sums.pane.to_numpy(np.int64), sums.units.to_numpy(np.int64))


def run_restarted(mode: str, first: dict, second: dict, seeded: bool = True, batch_size: int = 1000):
    """Phase 1 under `first`, then a restart under `second` that takes its baselines from the
    history of phase 1 (seeded as the job does; or not), then phase 2. Phase 2's baseline
    alerts, with their baselines."""
    from pipeline.core.rules.baseline import Seed, fingerprint, learn

    state, watermark_ms, newest, scored = empty(), 0, 0, {}
    phase1 = case_readings(mode, 1)
    for phase, overrides in ((1, first), (2, second)):
        settings = load_settings({"RUN_MODE": mode, **overrides})
        rule, learning = settings.rule, settings.baseline
        readings = phase1 if phase == 1 else case_readings(mode, 2)
        seed = None
        if phase == 2:  # the state as the job reads it under the new rules
            state = replace(state, fixed=FixedState.empty(),
                            baseline=state.baseline.for_rules(fingerprint(rule.key), fingerprint(learning.key)))
        if phase == 2 and seeded:
            seed = SimpleNamespace(value=Seed(fingerprint("test"), learn(learning, *_history_of(phase1, rule.slide_s))))
        for at in range(0, len(readings), batch_size):
            batch = readings[at:at + batch_size]
            households = np.array([household_code(h) for h, _, _ in batch], dtype=np.int64)
            seconds = np.array([t for _, t, _ in batch], dtype=np.int64)
            units = np.array([u for _, _, u in batch], dtype=np.int64)
            batch_readings = {"households": households, "panes": seconds // rule.slide_s, "units": units,
                              "seconds": seconds % rule.slide_s}
            result = run_step(state, rule, batch_readings, watermark_ms, learning, seed)
            state = result.state
            if phase == 2:
                scored.update({(household_id(a.household), iso(int(a.start_pane) * rule.slide_s)): a.usual
                               for a in result.baseline_alerts.itertuples()})
            newest = max(newest, int(seconds.max()))
            watermark_ms = max(watermark_ms, (newest - rule.watermark_s) * 1000)
    return scored


@pytest.mark.parametrize("mode", ["demo", "prod"])
def test_a_restart_with_new_scoring_parameters_learns_them_over_the_history(mode):
    changed = {"BASELINE_EXCESS_KWH": "0.002" if mode == "demo" else "0.02", "BASELINE_WARMUP": "4",
               "THRESHOLD_KWH": "0.5" if mode == "demo" else "9"}
    restarted = run_restarted(mode, {}, changed)
    throughout = run_restarted(mode, changed, changed)
    assert restarted and restarted.keys() == throughout.keys()
    for key, mean in restarted.items():
        assert math.isclose(mean, throughout[key], rel_tol=1e-9), key
    # Without the seed what was learned under the old allowance (its clipping) stays: the check can fail.
    continued = run_restarted(mode, {}, changed, seeded=False)
    assert any(not math.isclose(mean, throughout.get(key, -1.0), rel_tol=1e-9) for key, mean in continued.items())



def contract_model(mode: str, **overrides) -> BaselineExpectation:
    """tests/reference.py's model of the baseline rule, with a mode's settings."""
    settings = load_settings({"RUN_MODE": mode, **overrides})
    r = settings.baseline
    return BaselineExpectation(r.window_s, r.slide_s, r.watermark_s, r.slot_s, r.slots, r.quantile, r.alpha, r.warmup,
                               r.excess_kwh, r.persist_kwh, r.run, r.fast_run, r.fast_kwh,
                               r.fast_scale)


def model_readings(path) -> list[tuple[str, int, Decimal]]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [(h, t, Decimal(u) / UNITS) for h, t, u in valid_readings(data)]


@pytest.mark.parametrize("mode", ["demo", "prod"])
def test_the_reference_model_gives_the_public_cases_expected_alerts(mode):
    """So that it can be trusted where the cases have no expected file (other parameters)."""
    model = contract_model(mode)
    for phase in (1, 2):
        model.batch(model_readings(CASES / f"excess_{mode}_phase{phase}.csv.gz"))
    want = {tuple(a[:2]): a[4:] for a in json.loads((CASES / f"excess_{mode}_expected.json").read_text())
            ["baseline_alerts"]}
    got = model.alerts()
    assert got.keys() == want.keys()
    for key, values in got.items():
        assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) for a, b in zip(values, want[key])), key


@pytest.mark.parametrize("mode", ["demo", "prod"])
def test_the_band_is_what_each_alerted_window_was_scored_against(mode):
    """baseline.band over a household's readings gives, at each window the job's state machine
    alerted, the alert's own usual level, learning windows and threshold."""
    from pipeline.core.rules.baseline import band
    from pipeline.ingest.simulator import Simulator

    settings = load_settings({"RUN_MODE": mode})
    rule, learning = settings.rule, settings.baseline
    tick_s = 15 if mode == "demo" else 60
    ticks = 8 * 60 * 60 // tick_s if mode == "demo" else 3 * 24 * 60
    sim = Simulator(6, tick_s, 10.0, 11, 1_783_000_800)
    households, seconds, units = [], [], []
    for _ in range(ticks):
        t, kwh = sim.tick()
        households += [household_code(h) for h in sim.homes.ids]
        seconds += [t] * len(kwh)
        units += np.rint(kwh * UNITS).astype(np.int64).tolist()
    households, seconds, units = (np.array(v, dtype=np.int64) for v in (households, seconds, units))
    batch = {"households": households, "panes": seconds // rule.slide_s, "units": units,
             "seconds": seconds % rule.slide_s}
    alerts = run_step(empty(), rule, batch, 0, learning).baseline_alerts
    assert len(alerts) > 10 and alerts.household.nunique() > 1
    for code, mine in alerts.groupby("household"):
        own = households == code
        got = band(learning, seconds[own] // rule.slide_s, units[own], mine.start_pane.to_numpy())
        assert got.warm.all()
        np.testing.assert_allclose(got.usual, mine["usual"], rtol=1e-12)
        carried = mine.excess.to_numpy()
        slow = got.limit + np.maximum(0.0, learning.persist_kwh - carried)
        fast = got.limit + np.maximum(0.0, learning.fast_kwh + learning.fast_scale * got.usual - carried)
        assert (np.isclose(mine.threshold, slow, rtol=1e-12) | np.isclose(mine.threshold, fast, rtol=1e-12)).all()
        assert list(got.windows) == list(mine.windows)


@pytest.mark.parametrize("mode,most", [("demo", 42), ("prod", 456)])
def test_a_household_costs_no_more_state_bytes_than_the_rule_before(mode, most):
    """The rule this one replaced stored 24 bytes a household and 18 a slot (42 in demo, 456 in
    prod); this one, after a day of readings from 500 households, stores no more."""
    settings = load_settings({"RUN_MODE": mode})
    t0, households = 1_788_800_400, 500
    seconds = np.repeat(np.arange(t0, t0 + 86400, 60), households)
    codes = np.tile(np.arange(1, households + 1), len(seconds) // households)
    batch = {"households": codes, "panes": seconds // 15, "units": np.full(len(codes), 10**6),
             "seconds": seconds % 15}
    learned = run_step(empty(), settings.rule, batch, (t0 + 86400 - 600) * 1000, settings.baseline).state.baseline
    assert len(learned.names) == households
    bare = replace(learned, pending_households=learned.pending_households[:0], pending_j=learned.pending_j[:0],
                   pending_units=learned.pending_units[:0])
    per_household = (len(bare.to_bytes()) - len(BaselineState.empty().to_bytes())) / households
    assert per_household <= most, per_household
    assert BaselineState.from_bytes(bare.to_bytes()).to_bytes() == bare.to_bytes()
