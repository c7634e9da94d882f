"""The shared conformance cases, run exactly as their README says: replay, stream --once, twice."""
from __future__ import annotations

import gzip
import json
import math
import re
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import SHARED, records, run_cli, settings_env, wait_for
from reference import Expectation, iso

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

CASES = SHARED / "conformance"
OURS = Path(__file__).resolve().parent / "conformance"


def run_case(settings, name: str, extra_env: dict | None = None, folder: Path = CASES) -> int:
    """Both phases of a case; returns the late readings the job reported."""
    late = 0
    for phase in (1, 2):
        out = run_cli(settings, "replay", str(folder / f"{name}_phase{phase}.csv")).stdout
        assert "failed 0" in out
        summary = run_cli(settings, "stream", "--once", extra_env=extra_env).stdout
        late += int(re.search(r"late readings dropped (\d+)", summary).group(1))
        published = re.search(r"published (\d+)", out).group(1)
        assert re.search(rf"readings {published} in \d+\.\d s \([\d,]+/s\)", summary), summary
    return late


def by_window(alerts: list[dict]) -> dict[tuple, list[dict]]:
    out = defaultdict(list)
    for alert in alerts:
        out[(alert["household_id"], alert["window_start"], alert["window_end"])].append(alert)
    return out


def check_fixed(alerts: list[dict], expected: list, threshold: float, mode: str) -> None:
    windows = by_window(alerts)
    final_sums = {tuple(a[:3]): Decimal(str(a[3])) for a in expected}
    assert set(windows) == set(final_sums)
    for key, repeats in windows.items():
        assert len({a["alert_id"] for a in repeats}) == 1
        for alert in repeats:
            assert alert["mode"] == mode and alert["threshold_kwh"] == threshold
            assert Decimal(str(threshold)) < Decimal(str(alert["kwh"])) <= final_sums[key] + Decimal("0.000005")


@pytest.mark.parametrize("operator", ["python", "jvm"])
@pytest.mark.parametrize("mode", ["demo", "prod"])
def test_conformance_case(make_settings, mode, operator):
    expected = json.loads((CASES / f"{mode}_expected.json").read_text())
    settings = make_settings(run_mode=mode, state_operator=operator)
    late = run_case(settings, mode)
    alerts = [a for a in records(settings, settings.kafka.alerts_topic) if a["kind"] == "threshold"]
    check_fixed(alerts, expected["alerts"], expected["threshold_kwh"], mode)
    assert len(records(settings, settings.kafka.dlq_topic)) == expected["dead_letters"]
    assert late == expected["late_readings_dropped"]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def excess_case(tmp_path: Path, mode: str) -> Path:
    """The baseline rule's public case (tests/conformance/, gzipped), unpacked where replay reads it."""
    for phase in (1, 2):
        packed = OURS / f"excess_{mode}_phase{phase}.csv.gz"
        (tmp_path / f"excess_{mode}_phase{phase}.csv").write_bytes(gzip.decompress(packed.read_bytes()))
    return tmp_path


def check_baseline(alerts: list[dict], want: dict[tuple, list], description: str) -> None:
    """want: (household, window start) -> [window end, final kWh, threshold, usual, excess carried
    in, learning windows, slot], as in the expected files."""
    learned = by_window(alerts)
    assert {key[:2] for key in learned} == set(want) and len(learned) == len(want)
    for (household, start, end), repeats in learned.items():
        final_end, final, threshold, usual, excess, windows, slot = want[(household, start)]
        assert end == final_end and len({a["alert_id"] for a in repeats}) == 1
        for alert in repeats:
            assert close(alert["threshold_kwh"], threshold) and close(alert["baseline_kwh"], usual)
            assert close(alert["excess_kwh"], excess) and (alert["baseline_windows"], alert["slot"]) == (windows, slot)
            assert threshold < alert["kwh"] <= final + 5e-7
            assert alert["rule"] == description


@pytest.mark.parametrize("mode,max_offsets,operator", [("demo", None, "python"), ("prod", None, "python"),
                                                        ("demo", 150, "python"), ("demo", None, "jvm"),
                                                        ("prod", None, "jvm"), ("demo", 150, "jvm")])
