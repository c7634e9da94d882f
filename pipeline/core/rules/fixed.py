"""The fixed rule (docs/contract.md, "Modes and the fixed rule"): a window alerts the first time
its sum is strictly above the threshold; the windows that alerted are remembered until the
watermark closes them, so none alerts twice. Numpy on a state bucket's arrays, like the pane table
whose windows it judges."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core.rules.windows import Windows


@dataclass(frozen=True)
class FixedState:
    """The windows that alerted and are still open: household code and start pane of each."""

    households: np.ndarray
    starts: np.ndarray

    @classmethod
    def empty(cls) -> "FixedState":
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none)

    def is_empty(self) -> bool:
        return len(self.starts) == 0

    def to_bytes(self) -> bytes:
        return np.concatenate([self.households, self.starts]).astype(np.int64).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "FixedState":
        households, starts = np.frombuffer(blob, dtype=np.int64).reshape(2, -1)
        return cls(households, starts)


@dataclass(frozen=True)
class FixedResult:
    state: FixedState
    alerts: pd.DataFrame  # household, start_pane, units, crossed_ms


def pair_keys(households: np.ndarray, starts: np.ndarray, *more: np.ndarray) -> list[np.ndarray]:
    """(household, start pane) pairs of several sets as int64 keys that compare equal exactly when
    the pairs do: `more` holds further (households, starts) arrays, alternating."""
    sets = [(households, starts)] + list(zip(more[::2], more[1::2]))
    every_start = np.concatenate([s for _, s in sets])
    if len(every_start) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in sets]
    names = np.unique(np.concatenate([h for h, _ in sets]))
    base, span = int(every_start.min()), int(every_start.max() - every_start.min()) + 1
    return [np.searchsorted(names, h).astype(np.int64) * span + (s - base) for h, s in sets]


def step(state: FixedState, threshold_units: int, windows: Windows, min_open: int) -> FixedResult:
    """The batch's touched windows judged, once per run of windows with the same sum; the windows
    of the runs above the threshold, less those remembered, alert; the alerted windows that are
    still open are kept."""
    over = np.flatnonzero(windows.units > threshold_units)
    counts = windows.counts[over]
    run = np.repeat(over, counts)
    starts = windows.starts[run] + np.arange(len(run)) - np.repeat(np.cumsum(counts) - counts, counts)
    keys, remembered = pair_keys(windows.households[run], starts, state.households, state.starts)
    fresh = ~np.isin(keys, remembered)
    run, starts = run[fresh], starts[fresh]
    households = windows.households[run]
    alerts = pd.DataFrame({"household": households, "start_pane": starts, "units": windows.units[run],
                           "crossed_ms": windows.crossed_ms(households, starts)})
    every_household = np.concatenate([state.households, households])
    every_start = np.concatenate([state.starts, starts])
    still_open = every_start >= min_open
    return FixedResult(FixedState(every_household[still_open], every_start[still_open]), alerts)
