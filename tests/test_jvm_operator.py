"""The JVM state operator's step (jvm/, through energy.monitor.state.Replay: each bucket's
households kept in a map as the operator keeps them in its MapState), batch by batch without
Spark's streaming, against the Python state machine (core/rules, job/panes.py) and the reference
model: the same alerts with the same explanations, the same late and duplicate readings."""
from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from pipeline.core.settings import load_settings
from pipeline.job.jvm import rules_text
from pipeline.job.panes import household_code, household_id
from pipeline.job.state import Rules
from reference import iso
from steps import empty, run_step, stored_again
from test_baseline import UNITS, _in_order_per_household, case_readings, contract_model

pytestmark = [pytest.mark.spark]


def jvm_run(spark, mode: str, phases: list[list[tuple]], capacity: int = 2**62, buckets=lambda code: 0,
            **overrides) -> tuple[set, dict, list]:
    """Both rules' alerts over `phases` of (household, epoch s, nano-kWh), one batch each, as
    the operator gives them: the fixed rule's windows, the baseline's with their explanation,
    and per batch (late, duplicates, households held)."""
    settings = load_settings({"RUN_MODE": mode, **overrides})
    rule = settings.rule
    rules = Rules(rule, settings.baseline, capacity)
    longs, watermark_ms, newest = [len(phases)], 0, 0
    for batch in phases:
        longs += [watermark_ms, len(batch)]
        for position, (household, t, units) in enumerate(batch):
            code = household_code(household)
            longs += [buckets(code), code, t, units, 1_000 * t, position]
        if batch:
            newest = max(newest, max(t for _, t, _ in batch))
            watermark_ms = max(watermark_ms, (newest - rule.watermark_s) * 1000)
    out = np.frombuffer(bytes(spark._jvm.energy.monitor.state.Replay.run(
        rules_text(rules), bytearray(np.array(longs, dtype="<i8").tobytes()), bytearray())), dtype="<i8")
    rows = out[1:1 + 10 * out[0]].reshape(-1, 10)
    fixed, scored = set(), {}
    for _, kind, code, start, _, threshold, usual, excess, windows, slot in rows.tolist():
        key = (household_id(code), iso(start))
        if kind == 0:
            fixed.add(key)
        elif kind == 1:
            assert key not in scored, "a window alerted twice"
            as_float = [float(np.array(v, dtype=np.int64).view(np.float64)) for v in (threshold, usual, excess)]
            scored[key] = (*as_float, windows, slot)
    return fixed, scored, out[1 + 10 * out[0]:].reshape(-1, 3).tolist()


def python_run(mode: str, phases: list[list[tuple]], **overrides) -> tuple[set, dict, list]:
    """The same through the Python state step, all households in one bucket."""
    settings = load_settings({"RUN_MODE": mode, **overrides})
    rule = settings.rule
    state, watermark_ms, newest = empty(), 0, 0
    fixed, scored, counts = set(), {}, []
    for batch in phases:
        households = np.array([household_code(h) for h, _, _ in batch], dtype=np.int64)
        seconds = np.array([t for _, t, _ in batch], dtype=np.int64)
        readings = {"households": households, "panes": seconds // rule.slide_s,
                    "units": np.array([u for _, _, u in batch], dtype=np.int64), "seconds": seconds % rule.slide_s,
                    "record_ms": seconds * 1000}
        result = run_step(state, rule, readings, watermark_ms, settings.baseline)
        state = stored_again(result.state)
        fixed |= {(household_id(h), iso(int(p) * rule.slide_s)) for h, p in
                  zip(result.alerts.household, result.alerts.start_pane)}
        if result.baseline_alerts is not None:
            for a in result.baseline_alerts.itertuples():
                scored[(household_id(a.household), iso(int(a.start_pane) * rule.slide_s))] = (
                    a.threshold, a.usual, a.excess, a.windows, a.slot)
        counts.append([result.late_readings, result.duplicates, len(state.households())])
        if len(batch):
            newest = max(newest, int(seconds.max()))
            watermark_ms = max(watermark_ms, (newest - rule.watermark_s) * 1000)
    return fixed, scored, counts


