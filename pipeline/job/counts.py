"""What a micro-batch did, as one typed record (BatchCounts), added up in one place (`+`): by the
state function's accumulator per batch, by the driver per run.

Each call of the state function (one state bucket, one batch) adds a BatchCounts to an
accumulator keyed by the batch id (BatchTally); the driver takes a batch's record out when Spark
reports the batch's progress (driver.BatchCountsRouter), so a micro-batch is one Spark job and
the accumulator holds a batch's or two's records at most.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from pyspark.accumulators import AccumulatorParam


@dataclass(frozen=True)
class BucketFigures:
    """A state bucket after a batch touched it."""

    households: int  # in its state, whether or not the baseline is on
    stored_bytes: int
    warm: int = 0  # households whose baseline is warm in every slot
    warming: int = 0


@dataclass(frozen=True)
class BatchCounts:
    """What one batch did, or several added up."""

    batch_id: int = -1  # the newest batch counted in
    batches: int = 0
    alerts: Counter = field(default_factory=Counter)  # by kind (core.alert.Kind values)
    # Alerts by the centisecond their crossing reading reached Kafka (epoch), for their latency.
    crossings: Counter = field(default_factory=Counter)
    late_readings: int = 0
    duplicate_readings: int = 0  # readings already counted: the same household and timestamp
    invalid_by_reason: Counter = field(default_factory=Counter)  # dead letters, by reason
    buckets: dict[int, BucketFigures] = field(default_factory=dict)  # the newest of each bucket touched

    def __add__(self, other: "BatchCounts") -> "BatchCounts":
        return BatchCounts(max(self.batch_id, other.batch_id), self.batches + other.batches,
                           self.alerts + other.alerts, self.crossings + other.crossings,
                           self.late_readings + other.late_readings,
                           self.duplicate_readings + other.duplicate_readings,
                           self.invalid_by_reason + other.invalid_by_reason, {**self.buckets, **other.buckets})

    def as_batch(self, batch_id: int) -> "BatchCounts":
        """These counts as those of one reported batch."""
        return replace(self, batch_id=batch_id, batches=1)

    @property
    def alert_total(self) -> int:
        return sum(self.alerts.values())

    def latencies_s(self, written_ms: float) -> list[tuple[float, int]]:
        """(seconds from a crossing reading reaching Kafka to `written_ms`, how many alerts),
        rounded to 10 ms."""
        return [(round((written_ms - centisecond * 10) / 1000, 2), n) for centisecond, n in self.crossings.items()]

    def households(self) -> tuple[int, int]:
        """Households in the state and bytes stored, over the buckets counted."""
        return (sum(b.households for b in self.buckets.values()), sum(b.stored_bytes for b in self.buckets.values()))


class BatchTally(AccumulatorParam):
    """{batch id: BatchCounts}, added up per batch."""

    def zero(self, _value):
        return {}

    def addInPlace(self, total: dict, more: dict) -> dict:
        for batch, counts in more.items():
            total[batch] = total[batch] + counts if batch in total else counts
        return total


class PythonTally:
    """The router's view of the Python state function's accumulator (BatchTally): a batch's
    counts, taken out when Spark reports the batch."""

    def __init__(self, accumulator):
        self.accumulator = accumulator

    def take(self, batch_id: int) -> "BatchCounts":
        counts = BatchCounts()
        for batch in [b for b in self.accumulator.value if b <= batch_id]:
            counts = counts + self.accumulator.value.pop(batch)
        return counts


@dataclass
class RunTotals:
    """One run's batches added up, for the summary `stream --once` prints."""

    counts: BatchCounts = field(default_factory=BatchCounts)
    readings: int = 0  # records read from Kafka (query progress)
    seconds: float = 0.0  # from the query's start to its end

    def add(self, counts: BatchCounts) -> None:
        self.counts = self.counts + counts

    def add_progress(self, progress: dict) -> None:
        self.readings += int(progress.get("numInputRows") or 0)

    def summary(self) -> str:
        c = self.counts
        invalid = sum(c.invalid_by_reason.values())
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(c.invalid_by_reason.items()))
        rate = f" ({self.readings / self.seconds:,.0f}/s)" if self.seconds > 0 else ""
        return (f"batches {c.batches}, readings {self.readings} in {self.seconds:.1f} s{rate}, alerts "
                f"{c.alert_total}, late readings dropped {c.late_readings}, invalid readings {invalid}"
                + (f" ({reasons})" if reasons else "") + f", duplicate readings {c.duplicate_readings}")
