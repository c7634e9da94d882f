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
    model = Expectation(rule.window_s, rule.slide_s, Decimal(str(rule.threshold_kwh)), rule.watermark_s)
    model.batch([tuple(line.split(",")) for line in lines])
    return set(model.alerts())
