"""The state step: what the stateful operator does with one state bucket in one micro-batch.

It takes the bucket's readings (admit: the households it holds, and new ones while it has room),
keeps the pane sums (panes.advance), and asks each rule for its alerts on the windows the batch
touched: the fixed rule and the baseline rule (core/rules/), siblings that know nothing of each
other. It stores the bucket's state back as three blobs (pane table, the fixed rule's alerted
windows, the baseline), tallies what it did (counts.BatchCounts), and returns one row of parallel
arrays: its alerts, its refused readings and its dead letters (OUTPUT_COLUMNS), which the query
turns into a row each natively (a row per alert out of Python cost 0.7 s of 3.0 s of worker CPU
in a demo drain: docs/decisions/0004-kafka-sink-and-batch-tally.md).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from pipeline.core.alert import Kind
from pipeline.core.contract import REASONS
from pipeline.core.rules import baseline as baseline_rule
from pipeline.core.rules import fixed as fixed_rule
from pipeline.core.rules.baseline import BaselineState, fingerprint
from pipeline.core.rules.fixed import FixedState
from pipeline.core.settings import BaselineRule, Rule
from pipeline.job.counts import BatchCounts, BucketFigures
from pipeline.job.panes import PaneState, Readings, advance

# Spark names the micro-batch of each task in this local property (MicroBatchExecution.BATCH_ID_KEY).
BATCH_ID_PROPERTY = "streaming.sql.batchId"
# One row of parallel arrays per bucket: an alert's columns (kind: KINDS), a refused reading's
# (household, event second as window_start, units, its record's position as windows), a dead
# letter's (the document; the numbers 0).
OUTPUT_COLUMNS = ("household", "window_start", "kwh_units", "dead_letter", "kind", "threshold", "usual", "excess",
                  "windows", "slot")
BUCKET_OUTPUT_SCHEMA = ("household array<long>, window_start array<long>, kwh_units array<long>, "
                        "dead_letter array<string>, kind array<long>, threshold array<double>, usual array<double>, "
                        "excess array<double>, windows array<long>, slot array<long>")
_NO_OUTPUT = pd.DataFrame({name: pd.Series([], dtype=object) for name in OUTPUT_COLUMNS})
STATE_SCHEMA = "panes binary, alerted binary, baseline binary"
# The kind column of an output row: an alert of each rule, or a reading the household bound refused.
KINDS = {Kind.THRESHOLD: 0, Kind.BASELINE: 1}
KIND_REFUSED = 2
HOUSEHOLD_LIMIT_REASON = REASONS[-1]
POSITION_SHIFT = 48  # a record's position as one long: partition << 48 | offset


@dataclass(frozen=True)
class Refused:
    """Readings a full bucket did not take (admit): household, epoch second, units, position."""

    households: np.ndarray
    epoch_s: np.ndarray
    units: np.ndarray
    positions: np.ndarray


def admit(known: np.ndarray, households: np.ndarray, capacity: int) -> np.ndarray:
    """Which readings a bucket takes: those of the households it holds (`known`), and those of new
    households in the order they first appear in the batch, as long as the bucket has room
    (`capacity` households in all). A refused household's readings are all refused."""
    room = capacity - len(known)
    new = ~np.isin(households, known)
    if not new.any():
        return np.ones(len(households), dtype=bool)
    arrivals, first_at = np.unique(households[new], return_index=True)
    if len(arrivals) <= room:
        return np.ones(len(households), dtype=bool)
    refused = arrivals[np.argsort(first_at, kind="stable")[max(room, 0):]]
    return ~np.isin(households, refused)


@dataclass(frozen=True)
class Stored:
    """A bucket's state under the current rules."""

    panes: PaneState
    fixed: FixedState
    baseline: BaselineState

    def households(self) -> np.ndarray:
        return np.union1d(self.panes.names, self.baseline.names)

    def blobs(self) -> tuple[bytes, bytes, bytes] | None:
        """The state row, or None when there is nothing to keep."""
        if self.panes.is_empty() and self.fixed.is_empty() and self.baseline.is_empty():
            return None
        return self.panes.to_bytes(), self.fixed.to_bytes(), self.baseline.to_bytes()


