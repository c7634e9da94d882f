"""The alerting state machine: per-household pane sums and the windows that already alerted.

A sliding window of `k` slides is the sum of `k` consecutive slide-sized panes, so each reading
is added to exactly one pane instead of being copied into `k` windows. After each micro-batch
the windows touched by the batch are summed, and a window alerts the first time its sum
exceeds the threshold; it is remembered until the watermark closes it, so it never alerts twice.

Semantics match Spark's `window(event_time, W, S)` with a watermark: windows are aligned to
the epoch, a reading counts in every open window that contains it, and a window is closed
once its end <= watermark. A reading all of whose windows are closed is late: it is dropped
and counted. Energy is held in integer units (nano-kWh) so sums are exact and independent of
the order readings arrive in.

Everything here is numpy on whole arrays: one call handles every household of a state bucket.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

# pyspark's Arrow serializer (in every Python worker) concatenates the frames the state
# function returns, and pandas 2.2 warns about their all-null columns on every batch. This
# module is what each worker imports of ours, so the filter is set here.
warnings.filterwarnings("ignore", category=FutureWarning,
                        message="The behavior of DataFrame concatenation with empty or all-NA entries")

HOUSEHOLD_DIGITS_SHIFT = 40  # 10**12 (the most digits an id has) < 2**40


def household_code(household_id: str) -> int:
    """`H<digits>` as one integer that keeps leading zeros: digit count << 40 | value. The job
    computes the same in Spark (stream.household_code), so the id crosses into Python as an
    integer."""
    digits = household_id[1:]
    return (len(digits) << HOUSEHOLD_DIGITS_SHIFT) | int(digits)


def household_id(code: int) -> str:
    """The inverse of household_code (the job's is stream.household_text)."""
    width = int(code) >> HOUSEHOLD_DIGITS_SHIFT
    return "H" + str(int(code) & ((1 << HOUSEHOLD_DIGITS_SHIFT) - 1)).zfill(width)


@dataclass(frozen=True)
class PaneState:
    """A bucket's state as int64 arrays; households are household_code() values."""

    households: np.ndarray  # one entry per (household, pane)
    panes: np.ndarray  # pane index: epoch seconds // slide
    units: np.ndarray  # energy in the pane
    alerted_households: np.ndarray
    alerted_starts: np.ndarray  # pane index of each alerted window's start

    @classmethod
    def empty(cls) -> "PaneState":
        zero = np.array([], dtype=np.int64)
        return cls(zero, zero, zero, zero, zero)

    def is_empty(self) -> bool:
        return len(self.panes) == 0 and len(self.alerted_starts) == 0

    def to_bytes(self) -> tuple[bytes, bytes]:
        """The pane table run-length encoded by household, with panes as offsets from the
        smallest and each column in int32 where its values fit; the alerted windows as raw
        int64. A live batch hands every touched bucket's state to Spark and back, so its size
        is paid each batch (a third of raw int64 columns for 100 panes a household)."""
        return (_encode_panes(self.households, self.panes, self.units),
                np.concatenate([self.alerted_households, self.alerted_starts]).astype(np.int64).tobytes())

    @classmethod
    def from_bytes(cls, panes_blob: bytes, alerted_blob: bytes) -> "PaneState":
        h, p, u = _decode_panes(panes_blob)
        ah, s = np.frombuffer(alerted_blob, dtype=np.int64).reshape(2, -1)
        return cls(h, p, u, ah, s)


# Header of an encoded pane table: rows, households, smallest pane, and whether the pane
# offsets and the units are int64 (1) or int32 (0).
_HEADER = 5


def _narrow(values: np.ndarray) -> tuple[np.ndarray, int]:
    if len(values) == 0 or (values.min() >= np.iinfo(np.int32).min and values.max() <= np.iinfo(np.int32).max):
        return values.astype(np.int32), 0
    return values.astype(np.int64), 1


def _encode_panes(households: np.ndarray, panes: np.ndarray, units: np.ndarray) -> bytes:
    """Rows of one household must be adjacent (advance() keeps them so)."""
    starts = np.flatnonzero(np.concatenate([[True], households[1:] != households[:-1]])) if len(households) else (
        np.array([], dtype=np.int64))
    runs = np.diff(np.append(starts, len(households)))
    base = int(panes.min()) if len(panes) else 0
    offsets, wide_panes = _narrow(panes - base)
    narrow_units, wide_units = _narrow(units)
    header = np.array([len(panes), len(starts), base, wide_panes, wide_units], dtype=np.int64)
    return b"".join([header.tobytes(), households[starts].astype(np.int64).tobytes(), runs.astype(np.int32).tobytes(),
                     offsets.tobytes(), narrow_units.tobytes()])


def _decode_panes(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, n_households, base, wide_panes, wide_units = np.frombuffer(blob, dtype=np.int64, count=_HEADER).tolist()
    at = _HEADER * 8
    names = np.frombuffer(blob, dtype=np.int64, count=n_households, offset=at)
    at += 8 * n_households
    runs = np.frombuffer(blob, dtype=np.int32, count=n_households, offset=at)
    at += 4 * n_households
    pane_type = np.int64 if wide_panes else np.int32
    offsets = np.frombuffer(blob, dtype=pane_type, count=rows, offset=at)
    at += np.dtype(pane_type).itemsize * rows
    units = np.frombuffer(blob, dtype=np.int64 if wide_units else np.int32, count=rows, offset=at)
    return np.repeat(names, runs), offsets.astype(np.int64) + base, units.astype(np.int64)


@dataclass(frozen=True)
class StepResult:
    state: PaneState
    alerts: pd.DataFrame  # household (code), start_pane, units, crossed_ms
    late_readings: int


def first_open_start(watermark_ms: int, slide_s: int, k: int) -> int:
    """Smallest window-start pane whose window [s, s+k) ends after the watermark."""
    return watermark_ms // (slide_s * 1000) - k + 1


@dataclass(frozen=True)
class _Keys:
    """(household, pane) pairs as single int64 keys `code * span + (pane - base)`, which order
    panes by household then time. The margin of k on both sides keeps a window's range
    [s, s+k) inside its own household's key range."""

    names: np.ndarray  # household of each code
    base: int
    span: int

    def encode(self, codes: np.ndarray, panes: np.ndarray) -> np.ndarray:
        return codes.astype(np.int64) * self.span + (panes - self.base)

    def households(self, keys: np.ndarray) -> np.ndarray:
        return self.names[keys // self.span]

    def panes(self, keys: np.ndarray) -> np.ndarray:
        return (keys % self.span) + self.base


def advance(state: PaneState, households: np.ndarray, panes: np.ndarray, units: np.ndarray,
            watermark_ms: int, slide_s: int, k: int, threshold_units: int,
            record_ms: np.ndarray | None = None) -> StepResult:
    """Apply one micro-batch of valid readings to a bucket's state.

    `record_ms` (the readings' Kafka record times) gives each alert its `crossed_ms`: the
    newest record time among this batch's readings in the window, that is when the reading
    that made it cross reached Kafka (a window alerts in the batch of its crossing reading)."""
    min_open = first_open_start(watermark_ms, slide_s, k)
    on_time = panes >= min_open
    late = int(len(panes) - on_time.sum())
    record_ms = np.zeros(len(panes), dtype=np.int64) if record_ms is None else record_ms
    households, panes, units, record_ms = households[on_time], panes[on_time], units[on_time], record_ms[on_time]

    all_panes = np.concatenate([state.panes, panes, state.alerted_starts])
    if len(all_panes) == 0:
        return StepResult(state, _no_alerts(), late)
    codes, names = pd.factorize(np.concatenate([state.households, households, state.alerted_households]))
    names = np.asarray(names)
    n_state, n_batch = len(state.households), len(households)
    base = int(all_panes.min()) - k
    keys = _Keys(names, base, int(all_panes.max()) - base + k + 1)
    batch_keys = keys.encode(codes[n_state:n_state + n_batch], panes)
    alerted_keys = keys.encode(codes[n_state + n_batch:], state.alerted_starts)

    sums = pd.Series(np.concatenate([state.units, units])).groupby(
        np.concatenate([keys.encode(codes[:n_state], state.panes), batch_keys])).sum()
    pane_keys = sums.index.to_numpy(dtype=np.int64)
    prefix = np.concatenate([[0], np.cumsum(sums.to_numpy(dtype=np.int64))])

    candidates = _window_starts(np.unique(batch_keys), k)
    candidates = candidates[keys.panes(candidates) >= min_open]
    window_units = (prefix[np.searchsorted(pane_keys, candidates + k)]
                    - prefix[np.searchsorted(pane_keys, candidates)])
    fires = (window_units > threshold_units) & ~np.isin(candidates, alerted_keys)
    fired_keys = candidates[fires]

    keep_panes = keys.panes(pane_keys) >= min_open
    alerted = np.concatenate([alerted_keys, fired_keys])
    alerted = alerted[keys.panes(alerted) >= min_open]
    new_state = PaneState(keys.households(pane_keys[keep_panes]), keys.panes(pane_keys[keep_panes]),
                          sums.to_numpy(dtype=np.int64)[keep_panes], keys.households(alerted), keys.panes(alerted))
    alerts = pd.DataFrame({"household": keys.households(fired_keys), "start_pane": keys.panes(fired_keys),
                           "units": window_units[fires],
                           "crossed_ms": _newest_in_window(batch_keys, record_ms, fired_keys, k)})
    return StepResult(new_state, alerts, late)


def _newest_in_window(batch_keys: np.ndarray, record_ms: np.ndarray, windows: np.ndarray, k: int) -> np.ndarray:
    """For each window key s: the largest record time of a batch reading in panes [s, s+k)."""
    out = np.zeros(len(windows), dtype=np.int64)
    if len(windows) == 0:  # most bucket calls fire nothing: skip the group-by over the batch
        return out
    newest = pd.Series(record_ms).groupby(batch_keys).max()
    pane_keys, pane_newest = newest.index.to_numpy(dtype=np.int64), newest.to_numpy(dtype=np.int64)
    for offset in range(k):  # k panes per window; each step is one vectorised lookup
        at = np.minimum(np.searchsorted(pane_keys, windows + offset), len(pane_keys) - 1)
        hit = pane_keys[at] == windows + offset
        out = np.where(hit, np.maximum(out, pane_newest[at]), out)
    return out


def _window_starts(touched: np.ndarray, k: int) -> np.ndarray:
    """Sorted distinct keys s with s <= t < s + k for some touched pane key t.

    Each touched pane opens the interval [t-k+1, t]; overlapping intervals are merged before
    they are expanded, so a backlog of consecutive panes costs one key per window instead of k
    (60 in prod). Keys of different households never merge: their ranges are k apart.
    """
    if len(touched) == 0:
        return touched
    starts, ends = touched - (k - 1), touched
    new_run = np.empty(len(touched), dtype=bool)
    new_run[0] = True
    new_run[1:] = starts[1:] > ends[:-1] + 1
    first = np.flatnonzero(new_run)
    run_starts = starts[first]
    run_ends = ends[np.append(first[1:] - 1, len(touched) - 1)]
    lengths = run_ends - run_starts + 1
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(run_starts, lengths) + offsets


def _no_alerts() -> pd.DataFrame:
    return pd.DataFrame({"household": pd.Series([], dtype=np.int64),
                         "start_pane": pd.Series([], dtype=np.int64),
                         "units": pd.Series([], dtype=np.int64),
                         "crossed_ms": pd.Series([], dtype=np.int64)})
