"""A micro-batch runs code compiled for an earlier batch: nothing in the job's plan changes from
batch to batch, so Spark's code cache answers and the JIT keeps what it compiled.

current_timestamp() broke this: Spark inlines the batch's time in the generated code, so the read
stage's class was compiled anew in every batch (Janino, then the JIT from the interpreter up)."""
from __future__ import annotations

from helpers import publish, run_job_once
from pipeline.core.settings import ReadingsSettings

# Spark's own per-batch class: the stateful operator's watermark predicate embeds the watermark.
CLASSES_PER_BATCH_ALLOWED = 1


def test_later_batches_compile_no_new_code(spark, make_settings):
    settings = make_settings(run_mode="demo", max_offsets_per_trigger=15, starting_offsets="earliest")
    lines = []
    for minute in range(6):
        for household in range(1, 5):
            lines += [f"2026-01-05T17:{minute:02d}:{second:02d}Z,H{household:03d},0.02" for second in (5, 20, 35, 50)]
        lines.append(f"2026-01-05T17:{minute:02d}:59Z,H001,not-a-number")
    publish(settings, lines)
    metrics = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics
    compiled = []  # classes compiled so far, after each batch
    batches = run_job_once(spark, settings, lambda _counts: compiled.append(metrics.METRIC_COMPILATION_TIME().getCount()))

    assert len(batches) >= 5, f"{len(batches)} batches"
    assert sum(c.alert_total for c in batches[1:]) > 0 and sum(sum(c.invalid_by_reason.values()) for c in batches[1:]) > 0
    # The count is read when Spark reports a batch, off the batch's thread, so a class compiled
    # at the start of the next batch can be counted with this one: the total is what is held.
    new_per_batch = [after - before for before, after in zip(compiled[1:], compiled[2:])]
    assert sum(new_per_batch) <= CLASSES_PER_BATCH_ALLOWED * len(new_per_batch), (
        f"classes compiled per batch after the second: {new_per_batch}")


def test_lines_are_checked_in_whole_stage_generated_code(spark):
    """Only the clock's own projection runs outside whole-stage code (`reflect` has none): with
    the clock read inside the checks, all three of their projections did."""
    from pyspark.sql import functions as F

    from pipeline.job.validate import NOW_S, parse_readings

    raw = spark.createDataFrame([(b"2026-01-05T17:00:15Z,H001,0.01234", 3)], "value binary, offset long").select(
        "value", F.lit("energy_readings").alias("topic"), F.lit(0).alias("partition"), "offset",
        F.current_timestamp().alias("timestamp"))
    plan = parse_readings(raw, ReadingsSettings(100.0, 1024, 300))._jdf.queryExecution().executedPlan().toString()
    projections = [line.strip(" +-:") for line in plan.splitlines() if "Project [" in line]
    outside = [p for p in projections if not p.startswith("*(")]
    assert len(projections) >= 4
    assert len(outside) == 1 and NOW_S in outside[0], plan
