"""Incidents: what an operator sees of alerts. One per episode of a household: its alerts of every
kind whose window starts lie at most one window apart, each incident saying which rules fired and
why. `energy-monitor history --incidents`, the view's Live page and the detection bench all use
this one grouping."""
from __future__ import annotations

import pandas as pd

from pipeline.core import alert
from pipeline.core.settings import human_duration

FIELDS = ["household_id", "kinds", "first_window_start", "last_window_end", "alerts", "peak_kwh",
          "peak_window_start", "baseline_kwh", "peak_ratio", "why"]
_EPOCH = pd.Timestamp(0, tz="UTC")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def incidents(alerts: pd.DataFrame, slot_s: int | None = None, slots: int | None = None) -> pd.DataFrame:
    """Alerts (rows of the alerts table) -> incidents, oldest first. `slot_s` and `slots` (the
    baseline rule's slot layout) let a reason name its slot's hours when slots divide the day."""
    if alerts.empty:
        return pd.DataFrame(columns=FIELDS)
    kind, usual = alert.KIND.name, alert.BASELINE_USUAL.name
    rows = alerts.assign(**{kind: alerts[kind].fillna(alert.DEFAULT_KIND.value) if kind in alerts
                            else alert.DEFAULT_KIND.value})
    if usual not in rows:
        rows[usual] = float("nan")
    rows = rows.sort_values(["household_id", "window_start", kind], kind="stable", ignore_index=True)
    length = rows.window_end - rows.window_start
    reach = rows.groupby("household_id").window_start.cummax().shift()
    new = (rows.household_id != rows.household_id.shift()) | (rows.window_start - reach > length)
    rows["incident"] = new.cumsum()
    groups = rows.groupby("incident", sort=False)
    peak = rows.loc[groups.kwh.idxmax()].set_index("incident")
    out = pd.DataFrame({
        "household_id": groups.household_id.first(),
        "kinds": groups[kind].agg(lambda k: sorted(set(k), key=[x.value for x in alert.Kind].index)),
        "first_window_start": groups.window_start.min(), "last_window_end": groups.window_end.max(),
        "alerts": groups.size(), "peak_kwh": peak.kwh, "peak_window_start": peak.window_start,
    })
    learned = rows[rows[kind] == alert.Kind.BASELINE.value]
    if len(learned):
        ratio = learned.kwh / learned[usual]
        best = learned.assign(ratio=ratio).sort_values("ratio", kind="stable").groupby("incident").last()
        out["baseline_kwh"], out["peak_ratio"] = best[usual], best.ratio.round(2)
        out["baseline_window_start"] = best.window_start
    else:
        out["baseline_kwh"] = out["peak_ratio"] = float("nan")
        out["baseline_window_start"] = pd.NaT
    fixed = rows[rows[kind] == alert.Kind.THRESHOLD.value].groupby("incident")
    out["threshold_kwh"] = fixed[alert.THRESHOLD.name].first()
    out["why"] = [_why(i, slot_s, slots) for i in out.itertuples()]
    out = out.sort_values(["first_window_start", "household_id"], kind="stable", ignore_index=True)
    return out[FIELDS]


def _why(incident, slot_s: int | None, slots: int | None) -> str:
    """Which rules fired, and why, in one line."""
    reasons = []
    if alert.Kind.BASELINE.value in incident.kinds:
        reasons.append(f"{incident.peak_ratio:g}× its usual {incident.baseline_kwh:.4g} kWh"
                       f"{_slot_hours(incident.baseline_window_start, slot_s, slots)}")
    if alert.Kind.THRESHOLD.value in incident.kinds:
        minutes = max(1, round((incident.last_window_end - incident.first_window_start).total_seconds() / 60))
        reasons.append(f"over the fixed {incident.threshold_kwh:g} kWh for {human_duration(60 * minutes)}")
    return "; ".join(reasons)


def _slot_hours(window_start: pd.Timestamp, slot_s: int | None, slots: int | None) -> str:
    """' for 02:00–03:00' when the slots divide the day (prod: the hour of day), else ''."""
    if not slot_s or not slots or slots < 2 or slot_s * slots != 86400:
        return ""
    first = (window_start - _EPOCH) // pd.Timedelta(seconds=slot_s) % slots * slot_s
    clock = lambda s: f"{s // 3600 % 24:02d}:{s % 3600 // 60:02d}"
    return f" for {clock(first)}–{clock(first + slot_s)}"


def documents(frame: pd.DataFrame) -> list[dict]:
    """Incidents as JSON documents: times as UTC stamps; the baseline's figures only when it fired."""
    out = frame.copy()
    for name in ("first_window_start", "last_window_end", "peak_window_start"):
        out[name] = out[name].dt.strftime(_STAMP)
    records = out.astype(object).to_dict("records")
    for record in records:
        record["alerts"] = int(record["alerts"])
        record["kinds"] = list(record["kinds"])
        if alert.Kind.BASELINE.value not in record["kinds"]:
            del record["baseline_kwh"], record["peak_ratio"]
    return records
