"""The pane table of a state bucket: per household, the energy of each slide-sized pane that an
open window still needs, and the seconds of each pane that counted readings were stamped with.

A sliding window of `k` slides is the sum of `k` consecutive panes, so each reading is added to
exactly one pane instead of being copied into `k` windows. `advance` applies a batch's readings
and hands back the windows the batch touched, with their sums, for the rules to judge
(core/rules/). Semantics match Spark's `window(event_time, W, S)` with a watermark: windows are
aligned to the epoch, a reading counts in every open window that contains it, and a window is
closed once its end <= watermark. A reading all of whose windows are closed is late: it is
dropped and counted. Energy is held in integer units (nano-kWh) so sums are exact and independent
of the order readings arrive in.

Everything here is numpy on whole arrays: one call handles every household of a state bucket.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.core.rules.blob import STATE_FORMAT, BlobReader
from pipeline.core.rules.windows import Windows

HOUSEHOLD_DIGITS_SHIFT = 40  # 10**12 (the most digits an id has) < 2**40


def household_code(household_id: str) -> int:
    """`H<digits>` as one integer that keeps leading zeros: digit count << 40 | value. The job
    computes the same in Spark (query.household_code), so the id crosses into Python as an
    integer."""
    digits = household_id[1:]
    return (len(digits) << HOUSEHOLD_DIGITS_SHIFT) | int(digits)


def household_id(code: int) -> str:
    """The inverse of household_code (the job's is query.household_text)."""
    width = int(code) >> HOUSEHOLD_DIGITS_SHIFT
    return "H" + str(int(code) & ((1 << HOUSEHOLD_DIGITS_SHIFT) - 1)).zfill(width)


@dataclass(frozen=True)
class PaneState:
    """A bucket's pane table as arrays, in runs of one household each (each pane once, ascending
    within a run: the encoder relies on it). Households are household_code() values. Runs let a
    batch pick out the households it touches without sorting the whole table."""

    names: np.ndarray  # household of each run
    runs: np.ndarray  # rows in each run
    panes: np.ndarray  # pane index of each row: epoch seconds // slide
    units: np.ndarray  # energy in the pane
    # Per row, the seconds of the pane that a counted reading was stamped with: bit s of word
    # s // 64 (rows x words, uint64), so a reading sent again counts once.
    seen: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.uint64))

    @classmethod
    def from_rows(cls, households: np.ndarray, panes: np.ndarray, units: np.ndarray,
                  seen: np.ndarray | None = None) -> "PaneState":
        """Rows of one household must be adjacent and in pane order, each pane once."""
        starts = _run_starts(households)
        seen = np.zeros((len(panes), 1), dtype=np.uint64) if seen is None else seen
        return cls(households[starts].astype(np.int64), np.diff(np.append(starts, len(households))),
                   panes, units, seen)

    @classmethod
    def empty(cls) -> "PaneState":
        zero = np.array([], dtype=np.int64)
        return cls(zero, zero, zero, zero)

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
        return len(self.panes) == 0

    def to_bytes(self) -> bytes:
        """The pane table compactly (_encode_panes)."""
        return _encode_panes(self.names, self.runs, self.panes, self.units, self.seen_words(self.seen.shape[1]))

    @classmethod
    def from_bytes(cls, blob: bytes) -> "PaneState":
        return cls(*_decode_panes(blob))


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
class Readings:
    """A bucket's valid readings of one batch: household code, pane, units, Kafka record time,
    and the second within the pane (which, with household and pane, identifies a reading)."""

    households: np.ndarray
    panes: np.ndarray
    units: np.ndarray
    record_ms: np.ndarray
    seconds: np.ndarray

    def where(self, keep: np.ndarray) -> "Readings":
        return Readings(*(getattr(self, name)[keep] for name in ("households", "panes", "units", "record_ms",
                                                                   "seconds")))


@dataclass(frozen=True)
class PaneStep:
    state: PaneState
    windows: Windows  # the windows the batch touched, with their sums
    counted: Readings  # the batch's readings that counted (on time, not seen before)
    late_readings: int
    duplicates: int  # readings already counted (the same household, pane and second)


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