def same_numbers(a: dict, b: dict, rel_tol: float = 0.0) -> bool:
    """The same windows with the same explanations (bit for bit unless `rel_tol`: the model sums
    Decimals)."""
    return a.keys() == b.keys() and all(
        all(math.isclose(x, y, rel_tol=rel_tol, abs_tol=rel_tol * 1e-3) for x, y in zip(a[k], b[k])) for k in a)


def cut(readings: list, size: int) -> list[list]:
    return [readings[at:at + size] for at in range(0, len(readings), size)]


@pytest.mark.parametrize("mode", ["demo", "prod"])
@pytest.mark.parametrize("size", [10**6, 997, 101])
def test_the_public_cases_give_the_python_steps_alerts_in_any_cut(spark, mode, size):
    phases = [batch for phase in (1, 2) for batch in cut(case_readings(mode, phase), size)]
    java, python = jvm_run(spark, mode, phases), python_run(mode, phases)
    assert java[0] == python[0] and java[0]
    assert same_numbers(java[1], python[1]) and java[1]
    assert java[2] == python[2]


def _shuffled_with_repeats(seed: int, mode: str) -> list[list[tuple]]:
    """Meters of several periods, delivered out of order (up to 15 minutes behind, one in ten up
    to an hour), some readings sent twice, cut at random: late and repeated readings."""
    rng = np.random.default_rng(seed)
    arrivals = []
    for h in range(12):
        every = int(rng.choice([1, 7, 15, 60, 300]))
        for t in range(int(rng.integers(0, every)), 4 * 3600, every):
            kwh = rng.uniform(0, 0.003 if mode == "demo" else 0.05) * every / 15
            reading = (f"H{h:03d}", t, int(round(kwh, 5) * 10**5) * 10**4)
            delay = int(rng.integers(0, 3600 if rng.random() < 0.1 else 900))
            arrivals.append((t + delay, reading))
            if rng.random() < 0.05:
                arrivals.append((t + int(rng.integers(0, 1200)), reading))
    arrivals.sort(key=lambda a: a[0])
    readings = [r for _, r in arrivals]
    cuts = np.cumsum(rng.integers(1, 3000, size=len(readings)))
    return [readings[lo:hi] for lo, hi in zip(np.concatenate([[0], cuts]), cuts) if lo < len(readings)]


@pytest.mark.parametrize("seed", range(6))
def test_out_of_order_late_and_repeated_readings_give_the_python_steps_alerts_and_counts(spark, seed):
    mode = "demo" if seed % 2 else "prod"
    overrides = {"BASELINE_WARMUP": "2", **({"BASELINE_EXCESS_KWH": "0.05", "BASELINE_PERSIST_KWH": "0.1"}
                                            if mode == "prod" else {})}
    phases = _shuffled_with_repeats(seed, mode)
    java, python = jvm_run(spark, mode, phases, **overrides), python_run(mode, phases, **overrides)
    assert java[0] == python[0] and java[0]
    assert same_numbers(java[1], python[1])
    assert java[2] == python[2] and sum(late for late, _, _ in java[2]) and sum(d for _, d, _ in java[2])


@pytest.mark.parametrize("mode,every_s,hours,households,overrides", [
    ("prod", 300, 60, 25, {"BASELINE_EXCESS_KWH": "0.05", "BASELINE_PERSIST_KWH": "0.1", "BASELINE_RUN": "2"}),
    ("demo", 60, 8, 25, {}),
])
def test_in_order_households_give_the_models_alerts_and_explanations(spark, mode, every_s, hours, households,
                                                                      overrides):
    overrides = {"BASELINE_WARMUP": "3", **overrides}
    alerted = 0
    for seed in range(3):
        phases = _in_order_per_household(seed, every_s, hours, households)
        _, scored, _ = jvm_run(spark, mode, phases, **overrides)
        model = contract_model(mode, **overrides)
        for readings in phases:
            model.batch([(h, t, Decimal(u) / UNITS) for h, t, u in readings])
        assert same_numbers(scored, model.alerts(), rel_tol=1e-9)
        alerted += len(scored)
    assert alerted >= 10