def test_baseline_conformance_case(make_settings, tmp_path, mode, max_offsets, operator):
    """Both rules' alerts, exactly, by each state operator; with a small MAX_OFFSETS_PER_TRIGGER
    the case takes many batches (11 for each phase of the demo case) and the alerts stay the
    same. The prod case in small batches runs without Spark (tests/test_baseline.py,
    tests/test_jvm_operator.py)."""
    expected = json.loads((OURS / f"excess_{mode}_expected.json").read_text())
    settings = make_settings(run_mode=mode, state_operator=operator)
    env = {"MAX_OFFSETS_PER_TRIGGER": str(max_offsets)} if max_offsets else None
    late = run_case(settings, f"excess_{mode}", env, excess_case(tmp_path, mode))
    alerts = records(settings, settings.kafka.alerts_topic)
    assert {a["kind"] for a in alerts} == {"threshold", "baseline"}
    check_fixed([a for a in alerts if a["kind"] == "threshold"], expected["threshold_alerts"],
                {"demo": 0.05, "prod": 2.0}[mode], mode)
    check_baseline([a for a in alerts if a["kind"] == "baseline"],
                   {tuple(a[:2]): a[2:] for a in expected["baseline_alerts"]}, settings.baseline.description)
    fixed_ids = {a["alert_id"] for a in alerts if a["kind"] == "threshold"}
    assert not fixed_ids & {a["alert_id"] for a in alerts if a["kind"] == "baseline"}
    assert len(records(settings, settings.kafka.dlq_topic)) == expected["dead_letters"]
    assert late == expected["late_readings_dropped"]


@pytest.mark.parametrize("operator", ["python", "jvm"])
def test_a_restart_with_new_parameters_learns_them_over_the_history(make_settings, tmp_path, operator):
    """Phase 1 learned with the archiver running; then the allowance, the persistence and the
    threshold change and the job restarts on phase 2. Its alerts are what the contract gives with
    the new parameters over the history's readings and phase 2 (tests/reference.py's model)."""
    from test_baseline import contract_model, model_readings

    from pipeline.core.history import HistoryStore
    from pipeline.core.kafka import topic_end_offsets
    from pipeline.core.settings import load_settings

    cases = excess_case(tmp_path, "demo")
    settings = make_settings(run_mode="demo", history_flush_seconds=0.5, state_operator=operator)
    changed = {"BASELINE_EXCESS_KWH": "0.005", "BASELINE_PERSIST_KWH": "0.01", "THRESHOLD_KWH": "0.04"}
    archiver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "archive"], env=settings_env(settings),
                                stdout=(tmp_path / "archiver.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        run_cli(settings, "replay", str(cases / "excess_demo_phase1.csv"))
        run_cli(settings, "stream", "--once")
        ends = topic_end_offsets(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
        wait_for("phase 1 in the history", lambda: HistoryStore(settings.history.history_root).next_offsets(
            "energy", settings.kafka.readings_topic, sorted(ends)) == ends, 120, 1)
    finally:
        archiver.terminate()
        archiver.wait(60)
    before = len(records(settings, settings.kafka.alerts_topic))

    run_cli(settings, "replay", str(cases / "excess_demo_phase2.csv"))
    restarted = run_cli(settings, "stream", "--once", extra_env=changed)
    assert "seeded the baselines of" in restarted.stderr, restarted.stderr[-3000:]
    assert re.search(r"batches 1\b", restarted.stdout), restarted.stdout  # all of phase 2 in the first batch
    after = records(settings, settings.kafka.alerts_topic)[before:]

    model, fixed_model = contract_model("demo", **changed), Expectation(60, 15, Decimal("0.04"), 600)
    for phase in (1, 2):
        readings = model_readings(OURS / f"excess_demo_phase{phase}.csv.gz")
        model.batch(readings)
        fixed_model.batch([(iso(t), h, str(kwh)) for h, t, kwh in readings])
    want = {key: [*model.end_and_sum(*key), *values] for key, values in model.alerts(in_batch=1, seeded=True).items()}
    assert want
    check_baseline([a for a in after if a["kind"] == "baseline"], want,
                   load_settings({"RUN_MODE": "demo", **changed}).baseline.description)
    fixed = {(a["household_id"], a["window_start"]) for a in after if a["kind"] == "threshold"}
    assert fixed == {(h, iso(t)) for (h, t), total in fixed_model.sums.items()
                     if total > Decimal("0.04") and 1 in fixed_model.touched[(h, t)]}
