"""The job's state step (pipeline/job/state.py) driven batch by batch without Spark, as the
stateful operator drives it: each bucket's state stored as bytes between batches."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from pipeline.core.alert import Kind
from pipeline.core.rules.baseline import BaselineState
from pipeline.core.rules.fixed import FixedState
from pipeline.job.panes import PaneState, Readings
from pipeline.job.state import Rules, Stored, step


def empty() -> Stored:
    return Stored(PaneState.empty(), FixedState.empty(), BaselineState.empty())


def stored_again(state: Stored) -> Stored:
    """The state as Spark hands it back: through its bytes."""
    panes, alerted, learned = state.blobs() or (PaneState.empty().to_bytes(), FixedState.empty().to_bytes(), b"")
    return Stored(PaneState.from_bytes(panes), FixedState.from_bytes(alerted), BaselineState.from_bytes(learned))


def run_step(state: Stored, rule, readings: dict, watermark_ms: int, baseline=None, seed=None) -> SimpleNamespace:
    """One batch; `readings`: arrays households, panes, units, and optionally record_ms and seconds."""
    n = len(readings["households"])
    zeros = np.zeros(n, dtype=np.int64)
    batch = Readings(np.asarray(readings["households"], dtype=np.int64), np.asarray(readings["panes"], dtype=np.int64),
                     np.asarray(readings["units"], dtype=np.int64),
                     np.asarray(readings.get("record_ms", zeros), dtype=np.int64),
                     np.asarray(readings.get("seconds", zeros), dtype=np.int64))
    after, alerts, counts = step(state, Rules(rule, baseline, 2**62, seed), batch, watermark_ms)
    return SimpleNamespace(state=after, alerts=alerts[Kind.THRESHOLD], baseline_alerts=alerts.get(Kind.BASELINE),
                           late_readings=counts["late"], duplicates=counts["duplicates"], warm=counts["warm"])
