"""What crosses into Python: integers and the dead letter, never the event time (pyspark turned
it into pandas timestamps for every bucket and batch); the pane carries the watermark's mark that
the state operator needs for getCurrentWatermarkMs."""
from __future__ import annotations

import pytest

from pipeline.core.settings import ReadingsSettings, Rule
from pipeline.job.stage import WATERMARK_DELAY_KEY, stage_panes, state_inputs
from pipeline.job.validate import parse_readings

pytestmark = [pytest.mark.spark]


def test_only_integers_and_the_dead_letter_reach_the_state_function(spark):
    from pyspark.sql import functions as F

    rule = Rule(run_mode="prod", watermark_delay=7 * 60)
    raw = spark.createDataFrame([(b"2026-01-05T17:00:15Z,H001,0.01234", 3), (b"not a reading", 4)],
                                "value binary, offset long").select(
        "value", F.lit("energy_readings").alias("topic"), F.lit(0).alias("partition"), "offset",
        F.current_timestamp().alias("timestamp"))
    staged = stage_panes(parse_readings(raw, ReadingsSettings(100.0, 1024, 300)), 64, 2)
    inputs = state_inputs(staged, rule)

    kinds = {f.name: f.dataType.simpleString() for f in inputs.schema.fields}
    assert kinds == {"epoch_s": "bigint", "dead_letter": "string", "household": "bigint", "kwh_units": "bigint",
                     "record_ms": "bigint", "position": "bigint", "bucket": "int"}
    assert inputs.schema["epoch_s"].metadata == {WATERMARK_DELAY_KEY: 7 * 60 * 1000}
    rows = {r.household: r for r in inputs.collect()}
    assert rows[(3 << 40) | 1].epoch_s == 1767632415 and rows[(3 << 40) | 1].dead_letter is None
    assert rows[(3 << 40) | 1].position == (0 << 48) | 3
    assert '"reason":"bad_field_count"' in rows[-1].dead_letter