def advance(state: PaneState, readings: Readings, min_open: int, k: int, slide_s: int) -> PaneStep:
    """Apply one micro-batch of a bucket's valid readings to its pane table; `min_open` is the
    first window-start pane still open under the watermark, `k` the panes per window of
    `slide_s` seconds.

    Only the households in the batch are summed; the rest of the table is carried over by
    copying, so a live batch costs what its households hold, not what the bucket holds. A
    household left alone keeps its panes until it is touched again, or drops them all once its
    newest pane can no longer be in an open window. A window's `crossed_ms` is the newest record
    time among this batch's readings in it: when the reading that made it cross reached Kafka."""
    on_time = readings.panes >= min_open
    batch = readings.where(on_time)
    seen = state.seen_words((slide_s + 63) // 64)
    touched = np.isin(state.names, batch.households)
    touched_rows = np.repeat(touched, state.runs)
    newest = state.panes[np.cumsum(state.runs) - 1] if len(state.runs) else state.panes
    kept = ~touched & (newest >= min_open)
    kept_rows = np.repeat(kept, state.runs)
    changed, windows, fresh = _advance_touched(
        _Rows(np.repeat(state.names[touched], state.runs[touched]), state.panes[touched_rows],
              state.units[touched_rows], seen[touched_rows]), batch, min_open, k)
    new_state = PaneState(np.concatenate([state.names[kept], changed.names]),
                          np.concatenate([state.runs[kept], changed.runs]),
                          np.concatenate([state.panes[kept_rows], changed.panes]),
                          np.concatenate([state.units[kept_rows], changed.units]),
                          np.concatenate([seen[kept_rows], changed.seen]))
    return PaneStep(new_state, windows, batch.where(fresh), int(len(on_time) - on_time.sum()),
                    int(len(fresh) - fresh.sum()))


@dataclass(frozen=True)
class _Rows:
    """Pane rows of the state: household, pane, units, seen seconds."""

    households: np.ndarray
    panes: np.ndarray
    units: np.ndarray
    seen: np.ndarray


def _bits(seconds: np.ndarray, words: int) -> np.ndarray:
    """Each reading's second as its bit in a row of `words` mask words."""
    out = np.zeros((len(seconds), words), dtype=np.uint64)
    out[np.arange(len(seconds)), seconds // 64] = np.left_shift(np.uint64(1), (seconds % 64).astype(np.uint64))
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


def _no_windows() -> Windows:
    empty = np.zeros(0, dtype=np.int64)
    return Windows(empty, empty, empty, empty, lambda households, starts: np.zeros(len(starts), dtype=np.int64))


def _advance_touched(rows: _Rows, batch: Readings, min_open: int, k: int) -> tuple[PaneState, Windows, np.ndarray]:
    """advance() for the batch's households: their state rows and the batch's on-time readings.
    Returns their new pane table (only open panes), the windows the batch touched, and which
    readings counted (not repeats)."""
    all_panes = np.concatenate([rows.panes, batch.panes])
    if len(all_panes) == 0:
        return PaneState.empty(), _no_windows(), np.zeros(0, dtype=bool)
    codes, names = pd.factorize(np.concatenate([rows.households, batch.households]))
    names = np.asarray(names)
    n_state = len(rows.households)
    base = int(all_panes.min()) - k
    keys = _Keys(names, base, int(all_panes.max()) - base + k + 1)
    batch_keys = keys.encode(codes[n_state:], batch.panes)
    state_keys = keys.encode(codes[:n_state], rows.panes)
    bits = _bits(batch.seconds, rows.seen.shape[1])
    fresh = _first_sightings(state_keys, rows.seen, batch_keys, batch.seconds, bits)

    pane_keys, pane_units, in_batch, pane_newest_ms, pane_seen = _pane_totals(
        np.concatenate([state_keys, batch_keys[fresh]]), np.concatenate([rows.units, batch.units[fresh]]),
        batch.record_ms[fresh], np.concatenate([rows.seen, bits[fresh]]))
    prefix = np.concatenate([[0], np.cumsum(pane_units)])
    batch_pane_keys, batch_newest_ms = pane_keys[in_batch], pane_newest_ms[in_batch]
    run_starts, run_ends = _window_runs(batch_pane_keys, k)
    # A run never spans two households (their keys are k apart): clip it to its household's open windows.
    run_starts = np.maximum(run_starts, run_starts // keys.span * keys.span + (min_open - keys.base))
    open_runs = run_starts <= run_ends
    starts, counts = _same_windows(pane_keys, run_starts[open_runs], run_ends[open_runs], k)
    window_units = prefix[np.searchsorted(pane_keys, starts + k)] - prefix[np.searchsorted(pane_keys, starts)]

    keep_panes = keys.panes(pane_keys) >= min_open
    new_state = PaneState.from_rows(keys.households(pane_keys[keep_panes]), keys.panes(pane_keys[keep_panes]),
                                    pane_units[keep_panes], pane_seen[keep_panes])
    windows = Windows(keys.households(starts), keys.panes(starts), counts, window_units,
                      lambda households, starts: _newest_in_window(batch_pane_keys, batch_newest_ms,
                                                                   keys.of(households, starts), k))
    return new_state, windows, fresh


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


def _window_runs(touched: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The window-start keys s with s <= t < s + k for some touched pane key t (ascending), as
    runs of consecutive keys: first and last of each.

    Each touched pane opens the interval [t-k+1, t]; overlapping intervals are merged, so a
    backlog of consecutive panes is one run. Keys of different households never merge: their
    ranges are k apart.
    """
    if len(touched) == 0:
        return touched, touched
    starts, ends = touched - (k - 1), touched
    new_run = np.empty(len(touched), dtype=bool)
    new_run[0] = True
    new_run[1:] = starts[1:] > ends[:-1] + 1
    first = np.flatnonzero(new_run)
    return starts[first], ends[np.append(first[1:] - 1, len(touched) - 1)]


def _same_windows(pane_keys: np.ndarray, run_starts: np.ndarray, run_ends: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """The runs of window starts cut where a window's panes change: the first start of each piece
    and its number of windows. Window s holds the panes in [s, s+k), so window s+1 holds other
    panes only when pane s or pane s+k is one of `pane_keys` (ascending, distinct): a pane 30
    minutes from its neighbours is alone in all 60 windows of prod, which are then one piece,
    summed and judged once."""
    if len(run_starts) == 0:
        return run_starts, run_starts
    # Window s differs from window s-1 when pane s-1 leaves it or pane s+k-1 enters it.
    both = np.sort(np.concatenate([pane_keys + 1, pane_keys - (k - 1)]), kind="stable")  # two sorted halves
    changes = both[np.concatenate([[True], both[1:] != both[:-1]])]
    lo = np.searchsorted(changes, run_starts, side="right")
    hi = np.searchsorted(changes, run_ends, side="right")
    pieces = 1 + hi - lo
    first_piece = np.cumsum(pieces) - pieces
    run = np.repeat(np.arange(len(run_starts)), pieces)
    place = np.arange(pieces.sum()) - first_piece[run]
    starts = np.where(place == 0, run_starts[run], changes[np.minimum(lo[run] + place - 1, len(changes) - 1)])
    ends = np.append(starts[1:], 0)  # a piece ends where the next begins, the last of a run after it
    ends[first_piece + pieces - 1] = run_ends + 1
    return starts, ends - starts
