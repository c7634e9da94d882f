"""The shared conformance cases, run exactly as their README says: replay, stream --once, twice."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from decimal import Decimal

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

from helpers import SHARED, records, run_cli

CASES = SHARED / "conformance"


@pytest.mark.parametrize("mode", ["demo", "prod"])
def test_conformance_case(make_settings, mode):
    expected = json.loads((CASES / f"{mode}_expected.json").read_text())
    settings = make_settings(run_mode=mode)
    late = 0
    for phase in (1, 2):
        out = run_cli(settings, "replay", str(CASES / f"{mode}_phase{phase}.csv")).stdout
        assert "failed 0" in out
        summary = run_cli(settings, "stream", "--once").stdout
        late += int(re.search(r"late readings dropped (\d+)", summary).group(1))
        published = re.search(r"published (\d+)", out).group(1)
        assert re.search(rf"readings {published} in \d+\.\d s \([\d,]+/s\)", summary), summary

    alerts = records(settings, settings.alerts_topic)
    ids_by_window = defaultdict(set)
    for alert in alerts:
        key = (alert["household_id"], alert["window_start"], alert["window_end"])
        ids_by_window[key].add(alert["alert_id"])
        assert alert["mode"] == mode
        assert alert["threshold_kwh"] == expected["threshold_kwh"]
    final_sums = {tuple(a[:3]): Decimal(str(a[3])) for a in expected["alerts"]}
    assert set(ids_by_window) == set(final_sums)
    assert all(len(ids) == 1 for ids in ids_by_window.values())
    for alert in alerts:
        key = (alert["household_id"], alert["window_start"], alert["window_end"])
        assert Decimal(str(expected["threshold_kwh"])) < Decimal(str(alert["kwh"])) <= final_sums[key] + Decimal("0.000005")

    assert len(records(settings, settings.dlq_topic)) == expected["dead_letters"]
    assert late == expected["late_readings_dropped"]
