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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .blob import BlobReader
from .config import STATE_FORMAT

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
    """A bucket's state as arrays: the pane table in runs of one household each (each pane once,
    ascending within a run: the encoder relies on it), and the windows that already alerted.
    Households are household_code() values. Runs let a batch pick out the households it touches
    without sorting the whole table."""

    names: np.ndarray  # household of each run
    runs: np.ndarray  # rows in each run
    panes: np.ndarray  # pane index of each row: epoch seconds // slide
    units: np.ndarray  # energy in the pane
    alerted_households: np.ndarray
    alerted_starts: np.ndarray  # pane index of each alerted window's start
    # Per row, the seconds of the pane that a counted reading was stamped with: bit s of word
    # s // 64 (rows x words, uint64), so a reading sent again counts once.
    seen: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.uint64))

    @classmethod
    def from_rows(cls, households: np.ndarray, panes: np.ndarray, units: np.ndarray,
                  alerted_households: np.ndarray, alerted_starts: np.ndarray,
                  seen: np.ndarray | None = None) -> "PaneState":
        """Rows of one household must be adjacent and in pane order, each pane once."""
        starts = _run_starts(households)
        seen = np.zeros((len(panes), 1), dtype=np.uint64) if seen is None else seen
        return cls(households[starts].astype(np.int64), np.diff(np.append(starts, len(households))),
                   panes, units, alerted_households, alerted_starts, seen)

    @classmethod
    def empty(cls) -> "PaneState":
        zero = np.array([], dtype=np.int64)
        return cls(zero, zero, zero, zero, zero, zero)

    def seen_words(self, words: int) -> np.ndarray:
        """`seen` with `words` words a row (a state stored with fewer gains empty ones)."""
        if self.seen.shape == (len(self.panes), words):
            return self.seen
        if len(self.seen) != len(self.panes):
            raise ValueError(f"{len(self.seen)} seen masks for {len(self.panes)} pane rows")
        out = np.zeros((len(self.panes), words), dtype=np.uint64)
        out[:, :min(words, self.seen.shape[1])] = self.seen[:, :words]
        return out

    @property
    def households(self) -> np.ndarray:
        """The household of each row."""
        return np.repeat(self.names, self.runs)

    def is_empty(self) -> bool:
        return len(self.panes) == 0 and len(self.alerted_starts) == 0

    def to_bytes(self) -> tuple[bytes, bytes]:
        """The pane table compactly (_encode_panes); the alerted windows as raw int64."""
        return (_encode_panes(self.names, self.runs, self.panes, self.units, self.seen_words(self.seen.shape[1])),
                np.concatenate([self.alerted_households, self.alerted_starts]).astype(np.int64).tobytes())

    @classmethod
    def from_bytes(cls, panes_blob: bytes, alerted_blob: bytes) -> "PaneState":
        names, runs, panes, units, seen = _decode_panes(panes_blob)
        alerted_households, alerted_starts = np.frombuffer(alerted_blob, dtype=np.int64).reshape(2, -1)
        return cls(names, runs, panes, units, alerted_households, alerted_starts, seen)


def _run_starts(households: np.ndarray) -> np.ndarray:
    """Index of the first row of each run of equal households."""
    if len(households) == 0:
        return np.array([], dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], households[1:] != households[:-1]]))


# The pane table's header: int64 fields, the columns follow.
_HEADER = ("format", "rows", "households", "base", "first_width", "offset_width", "unit_width", "unit_exp",
           "seen_words", "seen_width")
