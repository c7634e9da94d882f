"""What leaves the job: each output row of the state operator as a Kafka record, built natively.

An alert goes to ALERTS_TOPIC keyed by its household, its document holding exactly the fields of
core/alert.py; a refused reading and a dead letter go to DLQ_TOPIC. `alert_id` is the first 32 hex
digits of sha256("household|rule key|window start epoch"): the same on every re-delivery of a
window's alert. `detected_at` is the wall clock when the record is built, read as
validate.wall_clock_s reads it (tests/test_codegen.py).
"""
from __future__ import annotations

from pipeline.core import alert
from pipeline.core.settings import KWH_UNITS, BaselineRule, KafkaSettings, Rule
from pipeline.job.panes import HOUSEHOLD_DIGITS_SHIFT
from pipeline.job.state import HOUSEHOLD_LIMIT_REASON, KIND_REFUSED, KINDS, POSITION_SHIFT
from pipeline.job.validate import dead_letter_json, wall_clock_s


def _stamp(seconds):
    from pyspark.sql import functions as F

    return F.date_format(F.timestamp_seconds(seconds), "yyyy-MM-dd'T'HH:mm:ss'Z'")


def household_text(code):
    """panes.household_id as a Spark expression."""
    from pyspark.sql import functions as F

    value = (code.bitwiseAND(F.lit((1 << HOUSEHOLD_DIGITS_SHIFT) - 1))).cast("string")
    return F.concat(F.lit("H"), F.lpad(value, F.shiftright(code, HOUSEHOLD_DIGITS_SHIFT).cast("int"), F.lit("0")))


def _alert_values(rule: Rule, baseline: BaselineRule | None, household) -> dict:
    """Each alert field's value as a column of an output row of either kind; a field only
    one kind has is null for the other, which to_json leaves out."""
    from pyspark.sql import functions as F

    kind = F.col("kind")
    is_baseline = kind == F.lit(KINDS[alert.Kind.BASELINE])
    # (rule key, threshold, rule text) of each kind's alert
    fixed = (F.lit(rule.key), F.lit(rule.threshold), F.lit(rule.description))
    learned = fixed if baseline is None else (F.lit(baseline.key), F.col("threshold"), F.lit(baseline.description))
    key, threshold, text = (F.when(is_baseline, b).otherwise(f) for f, b in zip(fixed, learned))
    start = F.col("window_start")
    return {
        alert.ALERT_ID: F.substring(F.sha2(F.concat_ws("|", household, key, start.cast("string")), 256), 1, 32),
        alert.HOUSEHOLD: household, alert.WINDOW_START: _stamp(start), alert.WINDOW_END: _stamp(start + rule.window_s),
        alert.KWH: F.col("kwh_units") / F.lit(KWH_UNITS), alert.THRESHOLD: threshold, alert.RULE: text,
        alert.MODE: F.lit(rule.mode), alert.DETECTED_AT: _stamp(wall_clock_s()),
        alert.KIND: F.when(is_baseline, F.lit(alert.Kind.BASELINE.value)).otherwise(F.lit(alert.Kind.THRESHOLD.value)),
        alert.BASELINE_USUAL: F.when(is_baseline, F.col("usual")), alert.EXCESS: F.when(is_baseline, F.col("excess")),
        alert.BASELINE_WINDOWS: F.when(is_baseline, F.col("windows")), alert.SLOT: F.when(is_baseline, F.col("slot")),
    }


def alert_json(rule: Rule, baseline: BaselineRule | None, household):
    """The alert document of an alert row (`household`: the id's text), its fields in the
    declared order."""
    from pyspark.sql import functions as F

    values = _alert_values(rule, baseline, household)
    assert list(values) == list(alert.FIELDS), "every alert field, and only those, in core.alert's order"
    return F.to_json(F.struct(*(column.alias(field.name) for field, column in values.items())))


def refused_letter_json(readings_topic: str, household):
    """The dead letter of a reading the household bound refused: the reading as the job read it,
    in the contract's form (UTC, the kWh in decimal), and where it was read."""
    from pyspark.sql import functions as F

    kwh = F.regexp_replace((F.col("kwh_units").cast("decimal(20,0)") / F.lit(KWH_UNITS)).cast("decimal(29,9)")
                           .cast("string"), r"\.?0+\z", "")
    reading = F.concat_ws(",", _stamp(F.col("window_start")), household, kwh).cast("binary")
    position = F.col("windows")
    return dead_letter_json(reading, F.lit(HOUSEHOLD_LIMIT_REASON), F.lit(readings_topic),
                            F.shiftright(position, POSITION_SHIFT).cast("int"),
                            position.bitwiseAND(F.lit((1 << POSITION_SHIFT) - 1)), wall_clock_s())


def kafka_records(outputs, kafka: KafkaSettings, rule: Rule, baseline: BaselineRule | None):
    """The state operator's output rows as Kafka records: topic, key, value."""
    from pyspark.sql import functions as F

    is_refused = F.col("kind") == F.lit(KIND_REFUSED)
    is_alert = F.col("dead_letter").isNull() & ~is_refused
    household = household_text(F.col("household"))
    return outputs.select(
        F.when(is_alert, F.lit(kafka.alerts_topic)).otherwise(F.lit(kafka.dlq_topic)).alias("topic"),
        F.when(is_alert, household).alias("key"),
        F.when(is_alert, alert_json(rule, baseline, household))
        .when(is_refused, refused_letter_json(kafka.readings_topic, household))
        .otherwise(F.col("dead_letter")).alias("value"))
