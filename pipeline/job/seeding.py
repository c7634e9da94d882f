"""What the baseline rule starts from when its parameters change: the history's readings.

The contract: whenever a parameter changes (a new checkpoint for a new mode, window, slot layout
or alpha; or a scoring parameter on the same checkpoint, since clipping depends on it), the
baselines are those the rule gives, with the new parameters, over the readings the history
holds. The job notes in its checkpoint directory (RULE_FILE) which baseline rule its state was
learned under; at start, when that differs, it learns from the history's energy table on the
driver and hands the result to its state function (baseline.adopt), which each bucket takes its
households from. Without a history (or an empty one) a changed scoring parameter continues from
what the state learned.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pipeline.core.rules.baseline import Seed, fingerprint, learn
from pipeline.core.clock import utc_stamp
from pipeline.core.settings import JobSettings
from pipeline.core.history import HistoryStore, HistoryUnavailable
from pipeline.job.panes import household_code

log = logging.getLogger(__name__)

# In the checkpoint directory, beside what Spark writes there.
RULE_FILE = "energy-baseline-rule"


def baseline_seed(job: JobSettings, checkpoint: Path) -> Seed | None:
    """The seed for this start, or None when the state's baselines stand as they are."""
    rule = job.baseline
    if rule is None:
        return None
    marker = checkpoint / RULE_FILE
    previous = marker.read_text().strip() if marker.exists() else None
    if previous == rule.key:
        return None
    started = time.monotonic()
    try:
        windows = HistoryStore(job.history.history_root).learning_windows(rule.window_s)
    except HistoryUnavailable as exc:
        log.warning("baselines not seeded, the history cannot be read: %s", exc)
        windows = None
    marker.write_text(rule.key + "\n")
    if windows is None:
        log.info("no energy history in %s: the baselines continue from the job's state", job.history.history_root)
        return None
    codes = {name: household_code(name) for name in np.unique(windows.household_id)}
    households = np.array([codes[name] for name in windows.household_id], dtype=np.int64)
    panes_per_window = rule.window_s // rule.slide_s
    state = learn(rule, households, windows.j * panes_per_window, windows.units, windows.newest_s // rule.slide_s)
    warm = int((state.count.reshape(-1, rule.slots) >= rule.warmup).all(axis=1).sum()) if len(state.names) else 0
    log.info("seeded the baselines of %d households (%d slots, %d of them warm in every slot) from %d learning "
             "windows in %s, up to %s, in %.1f s", len(state.names), len(state.mean), warm, len(windows.j),
             job.history.history_root, utc_stamp(windows.newest_s), time.monotonic() - started)
    return Seed(fingerprint(f"{rule.key}|{time.time_ns()}"), state)
