"""The baseline rule's state machine: per household and slot, an EWMA of its tumbling-window
sums, and the sliding windows scored against it (docs/contract.md, "Baseline rule").

A household's learning windows are the tumbling windows `[jW, (j+1)W)`; the job adds each
counted reading to its window's pending sum. A window `[t, t+W)` is scored against its slot's
state after exactly the learning windows with `(j+1)W <= t - D`. Such a state is rebuilt in each
batch from two parts of the bucket's state:

- the learned mean, variance and count per (household, slot), after every learning window up to
  `applied`: windows that can no longer change (each of their readings would now be late) and
  that no window still open is scored before;
- the pending learning windows after `applied`, as integer sums.

Each batch replays the pending windows in order on top of the learned state, noting the state
after each one, and looks up every scored window's state among those notes. So the result does
not depend on how readings are cut into micro-batches, only on the readings counted.

Everything is numpy on whole arrays, one call per state bucket; the replay loops over the
pending windows' ranks (one household at most once per step), not over households.
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

NO_WINDOW = np.iinfo(np.int64).min // 4  # `applied` of a household nothing was learned for yet
MAX_COUNT = np.iinfo(np.uint16).max
_FORMAT = 1
_HEADER = ("format", "households", "slots", "pending", "alerted", "fixed_rule", "scoring", "seed")


def fingerprint(text: str) -> int:
    """A rule's key as an int64, stored with the state to notice a changed rule."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little", signed=True)


@dataclass(frozen=True)
class BaselineState:
    """One bucket's baselines. Per household (ascending codes): the last learning window applied
    and the newest one with a reading; per (household, slot), row-major: mean, variance and
    count. Pending learning windows sorted by (household, j). Windows the rule already alerted."""

    names: np.ndarray
    applied: np.ndarray
    newest: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray
    pending_households: np.ndarray
    pending_j: np.ndarray
    pending_units: np.ndarray
    alerted_households: np.ndarray
    alerted_starts: np.ndarray
    fixed_rule: int = 0  # fingerprints of the rules the alerted windows belong to
    scoring: int = 0
    seed: int = 0  # the Seed its households were last taken from (0: none)

    @classmethod
    def empty(cls, fixed_rule: int = 0, scoring: int = 0) -> "BaselineState":
        i, f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return cls(i, i, i, f, f, i, i, i, i, i, i, fixed_rule, scoring)

    def is_empty(self) -> bool:
        return len(self.names) == 0 and len(self.alerted_starts) == 0

    def to_bytes(self) -> bytes:
        slots = len(self.mean) // len(self.names) if len(self.names) else 0
        header = np.array([_FORMAT, len(self.names), slots, len(self.pending_j), len(self.alerted_starts),
                           self.fixed_rule, self.scoring, self.seed], dtype=np.int64)
        parts = [header, self.names, self.applied, self.newest, self.mean.astype(np.float64),
                 self.var.astype(np.float64), self.count.astype(np.uint16), self.pending_households,
                 self.pending_j, self.pending_units, self.alerted_households, self.alerted_starts]
        return b"".join(np.ascontiguousarray(part).tobytes() for part in parts)

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> "BaselineState":
        if not blob:
            return cls.empty()
        reader = BlobReader(blob, _HEADER, _FORMAT, "baseline state")
        header, column = reader.header, reader.column
        h, cells, p, a = header["households"], header["households"] * header["slots"], header["pending"], header["alerted"]
        return cls(column(np.int64, h), column(np.int64, h), column(np.int64, h), column(np.float64, cells),
                   column(np.float64, cells), column(np.uint16, cells).astype(np.int64), column(np.int64, p),
                   column(np.int64, p), column(np.int64, p), column(np.int64, a), column(np.int64, a),
                   header["fixed_rule"], header["scoring"], header["seed"])

    def for_rules(self, fixed_rule: int, scoring: int) -> "BaselineState":
        """This state under the given rules: what was learned stays; the windows alerted under
        another scoring rule are forgotten, so the new rule may alert them with its own ids."""
        if self.scoring == scoring:
            return self if self.fixed_rule == fixed_rule else replace(self, fixed_rule=fixed_rule)
        none = np.zeros(0, dtype=np.int64)
        return replace(self, alerted_households=none, alerted_starts=none, fixed_rule=fixed_rule, scoring=scoring)


@dataclass(frozen=True)
class BaselineResult:
    state: BaselineState
    alerts: pd.DataFrame  # household, start_pane, units, threshold, mean, sigma, windows, slot
    warm: int  # households of the bucket whose every slot is warm
    warming: int


