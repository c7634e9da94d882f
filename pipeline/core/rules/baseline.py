"""The baseline rule (docs/contract.md, "Baseline rule"): per household and slot, the usual level
of its tumbling windows, learned from its own use; a window alerts when the use above that level
and an allowance has lasted several windows in a row and added up.

A household's windows are the tumbling windows `[jW, (j+1)W)` that hold a counted reading. Each
updates its slot's usual level q (a streaming upper quantile), mean m and count n, in increasing
j. Window j is judged against its slot's state after exactly the windows with `(j+1)W <= jW - D`
(its cut-off): its excess e = x - (q + δ), the windows in a row with an excess, and the excess
added up over them, S = min(C, max(0, S_prev + e)), where S_prev is the previous window's (0
when the previous window holds no reading). It alerts when its slot is warm and S > H with the
`run`-th window in a row or later, or S > F + c·q (the fast level: a large load) with the
`fast_run`-th or later; C is 2H, or the fast level plus H when that is more. All of it grows with
the readings counted, so the result does not depend on how readings are cut into micro-batches.

A bucket's state holds, per household, what was learned up to `applied` (the cut-off of the
first window a reading can still count in); the windows after it stay pending as integer sums,
and every batch replays them on top. A window is judged while a reading can still count in it
(and in the batch it closes in): the bucket notes the last window judged for good (`judged_to`),
and each household the excess and windows in a row it carries into the window after it. Everything is numpy on whole
arrays, one call per state bucket; the replays loop over the pending windows' ranks (one household
at most once per step), not over households.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np
import pandas as pd

from pipeline.core.rules.blob import BlobReader
from pipeline.core.rules.windows import Windows
from pipeline.core.settings import KWH_UNITS, BaselineRule

NO_WINDOW = np.iinfo(np.int64).min // 4  # before any window
MAX_COUNT = np.iinfo(np.uint16).max
MAX_RUN = np.iinfo(np.uint8).max  # windows in a row are stored up to this (BASELINE_RUN is at most it)
_FORMAT = 2
_HEADER = ("format", "households", "slots", "pending", "alerted", "fixed_rule", "scoring", "seed", "judged_to",
           "applied", "newest_base")


def fingerprint(text: str) -> int:
    """A rule's key as an int64, stored with the state to notice a changed rule."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little", signed=True)


@dataclass(frozen=True)
class BaselineState:
    """One bucket's baselines: every window up to `applied` learned, every one up to `judged_to`
    judged for good. Per household (ascending codes): the newest window with a reading, and the
    excess and windows in a row carried into the window after `judged_to`; per (household,
    slot), row-major: usual level, mean and count. Pending windows sorted by (household, j).
    Windows the rule alerted that are still judged."""

    names: np.ndarray
    newest: np.ndarray
    carried: np.ndarray  # S carried into window judged_to + 1
    in_a_row: np.ndarray  # windows in a row with an excess, ending at window judged_to
    usual: np.ndarray
    mean: np.ndarray
    count: np.ndarray
    pending_households: np.ndarray
    pending_j: np.ndarray
    pending_units: np.ndarray
    alerted_households: np.ndarray
    alerted_j: np.ndarray
    fixed_rule: int = 0  # fingerprints of the rules the alerted windows belong to
    scoring: int = 0
    seed: int = 0  # the Seed its households were last taken from (0: none)
    judged_to: int = NO_WINDOW
    applied: int = NO_WINDOW

    @classmethod
    def empty(cls, fixed_rule: int = 0, scoring: int = 0) -> "BaselineState":
        i, f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return cls(i, i, f, i, f, f, i, i, i, i, i, i, fixed_rule, scoring)

    def is_empty(self) -> bool:
        return len(self.names) == 0 and len(self.alerted_j) == 0

    def to_bytes(self) -> bytes:
        slots = len(self.usual) // len(self.names) if len(self.names) else 0
        # Newest windows lie within BASELINE_FORGET_AFTER of each other: 32-bit offsets hold them.
        base = int(self.newest.min()) if len(self.newest) else 0
        header = np.array([_FORMAT, len(self.names), slots, len(self.pending_j), len(self.alerted_j), self.fixed_rule,
                           self.scoring, self.seed, self.judged_to, self.applied, base], dtype=np.int64)
        parts = [header, self.names, (self.newest - base).astype(np.uint32), self.carried.astype(np.float64),
                 np.minimum(self.in_a_row, MAX_RUN).astype(np.uint8), self.usual.astype(np.float64),
                 self.mean.astype(np.float64),
                 self.count.astype(np.uint16), self.pending_households, self.pending_j, self.pending_units,
                 self.alerted_households, self.alerted_j]
        return b"".join(np.ascontiguousarray(part).tobytes() for part in parts)

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> "BaselineState":
        if not blob:
            return cls.empty()
        reader = BlobReader(blob, _HEADER, _FORMAT, "baseline state")
        header, column = reader.header, reader.column
        h, cells, p, a = header["households"], header["households"] * header["slots"], header["pending"], header["alerted"]
        return cls(column(np.int64, h), column(np.uint32, h).astype(np.int64) + header["newest_base"],
                   column(np.float64, h), column(np.uint8, h).astype(np.int64), column(np.float64, cells),
                   column(np.float64, cells), column(np.uint16, cells).astype(np.int64), column(np.int64, p),
                   column(np.int64, p), column(np.int64, p), column(np.int64, a), column(np.int64, a),
                   header["fixed_rule"], header["scoring"], header["seed"], header["judged_to"], header["applied"])

    def for_rules(self, fixed_rule: int, scoring: int) -> "BaselineState":
        """This state under the given rules: what was learned stays; the windows alerted under
        another scoring rule are forgotten, so the new rule may alert them with its own ids."""
        if self.scoring == scoring:
            return self if self.fixed_rule == fixed_rule else replace(self, fixed_rule=fixed_rule)
        none = np.zeros(0, dtype=np.int64)
        return replace(self, alerted_households=none, alerted_j=none, fixed_rule=fixed_rule, scoring=scoring)


