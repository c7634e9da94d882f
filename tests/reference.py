"""An independent, deliberately naive model of the alert contract, for expectations in tests.

Every reading is added to every window that contains it (as Spark's `window()` expands it),
one reading at a time; the watermark moves only between micro-batches, as in Spark. No code
is shared with the pipeline.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal


def epoch(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Expectation:
    window_s: int
    slide_s: int
    threshold_kwh: Decimal
    watermark_s: int
    sums: dict = field(default_factory=lambda: defaultdict(Decimal))
    touched: dict = field(default_factory=dict)  # (household, start) -> batches that counted a reading in it
    batches: int = 0
    late: int = 0
    watermark: int = 0  # seconds; Spark starts at 0
    max_event: int | None = None

    def batch(self, readings: list[tuple[str, str, str]]) -> None:
        """readings: (timestamp, household, kwh) strings, all valid."""
        for stamp, household, kwh in readings:
            t = epoch(stamp)
            first = t - t % self.slide_s - self.window_s + self.slide_s
            starts = [s for s in range(first, t + 1, self.slide_s) if s <= t < s + self.window_s]
            open_starts = [s for s in starts if s + self.window_s > self.watermark]
            if not open_starts:
                self.late += 1
            for s in open_starts:
                self.sums[(household, s)] += Decimal(kwh)
                self.touched.setdefault((household, s), set()).add(self.batches)
            self.max_event = t if self.max_event is None else max(self.max_event, t)
        if self.max_event is not None:
            self.watermark = max(self.watermark, self.max_event - self.watermark_s)
        self.batches += 1

    def alerts(self) -> dict[tuple[str, str, str], Decimal]:
        return {(h, iso(s), iso(s + self.window_s)): total for (h, s), total in self.sums.items()
                if total > self.threshold_kwh}


def valid_readings(data: bytes) -> list[tuple[str, int, int]]:
    """(household, epoch s, nano-kWh) of the lines the contract accepts (a plain model of it)."""
    out = []
    for raw in data.split(b"\n"):
        try:
            stamp, household, kwh = raw.decode().split(",")
            t, value = epoch(stamp), Decimal(kwh)
        except (UnicodeDecodeError, ValueError, ArithmeticError):
            continue
        if (stamp.endswith("Z") or stamp[-6] in "+-") and household[0] == "H" and household[1:].isdigit() \
                and 3 <= len(household) - 1 <= 12 and value.is_finite() and 0 <= value <= 10 and "e" not in kwh.lower():
            out.append((household, t, int(value * 10**9)))
    return out


def expected_windows(lines: list[str], rule) -> set[tuple[str, str, str]]:
    """(household, window start, window end) of every alert that valid CSV `lines`, read in one
    batch, make under `rule` (a pipeline Rule: only its numbers are used)."""
    model = Expectation(rule.window_s, rule.slide_s, Decimal(str(rule.threshold)), rule.watermark_s)
    model.batch([tuple(line.split(",")) for line in lines])
    return set(model.alerts())


@dataclass
class BaselineExpectation:
    """The baseline rule of the contract, read literally, one window at a time: every counted
    reading in its tumbling window; a household's windows in increasing j, each judged against its
    slot's state after exactly the windows with (j'+1)W <= jW - D, applied one at a time in
    increasing j'; the excess carried only from the window just before."""

    window_s: int
    slide_s: int
    watermark_s: int
    slot_s: int
    slots: int
    quantile: float
    alpha: float
    warmup: int
    excess: float
    persist: float
    run: int
    fast_run: int
    fast: float
    fast_scale: float
    windows: dict = field(default_factory=lambda: defaultdict(Decimal))  # (household, j) -> kWh
    heard: dict = field(default_factory=dict)  # batch -> households it counted a reading of
    open_at: dict = field(default_factory=dict)  # batch -> the first window a reading in it can count in
    batches: int = 0
    watermark: int = 0
    max_event: int | None = None

    def batch(self, readings: list[tuple[str, int, Decimal]]) -> None:
        """readings: (household, epoch seconds, kWh), all valid."""
        # The watermark a batch runs with is the one the batches before it reached.
        first_open_slide = self.watermark // self.slide_s - self.window_s // self.slide_s + 1
        self.open_at[self.batches] = first_open_slide * self.slide_s // self.window_s
        heard = self.heard.setdefault(self.batches, set())
        for household, t, kwh in readings:
            first = t - t % self.slide_s - self.window_s + self.slide_s
            if not any(s + self.window_s > self.watermark for s in range(first, t + 1, self.slide_s)):
                continue  # late: counted nowhere
            self.windows[(household, t // self.window_s)] += kwh
            heard.add(household)
            self.max_event = t if self.max_event is None else max(self.max_event, t)
        if self.max_event is not None:
            self.watermark = max(self.watermark, self.max_event - self.watermark_s)
        self.batches += 1

    def _learn(self, cell: dict, x: float) -> None:
        if cell["n"] >= self.warmup:
            x = min(x, cell["q"] + self.excess)
        if cell["n"] == 0:
            cell["q"], cell["m"] = x, x
        else:
            step = self.alpha * max(cell["m"], self.excess / 10)
            below = 1.0 if x <= cell["q"] else 0.0
            cell["q"] = max(0.0, cell["q"] + step * (self.quantile - below))
            cell["m"] = cell["m"] + self.alpha * (x - cell["m"])
        cell["n"] = min(cell["n"] + 1, 65535)

    def end_and_sum(self, household: str, start: str) -> list:
        """A window's end and final sum in kWh."""
        j = epoch(start) // self.window_s
        return [iso((j + 1) * self.window_s), float(self.windows[(household, j)])]

    def alerts(self, in_batch: int | None = None, seeded: bool = False) -> dict[tuple[str, str], tuple]:
        """(household, window start) -> (threshold, usual, excess carried in, n, slot) of every
        baseline alert, or of those batch `in_batch` judges: the windows of the households it
        counted a reading of that a reading could count in in the batch before it (or, `seeded`:
        in it, for a restart that takes its baselines from the history)."""
        judged_from = self.open_at.get(in_batch if seeded else in_batch - 1) if in_batch is not None else None
        out = {}
        for household in sorted({h for h, _ in self.windows}):
            mine = sorted((j, float(x)) for (h, j), x in self.windows.items() if h == household)
            cells, applied, carried, in_a_row, previous = {}, 0, 0.0, 0, None
            for j, x in mine:
                while applied < len(mine) and (mine[applied][0] + 1) * self.window_s <= j * self.window_s - self.watermark_s:
                    jj, xx = mine[applied]
                    self._learn(cells.setdefault((jj * self.window_s // self.slot_s) % self.slots,
                                                 {"q": 0.0, "m": 0.0, "n": 0}), xx)
                    applied += 1
                slot = (j * self.window_s // self.slot_s) % self.slots
                cell = cells.get(slot, {"q": 0.0, "m": 0.0, "n": 0})
                if previous != j - 1:
                    carried, in_a_row = 0.0, 0
                previous = j
                if cell["n"] < self.warmup:
                    carried, in_a_row = 0.0, 0
                    continue
                limit = cell["q"] + self.excess
                fast = self.fast + self.fast_scale * cell["q"] if self.fast_run else None
                cap = 2 * self.persist if fast is None else max(2 * self.persist, fast + self.persist)
                carried_in = carried
                carried = min(cap, max(0.0, carried + (x - limit)))
                in_a_row = in_a_row + 1 if x - limit > 0 else 0
                passed = [self.persist] if in_a_row >= self.run else []
                if fast is not None and in_a_row >= self.fast_run:
                    passed.append(fast)
                level = min(passed, default=None)
                if level is not None and carried > level and (in_batch is None or (
                        household in self.heard[in_batch] and (judged_from is None or j >= judged_from))):
                    threshold = limit + max(0.0, level - carried_in)
                    out[(household, iso(j * self.window_s))] = (threshold, cell["q"], carried_in, cell["n"], slot)
        return out