def stored(state, fixed_fp: int, scoring_fp: int) -> Stored:
    """The bucket's state under the current rules: the windows alerted under another fixed
    threshold or baseline scoring rule are forgotten, what was learned is kept."""
    if not state.exists:
        return Stored(PaneState.empty(), FixedState.empty(), BaselineState.empty(fixed_fp, scoring_fp))
    panes_blob, alerted_blob, baseline_blob = state.get
    learned = BaselineState.from_bytes(baseline_blob)
    fixed = FixedState.from_bytes(alerted_blob) if learned.fixed_rule == fixed_fp else FixedState.empty()
    return Stored(PaneState.from_bytes(panes_blob), fixed, learned.for_rules(fixed_fp, scoring_fp))


@dataclass(frozen=True)
class Rules:
    """What the state step judges with: the fixed rule, the baseline rule (None: off), the
    households a bucket may hold, and the baselines to adopt (a baseline.Seed, broadcast for the
    Python operator; or None)."""

    fixed: Rule
    baseline: BaselineRule | None
    capacity: int
    seed: object = None

    @property
    def fingerprints(self) -> tuple[int, int]:
        return fingerprint(self.fixed.key), fingerprint(self.baseline.key if self.baseline else "off")


def make_state_function(rules: Rules, tally) -> Callable:
    """The function applyInPandasWithState calls per bucket and batch; `tally` the accumulator of
    BatchCounts by batch id."""
    from pyspark import TaskContext

    fixed_fp, scoring_fp = rules.fingerprints

    def state_function(key, chunks: Iterator[pd.DataFrame], state) -> Iterator[pd.DataFrame]:
        readings, positions, invalid = batch_columns(list(chunks), rules.fixed.slide_s)
        before = stored(state, fixed_fp, scoring_fp)
        taken = admit(before.households(), readings.households, rules.capacity)
        refused = Refused(readings.households[~taken], readings.panes[~taken] * rules.fixed.slide_s
                          + readings.seconds[~taken], readings.units[~taken], positions[~taken])
        after, alerts, counts = step(before, rules, readings.where(taken), state.getCurrentWatermarkMs())
        blobs = after.blobs()
        if blobs is None:
            if state.exists:
                state.remove()
        else:
            state.update(blobs)
        bucket = BucketFigures(len(after.households()), sum(map(len, blobs or ())), *counts.pop("warm"))
        batch = int(TaskContext.get().getLocalProperty(BATCH_ID_PROPERTY))
        tally.add({batch: tallied(alerts, counts, invalid, refused, {int(key[0]): bucket})})
        yield output_rows(alerts, invalid, refused, rules.fixed.slide_s)

    return state_function


def step(before: Stored, rules: Rules, readings: Readings, watermark_ms: int) -> tuple[Stored, dict, dict]:
    """The bucket's new state, each rule's alerts (by kind), and what else it counted."""
    fixed = rules.fixed
    learned = before.baseline
    if rules.baseline is not None and rules.seed is not None:
        learned = baseline_rule.adopt(learned, rules.seed.value, readings.households, rules.baseline.slots)
    min_open = fixed.first_open_pane(watermark_ms)
    panes = advance(before.panes, readings, min_open, fixed.panes_per_window, fixed.slide_s)
    judged = fixed_rule.step(before.fixed, fixed.threshold_units, panes.windows, min_open)
    alerts = {Kind.THRESHOLD: judged.alerts}
    warm = (0, 0)
    if rules.baseline is not None:
        scored = baseline_rule.step(learned, rules.baseline, panes.counted, panes.windows, watermark_ms)
        learned, alerts[Kind.BASELINE], warm = scored.state, scored.alerts, (scored.warm, scored.warming)
    counts = {"late": panes.late_readings, "duplicates": panes.duplicates, "warm": warm}
    return Stored(panes.state, judged.state, learned), alerts, counts


