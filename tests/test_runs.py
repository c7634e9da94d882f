"""What a stream run leaves in its checkpoint directory (pipeline/runs.py): deaths by batch and
cause, the crash-loop line, a stuck batch planned again, a failure's cause in a few words."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.job.runs import RunRecord, batch_readings, cause_of, pending_batch

OOM_TASK = ("org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 29.0 failed 1 "
            "times, most recent failure: Lost task 1.0 in stage 29.0 (TID 89) (localhost executor driver): "
            "org.apache.arrow.memory.OutOfMemoryException: Failure allocating buffer.\n\tat io.netty.buffer...\n"
            "Caused by: io.netty.util.internal.OutOfDirectMemoryError: failed to allocate 856603832 byte(s)")


def plan(checkpoint: Path, batch: int, offsets: dict, committed: bool = False) -> None:
    (checkpoint / "offsets").mkdir(parents=True, exist_ok=True)
    (checkpoint / "commits").mkdir(exist_ok=True)
    (checkpoint / "offsets" / str(batch)).write_text('v1\n{"batchWatermarkMs":0}\n' + json.dumps({"readings": offsets}))
    if committed:
        (checkpoint / "commits" / str(batch)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def test_two_deaths_in_one_batch_make_a_crash_loop_with_the_last_cause(tmp_path):
    plan(tmp_path, 0, {"0": 100, "1": 100}, committed=True)
    plan(tmp_path, 1, {"0": 400, "1": 150})
    record = RunRecord(tmp_path)
    assert pending_batch(tmp_path) == 1 and batch_readings(tmp_path, 1) == 350
    assert record.begin() is None
    record.end(cause_of(OOM_TASK))
    assert record.begin() is None  # one death so far
    record.end("Kafka unreachable")
    loop = record.begin()
    assert (loop.batch, loop.deaths, loop.cause, loop.readings) == (1, 2, "Kafka unreachable", 350)
    line = loop.line(("SPARK_DRIVER_MEMORY", "4g"), 200_000)
    assert "\n" not in line and "died 2 times in batch 1 (last cause: Kafka unreachable)" in line
    assert "raise SPARK_DRIVER_MEMORY (now 4g)" in line and "below its 350 readings" in line


def test_a_run_that_leaves_without_a_word_counts_as_a_death_and_progress_ends_the_loop(tmp_path):
    plan(tmp_path, 0, {"0": 10})
    record = RunRecord(tmp_path)
    record.begin()
    record.begin()  # the first run never said how it ended
    loop = RunRecord(tmp_path).begin()
    assert loop is not None and loop.deaths == 2 and "without saying why" in loop.cause
    plan(tmp_path, 0, {"0": 10}, committed=True)  # the batch got through
    record.end(None)
    plan(tmp_path, 1, {"0": 20})
    assert record.begin() is None


def test_a_stuck_batch_is_planned_again_only_under_a_lower_bound(tmp_path):
    plan(tmp_path, 0, {"0": 50}, committed=True)
    plan(tmp_path, 1, {"0": 1050})
    record = RunRecord(tmp_path)
    for cause in ("out of memory", "out of memory"):
        record.begin()
        record.end(cause)
    loop = record.begin()
    assert not record.replan(loop, 1000) and (tmp_path / "offsets" / "1").exists()
    assert record.replan(loop, 999) and not (tmp_path / "offsets" / "1").exists()
    assert pending_batch(tmp_path) is None and (tmp_path / "commits" / "0").exists()


def test_causes_in_a_few_words():
    assert cause_of(OOM_TASK) == "out of memory"
    assert cause_of("java.lang.OutOfMemoryError: Java heap space\n\tat ...") == "out of memory (Java heap space)"
    assert cause_of("PythonException: MemoryError: Unable to allocate 12 GiB") == "out of memory in a Python worker"
    assert cause_of("org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node assignment.") \
        == "Kafka unreachable (TimeoutException)"
    assert cause_of("[Errno 111] Connection refused", jvm_exit=52) == "out of memory"
    assert cause_of("[Errno 111] Connection refused", jvm_exit=137) == "the Spark JVM exited with code 137"
    assert cause_of("StreamingQueryException: boom\nline two") == "StreamingQueryException: boom"
