"""An independent, deliberately naive model of the alert contract, for expectations in tests.

Every reading is added to every window that contains it (as Spark's `window()` expands it),
one reading at a time; the watermark moves only between micro-batches, as in Spark. No code
is shared with the pipeline.
"""
from __future__ import annotations

import math
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
            self.max_event = t if self.max_event is None else max(self.max_event, t)
        if self.max_event is not None:
            self.watermark = max(self.watermark, self.max_event - self.watermark_s)

    def alerts(self) -> dict[tuple[str, str, str], Decimal]:
        return {(h, iso(s), iso(s + self.window_s)): total for (h, s), total in self.sums.items()
                if total > self.threshold_kwh}


def expected_windows(lines: list[str], rule) -> set[tuple[str, str, str]]:
    """(household, window start, window end) of every alert that valid CSV `lines`, read in one
    batch, make under `rule` (a pipeline Rule: only its numbers are used)."""
    model = Expectation(rule.window_s, rule.slide_s, Decimal(str(rule.threshold)), rule.watermark_s)
    model.batch([tuple(line.split(",")) for line in lines])
    return set(model.alerts())


@dataclass
class BaselineExpectation:
    """The baseline rule of the contract, read literally: every counted reading in its learning
    window and its sliding windows; each sliding window scored against its slot's state after
    exactly the learning windows with (j+1)W <= t - D, applied one at a time in increasing j."""

    window_s: int
    slide_s: int
    watermark_s: int
    slot_s: int
    slots: int
    alpha: float
    k: float
    warmup: int
    min_kwh: float
    min_sigma: float
    sums: dict = field(default_factory=lambda: defaultdict(Decimal))
    learning: dict = field(default_factory=lambda: defaultdict(Decimal))
    touched: dict = field(default_factory=dict)  # (household, start) -> batches that counted a reading in it
    batches: int = 0
    watermark: int = 0
    max_event: int | None = None

    def batch(self, readings: list[tuple[str, int, Decimal]]) -> None:
        """readings: (household, epoch seconds, kWh), all valid."""
        for household, t, kwh in readings:
            first = t - t % self.slide_s - self.window_s + self.slide_s
            open_starts = [s for s in range(first, t + 1, self.slide_s)
                           if s <= t < s + self.window_s and s + self.window_s > self.watermark]
            if not open_starts:
                continue  # late: counted nowhere
            for s in open_starts:
                self.sums[(household, s)] += kwh
                self.touched.setdefault((household, s), set()).add(self.batches)
            self.learning[(household, t // self.window_s)] += kwh
            self.max_event = t if self.max_event is None else max(self.max_event, t)
        if self.max_event is not None:
            self.watermark = max(self.watermark, self.max_event - self.watermark_s)
        self.batches += 1

    def threshold(self, mean: float, var: float) -> float:
        return max(self.min_kwh, mean + self.k * max(math.sqrt(var), self.min_sigma))

    def _apply(self, cell: list, x: float) -> None:
        mean, var, n = cell
        if n >= self.warmup:
            x = min(x, self.threshold(mean, var))
        if n == 0:
            cell[:] = [x, 0.0, 1]
        else:
            d = x - mean
            inc = self.alpha * d
            cell[:] = [mean + inc, (1 - self.alpha) * (var + d * inc), n + 1]

    def alerts(self, in_batch: int | None = None) -> dict[tuple[str, str], tuple]:
        """(household, window start) -> (threshold, mean, sigma, n, slot) of every baseline alert,
        or of those whose window counted a reading in batch `in_batch`."""
        out = {}
        for household in sorted({h for h, _ in self.sums}):
            learned = sorted((j, float(x)) for (h, j), x in self.learning.items() if h == household)
            cells, applied = {}, 0
            for (h, t) in sorted(key for key in self.sums if key[0] == household):
                while applied < len(learned) and (learned[applied][0] + 1) * self.window_s <= t - self.watermark_s:
                    j, x = learned[applied]
                    self._apply(cells.setdefault((j * self.window_s // self.slot_s) % self.slots, [0.0, 0.0, 0]), x)
                    applied += 1
                slot = (t // self.slot_s) % self.slots
                mean, var, n = cells.get(slot, [0.0, 0.0, 0])
                limit = self.threshold(mean, var)
                if n >= self.warmup and float(self.sums[(h, t)]) > limit and (
                        in_batch is None or in_batch in self.touched[(h, t)]):
                    out[(h, iso(t))] = (limit, mean, math.sqrt(var), n, slot)
        return out