def batch_columns(chunks: list[pd.DataFrame], slide_s: int) -> tuple[Readings, np.ndarray, pd.Series | None]:
    """A bucket's rows (in chunks of Arrow's batch size) as the valid readings, their records'
    positions, and the dead letters of the invalid ones. The numbers are joined as numpy arrays:
    pd.concat of the frames checks every empty text cell for NA."""
    column = (lambda name: chunks[0][name].to_numpy(dtype=np.int64)) if len(chunks) == 1 else (
        lambda name: np.concatenate([c[name].to_numpy(dtype=np.int64) for c in chunks]))
    households, epoch, units, record_ms, positions = (
        column(n) for n in ("household", "epoch_s", "kwh_units", "record_ms", "position"))
    valid = households >= 0
    invalid = None
    if not valid.all():
        invalid = pd.concat([c.dead_letter[c.household < 0] for c in chunks], ignore_index=True)
        households, epoch, units, record_ms, positions = (
            a[valid] for a in (households, epoch, units, record_ms, positions))
    panes = epoch // slide_s
    return Readings(households, panes, units, record_ms, epoch - panes * slide_s), positions, invalid


def tallied(alerts: dict, counts: dict, invalid: pd.Series | None, refused: Refused, buckets: dict) -> BatchCounts:
    """What the step did, as the bucket's BatchCounts."""
    reasons = Counter()
    if invalid is not None:
        # The reason is read back from the dead letter: a separate column would cross into
        # Python for every valid reading too, as nulls.
        reasons.update(json.loads(letter)["reason"] for letter in invalid)
    if len(refused.households):
        reasons[HOUSEHOLD_LIMIT_REASON] += len(refused.households)
    crossings = Counter()
    for frame in alerts.values():
        centiseconds, n = np.unique(frame.crossed_ms.to_numpy() // 10, return_counts=True)
        crossings.update(dict(zip(centiseconds.tolist(), n.tolist())))
    return BatchCounts(alerts=Counter({kind.value: len(frame) for kind, frame in alerts.items() if len(frame)}),
                       crossings=crossings, late_readings=counts["late"], duplicate_readings=counts["duplicates"],
                       invalid_by_reason=reasons, buckets=buckets)


def output_rows(alerts: dict, invalid: pd.Series | None, refused: Refused, slide_s: int) -> pd.DataFrame:
    """The bucket's one output row: parallel arrays of its alerts (each rule's), refused readings
    and dead letters."""
    frames = [(KINDS[kind], frame) for kind, frame in alerts.items() if len(frame)]
    letters = np.empty(0, dtype=object) if invalid is None else invalid.to_numpy(dtype=object)
    if not frames and not len(refused.households) and not len(letters):  # most calls of a live batch
        return _NO_OUTPUT
    blank = len(refused.households) + len(letters)

    def column(name: str, dtype, refused_values=None) -> np.ndarray:
        filler = np.nan if dtype is np.float64 else 0
        parts = [frame[name].to_numpy(dtype) if name in frame else np.full(len(frame), filler, dtype)
                 for _, frame in frames]
        tail = [refused_values, np.zeros(len(letters), dtype)] if refused_values is not None else [np.full(blank, filler, dtype)]
        return np.concatenate(parts + tail)

    arrays = {
        "household": column("household", np.int64, refused.households),
        "window_start": np.concatenate([f.start_pane.to_numpy(np.int64) * slide_s for _, f in frames]
                                       + [refused.epoch_s, np.zeros(len(letters), np.int64)]),
        "kwh_units": column("units", np.int64, refused.units),
        "dead_letter": np.concatenate([np.full(sum(len(f) for _, f in frames) + len(refused.households), None,
                                               dtype=object), letters]),
        "kind": np.concatenate([np.full(len(f), code) for code, f in frames]
                               + [np.full(len(refused.households), KIND_REFUSED), np.zeros(len(letters))]).astype(np.int64),
        "threshold": column("threshold", np.float64), "usual": column("usual", np.float64),
        "excess": column("excess", np.float64), "slot": column("slot", np.int64),
        "windows": column("windows", np.int64, refused.positions),
    }
    return pd.DataFrame({name: pd.Series([arrays[name]], dtype=object) for name in OUTPUT_COLUMNS})
