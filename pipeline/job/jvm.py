"""The JVM state operator (jvm/, docs/decisions/0017-a-jvm-state-operator-for-large-fleets.md):
the same state step as state.py, keyed by state bucket with each household's state read and
written only when a batch holds a reading of it, so a batch costs what it reads.

The Python side builds its rules text once from the settings (`rules_text`), calls it on the
staged readings (`jvm_outputs`), and reads what each batch did from its accumulator (JvmTally).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.core.alert import Kind
from pipeline.core.rules.baseline import Seed
from pipeline.job.counts import BatchCounts, BucketFigures
from pipeline.job.state import Rules

OPERATOR = "energy.monitor.state.Operator"
ACCUMULATOR = "energy.monitor.state.TallyAccumulator"


def rules_text(rules: Rules) -> str:
    """The `name=value;...` text energy.monitor.state.Rules reads: every number the operator
    judges with, the baseline's only when it is on."""
    fixed = rules.fixed
    fixed_fp, scoring_fp = rules.fingerprints
    values = {"slide_s": fixed.slide_s, "window_s": fixed.window_s, "watermark_s": fixed.watermark_s,
              "threshold_units": fixed.threshold_units, "capacity": rules.capacity, "fixed_rule": fixed_fp,
              "scoring_rule": scoring_fp}
    learning = rules.baseline
    if learning is not None:
        values.update({"slot_s": learning.slot_s, "slots": learning.slots, "quantile": repr(learning.quantile),
                       "alpha": repr(learning.alpha), "warmup": learning.warmup,
                       "excess_kwh": repr(learning.excess_kwh), "persist_kwh": repr(learning.persist_kwh),
                       "run": learning.run, "fast_run": learning.fast_run, "fast_kwh": repr(learning.fast_kwh),
                       "fast_scale": repr(float(learning.fast_scale)), "forget_after_s": learning.forget_after_s})
    return ";".join(f"{name}={value}" for name, value in values.items())


def tally_accumulator(spark):
    """A new accumulator of the operator's tally lines, registered with the session (without a
    name: Spark's UI would render every task's lines)."""
    accumulator = spark._jvm.energy.monitor.state.TallyAccumulator()
    spark.sparkContext._jsc.sc().register(accumulator)
    return accumulator


def seed_bytes(seed: Seed) -> bytes:
    """The seed as energy.monitor.state.Seed reads it (little-endian): a header, then per
    household its code, newest window, carried excess and run, then per cell usual, mean, count."""
    learned = seed.state
    households = len(learned.names)
    slots = len(learned.usual) // households if households else 0
    header = np.array([seed.id, learned.judged_to, learned.applied, slots, households], dtype="<i8")
    per_household = np.zeros(households, dtype=[("code", "<i8"), ("newest", "<i8"), ("carried", "<f8"),
                                                ("run", "<i8")])
    per_household["code"], per_household["newest"] = learned.names, learned.newest
    per_household["carried"], per_household["run"] = learned.carried, learned.in_a_row
    cells = np.zeros(households * slots, dtype=[("usual", "<f8"), ("mean", "<f8"), ("count", "<i8")])
    cells["usual"], cells["mean"], cells["count"] = learned.usual, learned.mean, learned.count
    return header.tobytes() + per_household.tobytes() + cells.tobytes()


def jvm_outputs(spark, staged, rules: Rules, accumulator):
    """The operator's output rows (state.OUTPUT_COLUMNS, one value each) of the staged readings;
    `rules.seed` a baseline.Seed or None."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    # The operator filters every input row older than the watermark by a column that carries its
    # mark: none may here, since late readings are the operator's to count (the watermark reaches
    # it all the same, from withWatermark upstream).
    keyed = staged.select(*(F.col(c) for c in staged.columns if c not in ("epoch_s", "bucket")),
                          (F.col("epoch_s") + 0).alias("epoch_s"), F.col("bucket").cast("long").alias("bucket"))
    operator = spark._jvm.energy.monitor.state.Operator
    seed = None if rules.seed is None else spark.sparkContext._jsc.broadcast(bytearray(seed_bytes(rules.seed)))
    return DataFrame(operator.apply(keyed._jdf, rules_text(rules), accumulator, seed), spark)


class JvmTally:
    """The router's view of the operator's accumulator: a batch's counts, taken out when Spark
    reports the batch."""

    def __init__(self, accumulator):
        self.accumulator = accumulator

    def take(self, batch_id: int) -> BatchCounts:
        counts = BatchCounts()
        for line in self.accumulator.take(batch_id):
            counts = counts + parse_line(str(line))
        return counts


def _pairs(text: str) -> Counter:
    return Counter({key: int(n) for key, n in (pair.split("=") for pair in text.split(",") if pair)})


def parse_line(line: str) -> BatchCounts:
    """One operator call's tally line (energy.monitor.state.Tally) as BatchCounts."""
    batch, fixed, learned, late, duplicates, reasons, crossings, bucket = line.split("|")
    key, households, stored, warm, warming = (int(v) for v in bucket.split(":"))
    alerts = Counter({kind.value: int(n) for kind, n in ((Kind.THRESHOLD, fixed), (Kind.BASELINE, learned)) if int(n)})
    return BatchCounts(batch_id=int(batch), alerts=alerts,
                       crossings=Counter({int(k): n for k, n in _pairs(crossings).items()}),
                       late_readings=int(late), duplicate_readings=int(duplicates), invalid_by_reason=_pairs(reasons),
                       buckets={key: BucketFigures(households, stored, warm, warming)})
