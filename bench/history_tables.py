"""The history at 1,000 households × 24 h: its size per day, the archiver's commit time, and
the time each alert-view page takes to build.

The simulator's readings (one per household per 15 s, demo rule) are summed per slot and their
alerts computed with the view's own window arithmetic; both go through `HistoryStore.commit`,
the archiver's write path, in one commit per 5 simulated minutes. Each page is then built with
streamlit.testing (the server-side work of a page load; the browser's drawing is not included),
three times, median reported. Run: .venv/bin/python bench/history.py [--households N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipeline.view import app as alert_view
from pipeline.core.settings import with_values
from pipeline.core.history import HistoryStore, alerts_table, energy_table
from pipeline.ingest.simulator import Simulator

T0 = 1_783_000_800
COMMIT_S = 300


def readings(households: int, hours: float) -> pd.DataFrame:
    ticks = int(hours * 3600 / 15)
    rows = [line.split(",") for _, line in Simulator(households, 15, 10.0, 5, T0).lines(ticks)]
    frame = pd.DataFrame(rows, columns=["stamp", "household_id", "kwh"])
    frame["slot_start"] = pd.to_datetime(frame.stamp, utc=True).astype("int64") // 10**9 // 15 * 15
    return frame.assign(kwh=frame.kwh.astype(float), readings=1)[["household_id", "slot_start", "kwh", "readings"]]


def alerts_of(slots: pd.DataFrame, rule) -> list[dict]:
    out = []
    for household, mine in slots.groupby("household_id"):
        frame = mine.assign(slot_start=pd.to_datetime(mine.slot_start, unit="s", utc=True))
        windows = alert_view.window_energy(frame, rule)
        for end, kwh in zip(windows.window_end, windows.kwh):
            if kwh > rule.threshold:
                start = int(end.timestamp()) - rule.window_s
                out.append({"alert_id": hashlib.sha256(f"{household}|{rule.key}|{start}".encode()).hexdigest()[:32],
                            "household_id": household, "window_start": pd.Timestamp(start, unit="s", tz="UTC").isoformat(),
                            "window_end": end.isoformat(), "kwh": round(kwh, 6), "threshold_kwh": rule.threshold,
                            "rule": rule.description, "mode": rule.mode, "detected_at": end.isoformat()})
    return out


def table_bytes(root: str, table: str) -> int:
    """Bytes of the data files the table's current version references (not the vacuum backlog)."""
    from deltalake import DeltaTable

    uris = DeltaTable(f"{root}/{table}").file_uris()
    return sum(Path(uri.removeprefix("file://")).stat().st_size for uri in uris)


def write(store: HistoryStore, slots: pd.DataFrame, alerts: list[dict]) -> dict:
    store.create()
    frame = pd.DataFrame(alerts)
    alert_slot = pd.to_datetime(frame.window_end, utc=True).astype("int64") // 10**9 // COMMIT_S
    timings = {"energy": [], "alerts": []}
    for i, (chunk, part) in enumerate(slots.groupby(slots.slot_start // COMMIT_S)):
        started = time.perf_counter()
        store.commit("energy", energy_table(part), "readings", {0: i + 1})
        timings["energy"].append(time.perf_counter() - started)
        mine = frame[alert_slot == chunk]
        if len(mine):
            started = time.perf_counter()
            store.commit("alerts", alerts_table(mine.to_dict("records")), "alerts", {0: i + 1})
            timings["alerts"].append(time.perf_counter() - started)
    return {table: {"commits": len(t), "median_s": round(statistics.median(t), 3), "max_s": round(max(t), 3)}
            for table, t in timings.items()}


def page_seconds(root: str) -> dict:
    from streamlit.testing.v1 import AppTest

    os.environ.update({"HISTORY_ROOT": root, "RUN_MODE": "demo"})
    out = {}
    for page in alert_view.PAGES:
        runs = []
        for _ in range(3):
            at = AppTest.from_file(alert_view.__file__, default_timeout=120)
            at.run()
            started = time.perf_counter()
            at.switch_page(f"pages/{alert_view.PAGE_FILES[page][0]}").run()
            runs.append(time.perf_counter() - started)
            assert not at.exception and not at.error, (page, at.exception, at.error)
        out[page] = round(statistics.median(runs), 2)
        print(f"  {page:<16} {out[page]:>6} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "history.json")
    args = parser.parse_args()
    rule = with_values(None, run_mode="demo").rule
    print(f"simulating {args.households} households x {args.hours:g} h", flush=True)
    slots = readings(args.households, args.hours)
    alerts = alerts_of(slots, rule)
    prod_alerts = len(alerts_of(slots, with_values(None, run_mode="prod").rule))
    print(f"  {len(slots):,} slot rows, {len(alerts):,} alerts (demo rule; {prod_alerts:,} with the prod rule)",
          flush=True)
    with tempfile.TemporaryDirectory() as folder:
        store = HistoryStore(folder)
        print("writing through HistoryStore.commit", flush=True)
        commits = write(store, slots, alerts)
        print(f"  {json.dumps(commits)}", flush=True)
        written = {t: table_bytes(folder, t) for t in ("alerts", "energy")}
        started = time.perf_counter()
        maintained = store.maintain(retention_days=7)
        maintain_s = round(time.perf_counter() - started, 1)
        compacted = {t: table_bytes(folder, t) for t in ("alerts", "energy")}
        print(f"  table bytes as written {written}, after maintain ({maintain_s} s) {compacted}", flush=True)
        print("page build times (median of 3)", flush=True)
        pages = page_seconds(folder)
    per_day = 24 / args.hours
    result = {"households": args.households, "hours": args.hours, "slot_rows": len(slots), "alerts": len(alerts),
              "alerts_prod_rule": prod_alerts,
              "commit_seconds": commits, "maintain_seconds": maintain_s, "maintained": maintained,
              "bytes_as_written": written, "bytes_after_maintain": compacted,
              "bytes_per_day_after_maintain": {t: round(b * per_day) for t, b in compacted.items()},
              "page_seconds": pages}
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