_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _narrow(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The values in the narrowest signed integer type that holds them, and its width in bytes."""
    if len(values) == 0:
        return values.astype(np.int8), 1
    low, high = values.min(), values.max()
    for width, kind in _SIGNED.items():
        if np.iinfo(kind).min <= low and high <= np.iinfo(kind).max:
            return values.astype(kind), width
    raise AssertionError("int64 holds every int64")


def _decimal_exponent(units: np.ndarray) -> int:
    """The largest e with every value a multiple of 10**e. Meter readings have a few decimals
    (0.01234 kWh is 12,340,000 nano-kWh), so their pane sums divide by 10**4 and fit int16."""
    divisor = int(np.gcd.reduce(units)) if len(units) else 0
    exponent = 0
    while divisor and divisor % 10 == 0 and exponent < 18:
        divisor //= 10
        exponent += 1
    return exponent


def _narrow_unsigned(values: np.ndarray) -> tuple[np.ndarray, int]:
    high = int(values.max()) if values.size else 0
    width = next(w for w, kind in _UNSIGNED.items() if high <= np.iinfo(kind).max)
    return values.astype(_UNSIGNED[width]), width


def _encode_panes(names: np.ndarray, runs: np.ndarray, panes: np.ndarray, units: np.ndarray,
                  seen: np.ndarray) -> bytes:
    """Per household: its code, run length and first pane; per row: the pane as an offset from
    its household's first pane and the units divided by their common power of ten, each column
    in the narrowest integer type that holds it. When every household's panes are consecutive
    (a meter that reports each slide), the offsets are implied and left out (width 0). About 2
    bytes a pane instead of 16: a live batch hands every touched bucket's whole table to Spark
    and back, so its size is paid each batch."""
    run_starts = np.cumsum(runs) - runs
    firsts = panes[run_starts] if len(panes) else panes
    base = int(firsts.min()) if len(firsts) else 0
    first_offsets, first_width = _narrow(firsts - base)
    # Panes strictly ascend within a run, so a run is consecutive when its last pane is
    # first + length - 1.
    if np.array_equal(panes[run_starts + runs - 1] - firsts, runs - 1):
        offsets, offset_width = panes[:0].astype(np.int8), 0
    else:
        offsets, offset_width = _narrow(panes - np.repeat(firsts, runs))
    exponent = _decimal_exponent(units)
    scaled, unit_width = _narrow(units // 10 ** exponent)
    # Meters that report on the slide's grid give every row the same mask: it is stored once
    # (width 0). Otherwise each row's, in the narrowest type (15 bits: 2 bytes a row).
    if len(seen) and (seen == seen[0]).all():
        masks, seen_width = seen[0], 0
    else:
        masks, seen_width = _narrow_unsigned(seen)
    header = np.array([STATE_FORMAT, len(panes), len(names), base, first_width, offset_width, unit_width, exponent,
                       seen.shape[1], seen_width], dtype=np.int64)
    return b"".join([header.tobytes(), names.astype(np.int64).tobytes(), runs.astype(np.int32).tobytes(),
                     first_offsets.tobytes(), offsets.tobytes(), scaled.tobytes(), masks.tobytes()])


def _decode_panes(blob: bytes) -> tuple[np.ndarray, ...]:
    reader = BlobReader(blob, _HEADER, STATE_FORMAT, "pane state")
    header, column = reader.header, reader.column
    rows, households = header["rows"], header["households"]
    names = column(np.int64, households)
    runs = column(np.int32, households).astype(np.int64)
    firsts = column(_SIGNED[header["first_width"]], households).astype(np.int64) + header["base"]
    if header["offset_width"] == 0:  # consecutive panes: a row's offset is its place in the run
        panes = np.repeat(firsts - (np.cumsum(runs) - runs), runs) + np.arange(rows)
    else:
        panes = np.repeat(firsts, runs) + column(_SIGNED[header["offset_width"]], rows)
    units = column(_SIGNED[header["unit_width"]], rows).astype(np.int64) * 10 ** header["unit_exp"]
    words, width = header["seen_words"], header["seen_width"]
    if width == 0:
        seen = np.repeat(column(np.uint64, words if rows else 0).reshape(-1, words), rows, axis=0)
    else:
        seen = column(_UNSIGNED[width], rows * words).astype(np.uint64).reshape(rows, words)
    return names, runs, panes, units, seen


@dataclass(frozen=True)
class StepResult:
    state: PaneState
    alerts: pd.DataFrame  # household (code), start_pane, units, crossed_ms
    late_readings: int
    baseline: "baseline_rule.BaselineResult | None" = None  # its alerts have crossed_ms too
    duplicates: int = 0  # readings already counted (the same household, pane and second)


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

    def of(self, households: np.ndarray, panes: np.ndarray) -> np.ndarray:
        """The keys of (household, pane) pairs whose households are among `names`."""
        order = np.argsort(self.names)
        codes = order[np.searchsorted(self.names, households, sorter=order)]
        return self.encode(codes, panes)


def advance(state: PaneState, households: np.ndarray, panes: np.ndarray, units: np.ndarray,
            watermark_ms: int, slide_s: int, k: int, threshold_units: int,
            record_ms: np.ndarray | None = None, baseline=None, seconds: np.ndarray | None = None) -> StepResult:
    """Apply one micro-batch of valid readings to a bucket's state.

    `record_ms` (the readings' Kafka record times) gives each alert its `crossed_ms`: the
    newest record time among this batch's readings in the window, that is when the reading
    that made it cross reached Kafka (a window alerts in the batch of its crossing reading).
    `baseline`, a (BaselineState, BaselineRule) pair, scores the same windows by the baseline
    rule too (baseline.py). `seconds` (each reading's second in its pane) identifies a reading
    with its household and pane: one counted before, in this batch or earlier, counts nowhere.

    Only the households in the batch are summed and checked; the rest of the table is carried
    over by copying, so a live batch costs what its households hold, not what the bucket holds.
    A household left alone keeps its panes until it is touched again, or drops them all once its
    newest pane can no longer be in an open window."""
    min_open = first_open_start(watermark_ms, slide_s, k)
    batch, late = _on_time(households, panes, units, record_ms, seconds, min_open)
    seen = state.seen_words((slide_s + 63) // 64)

    touched = np.isin(state.names, batch.households)
    touched_rows = np.repeat(touched, state.runs)
    newest = state.panes[np.cumsum(state.runs) - 1] if len(state.runs) else state.panes
    kept = ~touched & (newest >= min_open)
    kept_rows = np.repeat(kept, state.runs)
    touched_alerted = np.isin(state.alerted_households, batch.households)
    open_alerted = state.alerted_starts >= min_open
    changed, windows, fresh = _advance_touched(
        _Rows(np.repeat(state.names[touched], state.runs[touched]), state.panes[touched_rows],
              state.units[touched_rows], seen[touched_rows]),
        state.alerted_households[touched_alerted], state.alerted_starts[touched_alerted],
        batch, min_open, k, threshold_units)
    carried = ~touched_alerted & open_alerted
    new_state = PaneState(np.concatenate([state.names[kept], changed.names]),
                          np.concatenate([state.runs[kept], changed.runs]),
                          np.concatenate([state.panes[kept_rows], changed.panes]),
                          np.concatenate([state.units[kept_rows], changed.units]),
                          np.concatenate([state.alerted_households[carried], changed.alerted_households]),
                          np.concatenate([state.alerted_starts[carried], changed.alerted_starts]),
                          np.concatenate([seen[kept_rows], changed.seen]))
    scored = None
    if baseline is not None:
        scored = _score_baseline(baseline, windows, batch.households[fresh], batch.panes[fresh], batch.units[fresh],
                                 min_open, watermark_ms)
    return StepResult(new_state, windows.fixed_alerts(), late, scored, int(len(fresh) - fresh.sum()))


def _on_time(households: np.ndarray, panes: np.ndarray, units: np.ndarray, record_ms: np.ndarray | None,
             seconds: np.ndarray | None, min_open: int) -> tuple["_Readings", int]:
    """The readings that can still count (their pane in an open window), and how many are late."""
    on_time = panes >= min_open
    record_ms = np.zeros(len(panes), dtype=np.int64) if record_ms is None else record_ms
    identified = seconds is not None
    seconds = np.zeros(len(panes), dtype=np.int64) if seconds is None else seconds
    batch = _Readings(households[on_time], panes[on_time], units[on_time], record_ms[on_time], seconds[on_time],
                      identified)
    return batch, int(len(panes) - on_time.sum())


@dataclass(frozen=True)
class _Rows:
    """Pane rows of the state: household, pane, units, seen seconds."""

    households: np.ndarray
    panes: np.ndarray
    units: np.ndarray
    seen: np.ndarray


@dataclass(frozen=True)
class _Readings:
    """A batch's on-time readings."""

    households: np.ndarray
    panes: np.ndarray
    units: np.ndarray
    record_ms: np.ndarray
    seconds: np.ndarray
    identified: bool  # whether `seconds` are known: else every reading counts

    def bits(self, words: int) -> np.ndarray:
        """Each reading's second as its bit in a row of `words` mask words."""
        out = np.zeros((len(self.seconds), words), dtype=np.uint64)
        if not self.identified:
            return out
        out[np.arange(len(self.seconds)), self.seconds // 64] = np.left_shift(
            np.uint64(1), (self.seconds % 64).astype(np.uint64))
        return out


def _first_sightings(state_keys: np.ndarray, state_seen: np.ndarray, keys: np.ndarray, seconds: np.ndarray,
                     bits: np.ndarray) -> np.ndarray:
    """Which readings (pane keys, seconds and their bits) neither the state nor an earlier reading
    of the batch holds: the first to arrive counts."""
    fresh = np.zeros(len(keys), dtype=bool)
    if len(keys) == 0:
        return fresh
    fresh[np.unique(keys * (64 * bits.shape[1]) + seconds, return_index=True)[1]] = True
    if len(state_keys):
        at = np.minimum(np.searchsorted(state_keys, keys), len(state_keys) - 1)
        known = (state_keys[at] == keys) & ((state_seen[at] & bits) != 0).any(axis=1)
        fresh &= ~known
    return fresh


def _score_baseline(baseline, windows: "_Touched", households, panes, units, min_open: int, watermark_ms: int):
    from . import baseline as baseline_rule

    state, rule = baseline
    result = baseline_rule.step(state, rule, households, panes, units, windows.as_windows(), min_open, watermark_ms)
    alerts = result.alerts
    alerts["crossed_ms"] = windows.crossed_ms(alerts.household.to_numpy(np.int64), alerts.start_pane.to_numpy(np.int64))
    return result


@dataclass(frozen=True)
class _Touched:
    """The windows a batch touched, with their sums, and what gives an alert its crossed_ms."""

    keys: _Keys | None
    candidates: np.ndarray  # window start keys
    units: np.ndarray
    fires: np.ndarray  # by the fixed rule
    batch_pane_keys: np.ndarray
    batch_newest_ms: np.ndarray
    k: int

    def crossed_ms(self, households: np.ndarray, starts: np.ndarray) -> np.ndarray:
        if self.keys is None or len(starts) == 0:
            return np.zeros(len(starts), dtype=np.int64)
        return _newest_in_window(self.batch_pane_keys, self.batch_newest_ms, self.keys.of(households, starts), self.k)

    def fixed_alerts(self) -> pd.DataFrame:
        if self.keys is None:
            return _no_alerts()
        fired = self.candidates[self.fires]
        return pd.DataFrame({"household": self.keys.households(fired), "start_pane": self.keys.panes(fired),
                             "units": self.units[self.fires],
                             "crossed_ms": _newest_in_window(self.batch_pane_keys, self.batch_newest_ms, fired, self.k)})

    def as_windows(self):
        from .baseline import Windows

        if self.keys is None:
            empty = np.zeros(0, dtype=np.int64)
            return Windows(empty, empty, empty)
        return Windows(self.keys.households(self.candidates), self.keys.panes(self.candidates), self.units)


def _advance_touched(rows: _Rows, alerted_households: np.ndarray, alerted_starts: np.ndarray,
                     batch: _Readings, min_open: int, k: int,
                     threshold_units: int) -> tuple[PaneState, _Touched, np.ndarray]:
    """advance() for the batch's households: their state rows and alerted windows, the batch's
    on-time readings. Returns their new state (only open panes and windows), the windows the
    batch touched, and which readings counted (not duplicates)."""
    all_panes = np.concatenate([rows.panes, batch.panes, alerted_starts])
    if len(all_panes) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PaneState.empty(), _Touched(None, empty, empty, empty.astype(bool), empty, empty, k), empty.astype(bool)
    codes, names = pd.factorize(np.concatenate([rows.households, batch.households, alerted_households]))
    names = np.asarray(names)
    n_state, n_batch = len(rows.households), len(batch.households)
    base = int(all_panes.min()) - k
    keys = _Keys(names, base, int(all_panes.max()) - base + k + 1)
    batch_keys = keys.encode(codes[n_state:n_state + n_batch], batch.panes)
    alerted_keys = keys.encode(codes[n_state + n_batch:], alerted_starts)
    state_keys = keys.encode(codes[:n_state], rows.panes)
    bits = batch.bits(rows.seen.shape[1])
    fresh = (_first_sightings(state_keys, rows.seen, batch_keys, batch.seconds, bits) if batch.identified
             else np.ones(n_batch, dtype=bool))

    pane_keys, pane_units, in_batch, pane_newest_ms, pane_seen = _pane_totals(
        np.concatenate([state_keys, batch_keys[fresh]]), np.concatenate([rows.units, batch.units[fresh]]),
        batch.record_ms[fresh], np.concatenate([rows.seen, bits[fresh]]))
    prefix = np.concatenate([[0], np.cumsum(pane_units)])

    batch_pane_keys = pane_keys[in_batch]
    candidates = _window_starts(batch_pane_keys, k)
    candidates = candidates[keys.panes(candidates) >= min_open]
    window_units = (prefix[np.searchsorted(pane_keys, candidates + k)]
                    - prefix[np.searchsorted(pane_keys, candidates)])
    fires = (window_units > threshold_units) & ~np.isin(candidates, alerted_keys)

    keep_panes = keys.panes(pane_keys) >= min_open
    alerted = np.concatenate([alerted_keys, candidates[fires]])
    alerted = alerted[keys.panes(alerted) >= min_open]
    new_state = PaneState.from_rows(keys.households(pane_keys[keep_panes]), keys.panes(pane_keys[keep_panes]),
                                    pane_units[keep_panes], keys.households(alerted), keys.panes(alerted),
                                    pane_seen[keep_panes])
    touched = _Touched(keys, candidates, window_units, fires, batch_pane_keys, pane_newest_ms[in_batch], k)
    return new_state, touched, fresh


def _newest_in_window(pane_keys: np.ndarray, pane_newest: np.ndarray, windows: np.ndarray, k: int) -> np.ndarray:
    """For each window key s: the largest of `pane_newest` over the `pane_keys` (ascending) in
    [s, s+k)."""
    out = np.zeros(len(windows), dtype=np.int64)
    if len(windows) == 0:
        return out
    for offset in range(k):  # k panes per window; each step is one vectorised lookup
        at = np.minimum(np.searchsorted(pane_keys, windows + offset), len(pane_keys) - 1)
        hit = pane_keys[at] == windows + offset
        out = np.where(hit, np.maximum(out, pane_newest[at]), out)
    return out


def _pane_totals(keys: np.ndarray, units: np.ndarray, record_ms: np.ndarray,
                 seen: np.ndarray) -> tuple[np.ndarray, ...]:
    """`keys`, `units` and `seen`: the state's rows, then the batch's; `record_ms`: the batch's.
    Returns each distinct key ascending, its units summed (exact in int64), whether a batch
    reading is in it, the newest record time among those, and its seconds seen.

    One stable sort serves all four: a pandas group-by cost twice as much (most of it
    factorizing keys that a sort orders), and np.unique of the batch's keys plus a second sort
    for the record times took a third of the state step's time in a demo drain (py-spy)."""
    if len(keys) == 0:
        return (keys.astype(np.int64), units.astype(np.int64), np.zeros(0, dtype=bool), keys.astype(np.int64),
                seen)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    n_state = len(keys) - len(record_ms)
    times = np.concatenate([np.zeros(n_state, dtype=np.int64), record_ms.astype(np.int64)])[order]
    return (ordered[starts], np.add.reduceat(units[order].astype(np.int64), starts),
            np.logical_or.reduceat(order >= n_state, starts), np.maximum.reduceat(times, starts),
            np.bitwise_or.reduceat(seen[order], starts, axis=0))


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
