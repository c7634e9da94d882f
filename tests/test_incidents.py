"""One incident per episode (core/incidents.py): a household's alerts of every kind whose windows
start at most one window apart, with the rules that fired and why."""
from __future__ import annotations

import math

import pandas as pd

from pipeline.core.incidents import documents, incidents


def alert(household, start, kind, kwh, usual=None, minutes=15, threshold=2.0):
    begin = pd.Timestamp(start, tz="UTC")
    return {"household_id": household, "window_start": begin, "window_end": begin + pd.Timedelta(minutes=minutes),
            "kind": kind, "kwh": kwh, "threshold_kwh": threshold if kind == "threshold" else kwh * 0.9,
            "baseline_kwh": usual}


def test_a_household_s_threshold_and_baseline_alerts_of_one_episode_make_one_incident():
    frame = pd.DataFrame([
        alert("H001", "2026-07-02T02:00:00", "baseline", 1.2, usual=0.3),
        alert("H001", "2026-07-02T02:07:30", "threshold", 2.1),
        alert("H001", "2026-07-02T02:15:00", "baseline", 1.4, usual=0.4),
        alert("H001", "2026-07-02T02:22:45", "threshold", 2.4),
    ])
    found = incidents(frame, slot_s=3600, slots=24)
    assert len(found) == 1
    one = found.iloc[0]
    assert (one.kinds, one.alerts, one.peak_kwh) == (["threshold", "baseline"], 4, 2.4)
    assert one.baseline_kwh == 0.3 and one.peak_ratio == 4.0  # the baseline alert furthest above its usual use
    assert one.why == "4× its usual 0.3 kWh for 02:00–03:00; over the fixed 2 kWh for 38 minutes"


def test_incidents_break_where_a_household_s_alerts_lie_more_than_a_window_apart():
    frame = pd.DataFrame([
        alert("H001", "2026-07-02T14:00:00", "threshold", 2.1),
        alert("H001", "2026-07-02T14:15:00", "baseline", 0.8, usual=0.2),  # one window later: the same incident
        alert("H001", "2026-07-02T14:45:00", "baseline", 0.9, usual=0.2),  # two windows later: a new one
        alert("H002", "2026-07-02T14:05:00", "threshold", 2.2),
    ])
    found = incidents(frame)
    assert list(zip(found.household_id, found.kinds.map(tuple), found.alerts)) == [
        ("H001", ("threshold", "baseline"), 2), ("H002", ("threshold",), 1), ("H001", ("baseline",), 1)]
    assert found.why.iloc[2] == "4.5× its usual 0.2 kWh"  # slots that do not divide the day name no hours
    docs = documents(found)
    assert docs[1]["kinds"] == ["threshold"] and "baseline_kwh" not in docs[1] and docs[0]["alerts"] == 2
    assert docs[0]["first_window_start"] == "2026-07-02T14:00:00Z" and math.isclose(docs[0]["peak_ratio"], 4.0)
