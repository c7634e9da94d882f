"""The Streamlit alert view, run by `energy-monitor view`: four pages over the durable history,
each a file of pages/ with its own address (st.navigation).

1. /live, Live alerts: the newest alerts grouped into incidents (core/incidents.py: one per
   episode, whatever the rules that fired), each with the line that says which rules fired and
   why, and the alerts themselves; refreshed every VIEW_REFRESH_SECONDS by a fragment.
2. /top, Top households: by number of alerts over a chosen period.
3. /heatmap, Heatmap: alerts per hour of day × household, for the top N households.
4. /household, Household: its kWh per window over 24 h, the baseline band (each window's usual
   use and baseline threshold, learned from its readings as the job learns them), the fixed
   threshold and its alerts of each kind, and its latest readings (kWh per slot).
   `/household?household=ID` opens it on that household (so does `/?household=ID`).

Everything is read from the history tables (core/history.py), which the archiver keeps, so a
restarted view loses nothing. Periods end at the newest event time in the history, not at the
wall clock, so replayed or simulated data (whose clock runs ahead) shows the same way.
Metrics belong to the Grafana dashboards; this page only shows alerts and energy.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.alert import Kind
from pipeline.core.history import AlertQuery, HistoryStore, HistoryUnavailable
from pipeline.core.incidents import incidents
from pipeline.core.rules.baseline import band
from pipeline.core.settings import KWH_UNITS, BaselineRule, Rule, load_settings

log = logging.getLogger(__name__)

PAGES = ("Live alerts", "Top households", "Heatmap", "Household")
EPOCH = pd.Timestamp(0, tz="UTC")
PERIODS = {"1 hour": timedelta(hours=1), "24 hours": timedelta(days=1), "7 days": timedelta(days=7)}
TABLE_ROWS = 200
LIVE_COLUMNS = ["detected_at", "household_id", "kind", "window_start", "window_end", "kwh", "threshold_kwh", "rule",
                "mode", "alert_id"]


INCIDENT_COLUMNS = ["household_id", "kinds", "first_window_start", "last_window_end", "alerts", "peak_kwh", "why"]


def incident_table(alerts: pd.DataFrame, learning: BaselineRule | None = None) -> pd.DataFrame:
    """The alerts' incidents, newest first, each with the line that says which rules fired and why."""
    found = incidents(alerts, learning.slot_s if learning else None, learning.slots if learning else None)
    found = found.iloc[::-1].reset_index(drop=True)
    found["kinds"] = found.kinds.map(" + ".join)
    return found[INCIDENT_COLUMNS]


