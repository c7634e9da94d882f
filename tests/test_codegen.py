"""A micro-batch runs code compiled for an earlier batch: nothing in the job's plan changes from
batch to batch, so Spark's code cache answers and the JIT keeps what it compiled.

current_timestamp() broke this: Spark inlines the batch's time in the generated code, so the read
stage's class was compiled anew in every batch (Janino, then the JIT from the interpreter up)."""
from __future__ import annotations

from helpers import publish, run_job_once

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
    assert sum(c.alerts for c in batches[1:]) > 0 and sum(sum(c.invalid_by_reason.values()) for c in batches[1:]) > 0
    new_per_batch = [after - before for before, after in zip(compiled[1:], compiled[2:])]
    assert max(new_per_batch) <= CLASSES_PER_BATCH_ALLOWED, f"classes compiled per batch after the second: {new_per_batch}"