def threshold(rule: BaselineRule, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.maximum(rule.min_kwh, mean + rule.k * np.maximum(np.sqrt(var), rule.min_sigma_kwh))


def step(state: BaselineState, rule: BaselineRule, counted, windows: Windows, watermark_ms: int) -> BaselineResult:
    """One batch of a bucket: its counted readings (`counted.households`, `.panes`, `.units`), the
    sliding windows it touched with their sums, and the watermark."""
    min_open = rule.rule.first_open_pane(watermark_ms)
    panes_per_window = rule.window_s // rule.slide_s
    names = np.union1d(state.names, counted.households)
    table = _Table.widen(state, names, rule.slots)
    rows = _pending(state, table, names, counted.households, counted.panes // panes_per_window, counted.units)
    np.maximum.at(table.newest, rows.household, rows.j)

    candidates = _candidates(state, rule, names, windows)
    safe = (min_open * rule.slide_s - rule.watermark_s) // rule.window_s - 1
    cap = np.full(len(names), safe, dtype=np.int64)
    np.maximum.at(cap, candidates.household, candidates.needs)
    learned_before = (table.mean.copy(), table.var.copy(), table.count.copy())
    final = rows.j <= safe
    replayed = final | (rows.j <= cap[rows.household])
    notes = _replay(table, rule, rows, final)
    table.applied = np.maximum(table.applied, safe)
    notes_after = _replay(table.copy(), rule, rows, replayed & ~final)
    notes = _Notes.join(notes, notes_after)

    alerts = _score(rule, candidates, notes, learned_before, names)
    alerts.frame["crossed_ms"] = windows.crossed_ms(alerts.frame.household.to_numpy(np.int64),
                                                    alerts.frame.start_pane.to_numpy(np.int64))
    alerted = (np.concatenate([state.alerted_households, names[candidates.household][alerts.fired]]),
               np.concatenate([state.alerted_starts, candidates.starts[alerts.fired]]))
    keep = rows.j > safe
    pending = (names[rows.household[keep]], rows.j[keep], rows.units[keep])
    new_state, warm, warming = _compact(table, names, pending, alerted, watermark_ms, rule, state)
    return BaselineResult(new_state, alerts.frame, warm, warming)


@dataclass
class _Table:
    """The learned state of every household the bucket holds or the batch brings (`names`)."""

    applied: np.ndarray
    newest: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray
    slots: int

    @classmethod
    def widen(cls, state: BaselineState, names: np.ndarray, slots: int) -> "_Table":
        at = np.searchsorted(names, state.names)
        applied = np.full(len(names), NO_WINDOW, dtype=np.int64)
        newest = np.full(len(names), NO_WINDOW, dtype=np.int64)
        applied[at], newest[at] = state.applied, state.newest
        cells = (at[:, None] * slots + np.arange(slots)).ravel()
        mean, var = np.zeros(len(names) * slots), np.zeros(len(names) * slots)
        count = np.zeros(len(names) * slots, dtype=np.int64)
        mean[cells], var[cells], count[cells] = state.mean, state.var, state.count
        return cls(applied, newest, mean, var, count, slots)

    def copy(self) -> "_Table":
        return _Table(self.applied.copy(), self.newest.copy(), self.mean.copy(), self.var.copy(),
                      self.count.copy(), self.slots)


@dataclass(frozen=True)
class _Rows:
    """Pending learning windows: household index into `names`, j, units; sorted by (household, j)."""

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
    fresh = rows.j > table.applied[rows.household]
    return _Rows(rows.household[fresh], rows.j[fresh], rows.units[fresh])


@dataclass(frozen=True)
class _Candidates:
    household: np.ndarray  # index into names
    starts: np.ndarray  # start pane
    units: np.ndarray
    needs: np.ndarray  # the last learning window its state includes
    slot: np.ndarray


def _candidates(state: BaselineState, rule: BaselineRule, names: np.ndarray, windows: Windows) -> _Candidates:
    """The touched windows that could alert: above the floor, not alerted yet by this rule."""
    above = windows.units / KWH_UNITS > rule.min_kwh
    households, starts, units = windows.households[above], windows.starts[above], windows.units[above]
    if len(state.alerted_starts) and len(starts):
        done = pd.MultiIndex.from_arrays([state.alerted_households, state.alerted_starts])
        fresh = ~pd.MultiIndex.from_arrays([households, starts]).isin(done)
        households, starts, units = households[fresh], starts[fresh], units[fresh]
    t = starts * rule.slide_s
    return _Candidates(np.searchsorted(names, households), starts, units,
                       (t - rule.watermark_s) // rule.window_s - 1, (t // rule.slot_s) % rule.slots)


@dataclass(frozen=True)
class _Notes:
    """The state of a (household, slot) cell right after each replayed learning window."""

    cell: np.ndarray
    j: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray

    @classmethod
    def join(cls, a: "_Notes", b: "_Notes") -> "_Notes":
        return cls(*(np.concatenate([getattr(a, n), getattr(b, n)]) for n in ("cell", "j", "mean", "var", "count")))


def _replay(table: _Table, rule: BaselineRule, rows: _Rows, chosen: np.ndarray) -> _Notes:
    """Apply the chosen rows to `table` in increasing j per household (the update of the
    contract, in its order of float operations), noting each cell's state after each."""
    index = np.flatnonzero(chosen)
    household, j, x_all = rows.household[index], rows.j[index], rows.units[index] / KWH_UNITS
    cell = household * table.slots + (j * rule.window_s // rule.slot_s) % rule.slots
    notes = [np.empty(len(index)) for _ in range(2)] + [np.empty(len(index), dtype=np.int64)]
    if len(index):
        run_start = np.flatnonzero(np.concatenate([[True], household[1:] != household[:-1]]))
        rank = np.arange(len(index)) - np.repeat(run_start, np.diff(np.append(run_start, len(index))))
        by_rank = np.argsort(rank, kind="stable")
        bounds = np.flatnonzero(np.diff(np.concatenate([[-1], rank[by_rank], [rank.max() + 1]])))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            at = by_rank[lo:hi]
            _update(table, rule, cell[at], x_all[at])
            for note, values in zip(notes, (table.mean, table.var, table.count)):
                note[at] = values[cell[at]]
    return _Notes(cell, j, *notes)


def _update(table: _Table, rule: BaselineRule, cells: np.ndarray, x: np.ndarray) -> None:
    mean, var, n = table.mean[cells], table.var[cells], table.count[cells]
    x = np.where(n >= rule.warmup, np.minimum(x, threshold(rule, mean, var)), x)
    d = x - mean
    inc = rule.alpha * d
    first = n == 0
    table.mean[cells] = np.where(first, x, mean + inc)
    table.var[cells] = np.where(first, 0.0, (1.0 - rule.alpha) * (var + d * inc))
    table.count[cells] = np.minimum(n + 1, MAX_COUNT)


@dataclass(frozen=True)
class _Scored:
    fired: np.ndarray
    frame: pd.DataFrame


def _score(rule: BaselineRule, c: _Candidates, notes: _Notes, before: tuple, names: np.ndarray) -> _Scored:
    """Each candidate against its slot's state after its `needs` window."""
    mean, var, count = _lookup(rule, c, notes, before)
    limit = threshold(rule, mean, var)
    fired = (count >= rule.warmup) & (c.units / KWH_UNITS > limit)
    frame = pd.DataFrame({"household": names[c.household][fired], "start_pane": c.starts[fired],
                          "units": c.units[fired], "threshold": limit[fired], "mean": mean[fired],
                          "sigma": np.sqrt(var[fired]), "windows": count[fired], "slot": c.slot[fired]})
    return _Scored(fired, frame)


def _lookup(rule: BaselineRule, c: _Candidates, notes: _Notes, before: tuple) -> tuple:
    """Each candidate's slot state (mean, var, count) after its `needs` window: the newest note
    of its cell at or before it, else the state learned before this batch."""
    cells = c.household * rule.slots + c.slot
    mean, var, count = before[0][cells], before[1][cells], before[2][cells]
    if len(notes.j) and len(cells):
        base = int(min(notes.j.min(), c.needs.min())) - 1
        span = int(max(notes.j.max(), c.needs.max())) - base + 1
        note_keys = notes.cell * span + (notes.j - base)
        order = np.argsort(note_keys, kind="stable")
        at = np.searchsorted(note_keys[order], cells * span + (c.needs - base), side="right") - 1
        found = (at >= 0) & (notes.cell[order][np.maximum(at, 0)] == cells)
        hit = order[np.maximum(at, 0)]
        mean = np.where(found, notes.mean[hit], mean)
        var = np.where(found, notes.var[hit], var)
        count = np.where(found, notes.count[hit], count)
    return mean, var, count


def band(rule: BaselineRule, panes: np.ndarray, units: np.ndarray, starts: np.ndarray) -> pd.DataFrame:
    """One household's band: what each window starting at `starts` (panes) is scored against,
    learned from its readings (pane, units) as the job learns them. Columns start_pane, mean,
    sigma, windows (learning windows of the slot), threshold, warm."""
    names = np.zeros(1, dtype=np.int64)
    empty = BaselineState.empty()
    table = _Table.widen(empty, names, rule.slots)
    rows = _pending(empty, table, names, np.zeros(len(panes), dtype=np.int64),
                    panes // (rule.window_s // rule.slide_s), units)
    before = (table.mean.copy(), table.var.copy(), table.count.copy())
    notes = _replay(table, rule, rows, np.ones(len(rows.j), dtype=bool))
    t = starts * rule.slide_s
    windows = _Candidates(np.zeros(len(starts), dtype=np.int64), starts, np.zeros(len(starts), dtype=np.int64),
                          (t - rule.watermark_s) // rule.window_s - 1, (t // rule.slot_s) % rule.slots)
    mean, var, count = _lookup(rule, windows, notes, before)
    return pd.DataFrame({"start_pane": starts, "mean": mean, "sigma": np.sqrt(var), "windows": count,
                         "threshold": threshold(rule, mean, var), "warm": count >= rule.warmup})


def _compact(table: _Table, names: np.ndarray, pending: tuple, alerted: tuple, watermark_ms: int,
             rule: BaselineRule, old: BaselineState) -> tuple[BaselineState, int, int]:
    """The state to store: households heard from within BASELINE_FORGET_AFTER (event time)
    and alerted windows still open."""
    min_open = rule.rule.first_open_pane(watermark_ms)
    horizon = watermark_ms // 1000 - rule.forget_after_s
    keep = (table.newest != NO_WINDOW) & ((table.newest + 1) * rule.window_s >= horizon)
    kept = names[keep]
    cells = np.repeat(keep, table.slots)
    in_kept = np.isin(pending[0], kept)
    open_alerts = (alerted[1] >= min_open) & np.isin(alerted[0], kept)
    warm_households = (table.count[cells].reshape(-1, table.slots) >= rule.warmup).all(axis=1) if table.slots else keep
    state = BaselineState(kept, table.applied[keep], table.newest[keep], table.mean[cells], table.var[cells],
                          table.count[cells], *(part[in_kept] for part in pending), alerted[0][open_alerts],
                          alerted[1][open_alerts], old.fixed_rule, old.scoring, old.seed)
    warm = int(warm_households.sum())
    return state, warm, len(kept) - warm


def no_alerts() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=kind) for name, kind in (
        ("household", np.int64), ("start_pane", np.int64), ("units", np.int64), ("threshold", np.float64),
        ("mean", np.float64), ("sigma", np.float64), ("windows", np.int64), ("slot", np.int64))})


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
    every learning window that ends D before the newest reading's window could still be open;
    the windows after it are left to the job. `newest_pane` defaults to the newest given."""
    if not len(panes):
        return BaselineState.empty()
    newest_pane = int(panes.max()) if newest_pane is None else newest_pane
    # The newest reading's pane is known, not its second: its last second, so that the seed
    # reaches at least as far as the job that read the readings.
    watermark_ms = ((newest_pane + 1) * rule.slide_s - 1 - rule.watermark_s) * 1000
    none = np.zeros(0, dtype=np.int64)
    readings = SimpleNamespace(households=households, panes=panes, units=units)
    learned = step(BaselineState.empty(), rule, readings, Windows(none, none, none, lambda h, s: none),
                   watermark_ms).state
    return replace(learned, pending_households=none, pending_j=none, pending_units=none)


def adopt(state: BaselineState, seed: Seed | None, households: np.ndarray, slots: int) -> BaselineState:
    """A bucket's state with the seed's learned state for its households: all of them the first
    time the bucket meets this seed, then each household new to it. A household the seed does
    not know starts learning afresh. Pending windows the seed already learned are dropped."""
    if seed is None:
        return state
    incoming = np.unique(households)
    take = np.union1d(state.names, incoming) if state.seed != seed.id else np.setdiff1d(incoming, state.names)
    if not len(take):
        return state
    names = np.union1d(state.names, take)
    table = _Table.widen(state, names, slots)
    at = np.searchsorted(names, take)
    table.applied[at] = NO_WINDOW
    cells = (at[:, None] * slots + np.arange(slots)).ravel()
    table.mean[cells], table.var[cells], table.count[cells] = 0.0, 0.0, 0
    known = np.isin(take, seed.state.names)
    from_at, seed_at = at[known], np.searchsorted(seed.state.names, take[known])
    table.applied[from_at] = seed.state.applied[seed_at]
    table.newest[from_at] = np.maximum(table.newest[from_at], seed.state.newest[seed_at])
    to_cells = (from_at[:, None] * slots + np.arange(slots)).ravel()
    seed_cells = (seed_at[:, None] * slots + np.arange(slots)).ravel()
    table.mean[to_cells], table.var[to_cells] = seed.state.mean[seed_cells], seed.state.var[seed_cells]
    table.count[to_cells] = seed.state.count[seed_cells]
    keep = state.pending_j > table.applied[np.searchsorted(names, state.pending_households)]
    return BaselineState(names, table.applied, table.newest, table.mean, table.var, table.count,
                         state.pending_households[keep], state.pending_j[keep], state.pending_units[keep],
                         state.alerted_households, state.alerted_starts, state.fixed_rule, state.scoring, seed.id)