def top_households(counts: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n households with the most alerts (ties by id), from per-household counts."""
    totals = counts.groupby("household_id", as_index=False).alerts.sum()
    return totals.sort_values(["alerts", "household_id"], ascending=[False, True], ignore_index=True).head(n)


def hour_by_household(counts: pd.DataFrame, households: list[str]) -> pd.DataFrame:
    """Alert counts per (UTC hour, household) for these households, zeros included."""
    chosen = counts[counts.household_id.isin(households)].set_index(["hour", "household_id"]).alerts
    full = pd.MultiIndex.from_product([range(24), households], names=["hour", "household_id"])
    return chosen.reindex(full, fill_value=0).rename("alerts").reset_index()


def window_energy(slots: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """kWh per sliding window (labelled by its end) from kWh per slot; slots without readings
    count as 0, as in the stream job."""
    if slots.empty:
        return pd.DataFrame(columns=["window_end", "kwh"])
    step = pd.Timedelta(seconds=rule.slide_s)
    # Through the last window that still holds the newest slot, as the job's windows run.
    last = slots.slot_start.max() + pd.Timedelta(seconds=rule.window_s) - step
    index = pd.date_range(slots.slot_start.min(), last, freq=step, name="slot_start")
    per_slot = slots.set_index("slot_start").kwh.reindex(index, fill_value=0.0)
    sums = per_slot.rolling(f"{rule.window_s}s").sum()
    return pd.DataFrame({"window_end": index + step, "kwh": sums.to_numpy()})


VIEW_PAGES = Path(__file__).resolve().parent / "pages"
# (title, file in pages/, URL path)
PAGE_FILES = {"Live alerts": ("live.py", "live"), "Top households": ("top.py", "top"),
              "Heatmap": ("heatmap.py", "heatmap"), "Household": ("household.py", "household")}
BAND_DAYS = 7  # readings a household's band is learned from, on the Household page


def main() -> None:
    """The entry script: each page a file of pages/ with its own URL (/live, /top, ...)."""
    import streamlit as st

    st.set_page_config(page_title="Energy alerts", layout="wide")
    # Streamlit serves the default page at / only, so the default is a hidden page that opens
    # the Live page at its own address.
    start = st.Page(_start, title="Energy alerts", url_path="start", default=True, visibility="hidden")
    pages = [st.Page(VIEW_PAGES / file, title=title, url_path=url) for title, (file, url) in PAGE_FILES.items()]
    st.navigation([start, *pages]).run()


def _start() -> None:
    """The root address: the Live page, or the Household page of `?household=` (its old address)."""
    import streamlit as st

    household = st.query_params.get("household")
    if household:
        st.switch_page(VIEW_PAGES / PAGE_FILES["Household"][0], query_params={"household": household})
    st.switch_page(VIEW_PAGES / PAGE_FILES[PAGES[0]][0])


def page(name: str) -> None:
    """One page, run by its file in pages/."""
    import streamlit as st

    view = load_settings().view
    store = HistoryStore(view.history.history_root)
    st.title(f"Energy alerts · {name}")
    st.caption(f"history {view.history.history_root} · rule {view.rule.description} ({view.rule.mode})")
    pages = {"Live alerts": lambda: _live(st, store, view.view_refresh_seconds, view.baseline),
             "Top households": lambda: _top(st, store), "Heatmap": lambda: _heatmap(st, store),
             "Household": lambda: _household(st, store, view.rule, view.baseline)}
    pages[name]()


def _unavailable(st, store: HistoryStore, exc: Exception) -> None:
    st.error(f"The alert history at {store.root} cannot be read: {exc}. This page retries on every refresh.")


def _load(st, store: HistoryStore, read) -> pd.DataFrame | None:
    """read() from the history, or None after saying why there is nothing to show."""
    try:
        frame = read()
    except HistoryUnavailable as exc:
        _unavailable(st, store, exc)
        return None
    if frame.empty:
        st.info("No alerts in the history yet. They appear here a few seconds after the stream job emits them.")
        return None
    return frame


def _live(st, store: HistoryStore, refresh_s: float, learning: BaselineRule | None) -> None:
    @st.fragment(run_every=refresh_s)
    def live() -> None:
        alerts = _load(st, store, lambda: store.alerts(AlertQuery(limit=TABLE_ROWS)))
        if alerts is None:
            return
        found = incident_table(alerts, learning)
        left, right = st.columns(2)
        left.metric("Incidents in the newest alerts", len(found))
        right.metric("Newest alerts shown", len(alerts))
        # Plain tables (real DOM rows, newest first) rather than a canvas grid: the feed is short.
        st.table(found.set_index("household_id"))
        with st.expander("The alerts themselves", expanded=False):
            st.table(alerts.iloc[::-1][LIVE_COLUMNS].set_index("detected_at"))
    live()


def _period(st) -> timedelta:
    return PERIODS[st.sidebar.selectbox("Period", list(PERIODS), index=1)]


def _top(st, store: HistoryStore) -> None:
    period, n = _period(st), st.sidebar.slider("Households", 5, 50, 10)
    counts = _load(st, store, lambda: store.alert_counts(period))
    if counts is None:
        return
    top = top_households(counts, n)
    st.metric("Alerts in the period", int(counts.alerts.sum()))
    st.bar_chart(top.set_index("household_id"), horizontal=True, sort="-alerts")
    st.dataframe(top, hide_index=True)


def _heatmap(st, store: HistoryStore) -> None:
    import altair as alt

    period, n = _period(st), st.sidebar.slider("Households", 5, 50, 10)
    counts = _load(st, store, lambda: store.alert_counts(period, by_hour=True))
    if counts is None:
        return
    households = top_households(counts, n).household_id.tolist()
    cells = hour_by_household(counts, households)
    st.altair_chart(alt.Chart(cells).mark_rect().encode(
        x=alt.X("hour:O", title="hour of day (UTC)"), y=alt.Y("household_id:N", title="household", sort=households),
        color=alt.Color("alerts:Q", scale=alt.Scale(scheme="orangered")),
        tooltip=["household_id", "hour", "alerts"]), width="stretch")


def _household(st, store: HistoryStore, rule: Rule, learning: BaselineRule | None) -> None:
    household = st.sidebar.text_input("Household", value=st.query_params.get("household", ""),
                                      placeholder="most alerts in 24 h").strip()
    if household:
        st.query_params["household"] = household  # the address names the household shown
    try:
        if not household:
            counts = store.alert_counts(PERIODS["24 hours"])
            household = top_households(counts, 1).household_id.iloc[0] if not counts.empty else ""
        if not household:
            st.info("No data in the history yet: enter a household id in the sidebar.")
            return
        slots = store.energy(household, hours=24.0 * (BAND_DAYS if learning else 1))
        mine = store.alerts(AlertQuery(household=household))
    except HistoryUnavailable as exc:
        _unavailable(st, store, exc)
        return
    st.subheader(household)
    if slots.empty:
        st.info(f"No readings of {household} in the history.")
        return
    shown = slots[slots.slot_start > slots.slot_start.max() - timedelta(hours=24)]
    windows = window_energy(shown, rule)
    if learning:
        windows = windows.join(window_band(slots, windows.window_end, rule, learning))
    _energy_chart(st, windows, mine, rule)
    st.subheader("Latest readings (kWh per slot)")
    st.table(shown.tail(20).iloc[::-1].set_index("slot_start"))


def window_band(slots: pd.DataFrame, window_end: pd.Series, rule: Rule, learning: BaselineRule) -> pd.DataFrame:
    """The baseline band of each window (by its end): its slot's usual level and the level above
    which use counts as excess (the usual level and the allowance), learned from these slots'
    readings as the job learns them; NaN where the slot is not warm yet."""
    seconds = (slots.slot_start - EPOCH) // pd.Timedelta(seconds=1)
    units = np.rint(slots.kwh.to_numpy(dtype=float) * KWH_UNITS).astype(np.int64)
    starts = ((window_end - EPOCH) // pd.Timedelta(seconds=1) - rule.window_s) // rule.slide_s
    learned = band(learning, seconds.to_numpy(np.int64) // rule.slide_s, units, starts.to_numpy(np.int64))
    warm = learned.warm.to_numpy()
    return pd.DataFrame({"baseline_kwh": np.where(warm, learned.usual, np.nan),
                         "baseline_threshold_kwh": np.where(warm, learned.limit, np.nan)}, index=window_end.index)


def _energy_chart(st, windows: pd.DataFrame, alerts: pd.DataFrame, rule: Rule) -> None:
    import altair as alt

    utc_time = {"scale": alt.Scale(type="utc"), "axis": alt.Axis(format="%H:%M")}
    x = alt.X("window_end:T", title="window end (UTC)", **utc_time)
    layers = []
    if "baseline_kwh" in windows:
        base = alt.Chart(windows)
        layers += [base.mark_area(color="orange", opacity=0.25).encode(x=x, y="baseline_kwh:Q", y2="baseline_threshold_kwh:Q"),
                   base.mark_line(color="orange", strokeWidth=1).encode(x=x, y="baseline_kwh:Q")]
    layers.append(alt.Chart(windows).mark_line().encode(x=x, y=alt.Y("kwh:Q", title=f"kWh per {rule.window_s // 60} min window")))
    layers.append(alt.Chart(pd.DataFrame({"kwh": [rule.threshold]})).mark_rule(color="red", strokeDash=[4, 4]).encode(y="kwh:Q"))
    start = windows.window_end.min() if not windows.empty else None
    marked = alerts[alerts.window_end >= start] if start is not None else alerts
    kinds = [k.value for k in Kind]
    # A window often alerts by both rules: baseline marks come last and larger, so they stay visible.
    points = marked[["window_end", "kwh", "kind", "alert_id"]].sort_values("kind", key=lambda k: k == Kind.BASELINE.value)
    layers.append(alt.Chart(points).mark_point(filled=True, opacity=0.9).encode(
        x=alt.X("window_end:T", **utc_time), y="kwh:Q",
        color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=["red", "darkorange"]), title="alert"),
        shape=alt.Shape("kind:N", scale=alt.Scale(domain=kinds, range=["circle", "triangle-up"]), title="alert"),
        size=alt.Size("kind:N", scale=alt.Scale(domain=kinds, range=[50, 170]), title="alert"),
        tooltip=["window_end", "kwh", "kind", "alert_id"]))
    st.altair_chart(alt.layer(*layers), width="stretch")
    counts = marked.kind.value_counts()
    band_note = (f"; shaded: the baseline band, from the usual use of the window's slot to the level above which "
                 f"use counts as excess, "
                 f"learned from the last {BAND_DAYS} days of the history" if "baseline_kwh" in windows else "")
    st.caption(f"{len(marked)} alerts in these 24 h ({counts.get(Kind.THRESHOLD.value, 0)} threshold, "
               f"{counts.get(Kind.BASELINE.value, 0)} baseline); dashed line: the threshold ({rule.threshold:g} kWh){band_note}")


if __name__ == "__main__":
    main()