@dataclass(frozen=True)
class BaselineResult:
    state: BaselineState
    alerts: pd.DataFrame  # household, start_pane, units, threshold, usual, excess, windows, slot, crossed_ms
    warm: int  # households of the bucket whose every slot is warm
    warming: int


def reference(rule: BaselineRule, usual: np.ndarray) -> np.ndarray:
    """The use a window may have before it counts as excess: the usual level and the allowance."""
    return usual + rule.excess_kwh


def step(state: BaselineState, rule: BaselineRule, counted, windows: Windows, watermark_ms: int) -> BaselineResult:
    """One batch of a bucket: its counted readings (`counted.households`, `.panes`, `.units`) and the
    watermark. `windows` (the sliding windows the batch touched) gives an alert's crossed_ms."""
    panes_per_window = rule.window_s // rule.slide_s
    names = np.union1d(state.names, counted.households)
    table = _Table.widen(state, names, rule.slots)
    rows = _pending(state, table, names, counted.households, counted.panes // panes_per_window, counted.units)
    np.maximum.at(table.newest, rows.household, rows.j)
    first_window = rule.rule.first_open_pane(watermark_ms) * rule.slide_s // rule.window_s
    # Learned for good: the windows up to the cut-off of the first window a reading can still
    # count in. One after it may be in no cut-off yet of the windows still judged.
    safe = (first_window * rule.window_s - rule.watermark_s) // rule.window_s - 1
    judged_to = max(state.judged_to, first_window - 1)
    before = table.copy()
    final = rows.j <= safe
    notes = _Notes.join(_replay(table, rule, rows, final), _replay(table.copy(), rule, rows, ~final))
    judged = _judge(rule, rows, before, notes, state.judged_to)
    # A window alerts in the batch whose readings make it cross: only the batch's households' can.
    touched = np.isin(rows.household, np.searchsorted(names, counted.households))
    fired = judged.fires & touched & ~_already(state, names, rows)
    alerts = _alerts(rule, names, rows, judged, fired, windows)
    _carry(table, before, rows, judged, state.judged_to, judged_to)
    table.applied = max(table.applied, safe)
    alerted = (np.concatenate([state.alerted_households, names[rows.household[fired]]]),
               np.concatenate([state.alerted_j, rows.j[fired]]))
    keep = ~final
    pending = (names[rows.household[keep]], rows.j[keep], rows.units[keep])
    header = replace(state, judged_to=judged_to)
    new_state, warm, warming = _compact(table, names, pending, alerted, header, watermark_ms, rule)
    return BaselineResult(new_state, alerts, warm, warming)


@dataclass
class _Table:
    """The learned state of every household the bucket holds or the batch brings (`names`)."""

    applied: int
    newest: np.ndarray
    carried: np.ndarray
    in_a_row: np.ndarray
    usual: np.ndarray
    mean: np.ndarray
    count: np.ndarray
    slots: int

    @classmethod
    def widen(cls, state: BaselineState, names: np.ndarray, slots: int) -> "_Table":
        if len(names) == len(state.names) and len(state.usual) == len(names) * slots:  # most live batches: no one new
            return cls(state.applied, state.newest.copy(), state.carried.astype(np.float64),
                       state.in_a_row.copy(), state.usual.astype(np.float64), state.mean.astype(np.float64),
                       state.count.copy(), slots)
        at = np.searchsorted(names, state.names)
        per_household = [np.full(len(names), NO_WINDOW, dtype=np.int64), np.zeros(len(names)),
                         np.zeros(len(names), dtype=np.int64)]
        for column, stored in zip(per_household, (state.newest, state.carried, state.in_a_row)):
            column[at] = stored
        cells = (at[:, None] * slots + np.arange(slots)).ravel()
        usual, mean = np.zeros(len(names) * slots), np.zeros(len(names) * slots)
        count = np.zeros(len(names) * slots, dtype=np.int64)
        usual[cells], mean[cells], count[cells] = state.usual, state.mean, state.count
        return cls(state.applied, *per_household, usual, mean, count, slots)

    def copy(self) -> "_Table":
        return _Table(self.applied, self.newest.copy(), self.carried.copy(), self.in_a_row.copy(),
                      self.usual.copy(), self.mean.copy(), self.count.copy(), self.slots)


@dataclass(frozen=True)
class _Rows:
    """Pending windows: household index into `names`, j, units; sorted by (household, j)."""

    household: np.ndarray
    j: np.ndarray
    units: np.ndarray


def _pending(state: BaselineState, table: _Table, names: np.ndarray, households: np.ndarray,
             js: np.ndarray, units: np.ndarray) -> _Rows:
    """The stored pending windows plus the batch's readings, summed per (household, j); windows
    at or before a household's `applied` are left out (their readings came too late to count)."""
    index = np.concatenate([np.searchsorted(names, state.pending_households), np.searchsorted(names, households)])
    j = np.concatenate([state.pending_j, js])
    amounts = np.concatenate([state.pending_units, units])
    if len(j) == 0:
        return _Rows(index, j, amounts)
    base = int(j.min())
    span = int(j.max()) - base + 1
    keys = index * span + (j - base)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    keys, sums = ordered[starts], np.add.reduceat(amounts[order], starts)
    rows = _Rows(keys // span, keys % span + base, sums)
    fresh = rows.j > table.applied
    return _Rows(rows.household[fresh], rows.j[fresh], rows.units[fresh])


def _ranks(household: np.ndarray) -> list[np.ndarray]:
    """Indices of rows sorted by (household, j), in groups by their place in their household's
    run: the first window of every household, then the second, ..."""
    if not len(household):
        return []
    run_start = np.flatnonzero(np.concatenate([[True], household[1:] != household[:-1]]))
    rank = np.arange(len(household)) - np.repeat(run_start, np.diff(np.append(run_start, len(household))))
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], rank[by_rank], [rank.max() + 1]])))
    return [by_rank[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class _Notes:
    """The state of a (household, slot) cell right after each replayed window."""

    cell: np.ndarray
    j: np.ndarray
    usual: np.ndarray
    count: np.ndarray

    @classmethod
    def join(cls, a: "_Notes", b: "_Notes") -> "_Notes":
        return cls(*(np.concatenate([getattr(a, n), getattr(b, n)]) for n in ("cell", "j", "usual", "count")))


def _cells(rule: BaselineRule, household: np.ndarray, j: np.ndarray) -> np.ndarray:
    return household * rule.slots + (j * rule.window_s // rule.slot_s) % rule.slots


def _replay(table: _Table, rule: BaselineRule, rows: _Rows, chosen: np.ndarray) -> _Notes:
    """Apply the chosen rows to `table` in increasing j per household (the update of the
    contract, in its order of float operations), noting each cell's state after each."""
    index = np.flatnonzero(chosen)
    cell, x_all = _cells(rule, rows.household[index], rows.j[index]), rows.units[index] / KWH_UNITS
    usual, count = np.empty(len(index)), np.empty(len(index), dtype=np.int64)
    for at in _ranks(rows.household[index]):
        _update(table, rule, cell[at], x_all[at])
        usual[at], count[at] = table.usual[cell[at]], table.count[cell[at]]
    return _Notes(cell, rows.j[index], usual, count)


def _update(table: _Table, rule: BaselineRule, cells: np.ndarray, x: np.ndarray) -> None:
    usual, mean, n = table.usual[cells], table.mean[cells], table.count[cells]
    x = np.where(n >= rule.warmup, np.minimum(x, reference(rule, usual)), x)
    scale = np.maximum(mean, rule.excess_kwh / 10)
    moved = np.maximum(0.0, usual + rule.alpha * scale * (rule.quantile - (x <= usual)))
    first = n == 0
    table.usual[cells] = np.where(first, x, moved)
    table.mean[cells] = np.where(first, x, mean + rule.alpha * (x - mean))
    table.count[cells] = np.minimum(n + 1, MAX_COUNT)


@dataclass(frozen=True)
class _Judged:
    """Each pending row's judgement (rows judged for good before are not judged again): its slot's
    state at its cut-off, its reference, the excess carried into it and after it, the windows in
    a row ending at it, and whether it alerts."""

    usual: np.ndarray
    count: np.ndarray
    limit: np.ndarray
    carried_in: np.ndarray
    carried_out: np.ndarray
    in_a_row: np.ndarray
    fires: np.ndarray
    level: np.ndarray


def _judge(rule: BaselineRule, rows: _Rows, before: _Table, notes: _Notes, judged_to: int) -> _Judged:
    """Every pending row after `judged_to` against its slot's state at its cut-off (which no
    earlier batch has learned past), in increasing j per household, the excess carried from the
    window before it when that one holds a reading."""
    cells = _cells(rule, rows.household, rows.j)
    needs = (rows.j * rule.window_s - rule.watermark_s) // rule.window_s - 1
    usual, count = _lookup(cells, needs, notes, before)
    limit = reference(rule, usual)
    scored = (count >= rule.warmup) & (rows.j > judged_to)
    x = rows.units / KWH_UNITS
    fast_level, cap = _fast_level_and_cap(rule, usual)
    carried_in, carried_out = np.zeros(len(x)), np.zeros(len(x))
    in_a_row = np.zeros(len(x), dtype=np.int64)
    for at in _ranks(rows.household):
        previous = at - 1  # the row before in its household's run, when it is the window before
        follows = (at > 0) & (rows.household[np.maximum(previous, 0)] == rows.household[at]) \
            & (rows.j[np.maximum(previous, 0)] == rows.j[at] - 1)
        first = rows.j[at] == judged_to + 1  # what is carried into it was judged for good
        s_in = np.where(first, before.carried[rows.household[at]],
                        np.where(follows, carried_out[np.maximum(previous, 0)], 0.0))
        run_in = np.where(first, before.in_a_row[rows.household[at]],
                          np.where(follows, in_a_row[np.maximum(previous, 0)], 0))
        excess = x[at] - limit[at]
        carried_in[at] = np.where(scored[at], s_in, 0.0)
        carried_out[at] = np.where(scored[at], np.minimum(cap[at], np.maximum(0.0, s_in + excess)), 0.0)
        in_a_row[at] = np.where(scored[at] & (excess > 0), run_in + 1, 0)
    level = np.where(in_a_row >= rule.run, rule.persist_kwh, np.inf)
    if rule.fast_run:
        level = np.where(in_a_row >= rule.fast_run, np.minimum(level, fast_level), level)
    fires = scored & (carried_out > level)
    return _Judged(usual, count, limit, carried_in, carried_out, in_a_row, fires, level)


def _fast_level_and_cap(rule: BaselineRule, usual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the excess that alerts after `fast_run` windows in a row (F + c·q), and the most
    excess that may be carried: twice H, or the fast level plus H when that is more."""
    if not rule.fast_run:
        return np.full(len(usual), np.inf), np.full(len(usual), 2 * rule.persist_kwh)
    fast_level = rule.fast_kwh + rule.fast_scale * usual
    return fast_level, np.maximum(2 * rule.persist_kwh, fast_level + rule.persist_kwh)


def _lookup(cells: np.ndarray, needs: np.ndarray, notes: _Notes, before: _Table) -> tuple:
    """Each row's cell state (usual, count) after its `needs` window: the newest note of its cell
    at or before it, else the state learned before this batch."""
    usual, count = before.usual[cells], before.count[cells]
    if len(notes.j) and len(cells):
        base = int(min(notes.j.min(), needs.min())) - 1
        span = int(max(notes.j.max(), needs.max())) - base + 1
        note_keys = notes.cell * span + (notes.j - base)
        order = np.argsort(note_keys, kind="stable")
        at = np.searchsorted(note_keys[order], cells * span + (needs - base), side="right") - 1
        found = (at >= 0) & (notes.cell[order][np.maximum(at, 0)] == cells)
        hit = order[np.maximum(at, 0)]
        usual = np.where(found, notes.usual[hit], usual)
        count = np.where(found, notes.count[hit], count)
    return usual, count


def _already(state: BaselineState, names: np.ndarray, rows: _Rows) -> np.ndarray:
    """Which rows' windows the rule alerted in an earlier batch."""
    if not len(state.alerted_j) or not len(rows.j):
        return np.zeros(len(rows.j), dtype=bool)
    done = pd.MultiIndex.from_arrays([state.alerted_households, state.alerted_j])
    return pd.MultiIndex.from_arrays([names[rows.household], rows.j]).isin(done)


def _alerts(rule: BaselineRule, names: np.ndarray, rows: _Rows, judged: _Judged, fired: np.ndarray,
            windows: Windows) -> pd.DataFrame:
    """The rows that alert now, explained: the window sum above which a window alerts (given the
    excess carried into it), the slot's usual level, the excess carried in, its learning windows."""
    households = names[rows.household[fired]]
    starts = rows.j[fired] * (rule.window_s // rule.slide_s)
    threshold = judged.limit + np.maximum(0.0, judged.level - judged.carried_in)
    return pd.DataFrame({"household": households, "start_pane": starts, "units": rows.units[fired],
                         "threshold": threshold[fired], "usual": judged.usual[fired], "excess": judged.carried_in[fired],
                         "windows": judged.count[fired], "slot": ((rows.j * rule.window_s // rule.slot_s) % rule.slots)[fired],
                         "crossed_ms": windows.crossed_ms(households, starts)})


def _carry(table: _Table, before: _Table, rows: _Rows, judged: _Judged, was: int, now: int) -> None:
    """What each household carries into the window after `now` (the new `judged_to`): the excess
    and windows in a row of window `now` when it holds a reading; nothing when it holds none;
    unchanged when `judged_to` does not move."""
    if now == was:
        return
    table.carried = np.zeros(len(before.carried))
    table.in_a_row = np.zeros(len(before.in_a_row), dtype=np.int64)
    last = rows.j == now
    table.carried[rows.household[last]] = judged.carried_out[last]
    table.in_a_row[rows.household[last]] = judged.in_a_row[last]


def band(rule: BaselineRule, panes: np.ndarray, units: np.ndarray, starts: np.ndarray) -> pd.DataFrame:
    """One household's band: what each tumbling window starting at `starts` (panes) is judged
    against, learned from its readings (pane, units) as the job learns them. Columns start_pane,
    usual, windows (learning windows of the slot), limit (usual + allowance), threshold (the
    window sum that alerts with nothing carried in: limit + H), warm."""
    names = np.zeros(1, dtype=np.int64)
    empty = BaselineState.empty()
    table = _Table.widen(empty, names, rule.slots)
    rows = _pending(empty, table, names, np.zeros(len(panes), dtype=np.int64),
                    panes // (rule.window_s // rule.slide_s), units)
    before = table.copy()
    notes = _replay(table, rule, rows, np.ones(len(rows.j), dtype=bool))
    j = starts // (rule.window_s // rule.slide_s)
    usual, count = _lookup(_cells(rule, np.zeros(len(j), dtype=np.int64), j),
                           (j * rule.window_s - rule.watermark_s) // rule.window_s - 1, notes, before)
    limit = reference(rule, usual)
    return pd.DataFrame({"start_pane": starts, "usual": usual, "windows": count, "limit": limit,
                         "threshold": limit + rule.persist_kwh, "warm": count >= rule.warmup})


def _compact(table: _Table, names: np.ndarray, pending: tuple, alerted: tuple, header: BaselineState,
             watermark_ms: int, rule: BaselineRule) -> tuple[BaselineState, int, int]:
    """The state to store: households heard from within BASELINE_FORGET_AFTER (event time), and
    the alerted windows still judged. `header` gives the fields that are not per household."""
    horizon = watermark_ms // 1000 - rule.forget_after_s
    keep = (table.newest != NO_WINDOW) & ((table.newest + 1) * rule.window_s >= horizon)
    kept = names[keep]
    cells = np.repeat(keep, table.slots)
    in_kept = np.isin(pending[0], kept)
    open_alerts = (alerted[1] > header.judged_to) & np.isin(alerted[0], kept)
    warm_households = (table.count[cells].reshape(-1, table.slots) >= rule.warmup).all(axis=1) if table.slots else keep
    state = BaselineState(kept, table.newest[keep], table.carried[keep], table.in_a_row[keep],
                          table.usual[cells], table.mean[cells], table.count[cells],
                          *(part[in_kept] for part in pending), alerted[0][open_alerts], alerted[1][open_alerts],
                          header.fixed_rule, header.scoring, header.seed, header.judged_to, table.applied)
    warm = int(warm_households.sum())
    return state, warm, len(kept) - warm


@dataclass(frozen=True)
class Seed:
    """Baselines learned from the history's readings under the current rule (learn), for the
    job's buckets to take their households' learned state from (adopt)."""

    id: int
    state: BaselineState  # learned only: no pending windows, no alerted ones


def learn(rule: BaselineRule, households: np.ndarray, panes: np.ndarray, units: np.ndarray,
          newest_pane: int | None = None) -> BaselineState:
    """The contract's baselines over recorded readings (household code, pane, units; sums of
    several readings are as good), as the job would have learned them reading all of them:
    every window that ends D before the newest reading's window could still be open; the
    windows after it are left to the job. `newest_pane` defaults to the newest given."""
    if not len(panes):
        return BaselineState.empty()
    newest_pane = int(panes.max()) if newest_pane is None else newest_pane
    # The newest reading's pane is known, not its second: its last second, so that the seed
    # reaches at least as far as the job that read the readings.
    watermark_ms = ((newest_pane + 1) * rule.slide_s - 1 - rule.watermark_s) * 1000
    none = np.zeros(0, dtype=np.int64)
    readings = SimpleNamespace(households=households, panes=panes, units=units)
    windows = Windows(none, none, none, none, lambda _households, starts: np.zeros(len(starts), dtype=np.int64))
    learned = step(BaselineState.empty(), rule, readings, windows, watermark_ms).state
    return replace(learned, pending_households=none, pending_j=none, pending_units=none,
                   alerted_households=none, alerted_j=none)


def adopt(state: BaselineState, seed: Seed | None, households: np.ndarray, slots: int) -> BaselineState:
    """A bucket's state with the seed's learned state for its households: all of them the first
    time the bucket meets this seed (which then judges from where the seed did), then each
    household new to it. A household the seed does not know starts learning afresh. Pending
    windows the seed already learned are dropped."""
    if seed is None:
        return state
    incoming = np.unique(households)
    meeting = state.seed != seed.id
    take = np.union1d(state.names, incoming) if meeting else np.setdiff1d(incoming, state.names)
    if not len(take):
        return state
    names = np.union1d(state.names, take)
    table = _Table.widen(state, names, slots)
    at = np.searchsorted(names, take)
    table.carried[at], table.in_a_row[at] = 0.0, 0
    cells = (at[:, None] * slots + np.arange(slots)).ravel()
    table.usual[cells], table.mean[cells], table.count[cells] = 0.0, 0.0, 0
    known = np.isin(take, seed.state.names)
    from_at, seed_at = at[known], np.searchsorted(seed.state.names, take[known])
    learned = seed.state
    # The bucket learns and judges from where the seed did: what it learned past that is the
    # history's to give. The seed's excess is carried into the window after its judged_to; once the bucket has
    # judged past that window, a household it never heard from carries nothing.
    if meeting or state.judged_to == learned.judged_to:
        table.carried[from_at], table.in_a_row[from_at] = learned.carried[seed_at], learned.in_a_row[seed_at]
    table.newest[from_at] = np.maximum(table.newest[from_at], learned.newest[seed_at])
    to_cells = (from_at[:, None] * slots + np.arange(slots)).ravel()
    seed_cells = (seed_at[:, None] * slots + np.arange(slots)).ravel()
    table.usual[to_cells], table.mean[to_cells] = learned.usual[seed_cells], learned.mean[seed_cells]
    table.count[to_cells] = learned.count[seed_cells]
    applied = learned.applied if meeting else state.applied
    keep = state.pending_j > applied
    return BaselineState(names, table.newest, table.carried, table.in_a_row, table.usual, table.mean, table.count,
                         state.pending_households[keep], state.pending_j[keep], state.pending_units[keep],
                         state.alerted_households, state.alerted_j, state.fixed_rule, state.scoring, seed.id,
                         learned.judged_to if meeting else state.judged_to, applied)
