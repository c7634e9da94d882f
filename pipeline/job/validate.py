"""The readings contract as Spark column expressions: one CSV line -> a valid reading or a reason.

A line is `timestamp,household_id,energy_kwh` without spaces (docs/contract.md). Every
check is a native expression (no Python UDF), and pyspark 4 runs with ANSI mode on, so only
`try_` conversions are used: a malformed value must become a reason, never a failed query.
Patterns are anchored with `\\A` and `\\z`: Java's `$` would also match before a final line
terminator and let `0.5\\r` through.

Nearly every line has the shape the simulator and the meters write, so one pattern over the
whole line (COMMON_LINE_RE) and range checks decide most rows; the field-by-field checks that
name a reason only run for a line that fails them. Both paths accept exactly the same lines
(tests/test_robust_input.py holds them side by side).
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.core.settings import KWH_UNITS, ReadingsSettings
from pipeline.core.contract import (COMMON_LINE_RE, DEAD_LETTER_RAW_CHARS, DECIMAL_RE, HOUSEHOLD_RE, MAX_EPOCH_S, MIN_EPOCH_S,
                       TIMESTAMP_RE)


def wall_clock_s() -> Column:
    """Epoch seconds of the wall clock when the row is evaluated; current_timestamp() would be
    compiled into each batch's code anew (docs/decisions/0014-measured-details-of-the-job.md)."""
    return F.floor(F.expr("reflect('java.lang.System', 'currentTimeMillis')").cast("long") / 1000)


# The column parse_readings reads the clock into, in a projection of its own: inside the checks'
# projections it kept them out of whole-stage code generation (docs/decisions/0014-measured-details-of-the-job.md).
NOW_S = "_now_s"
NOW_COLUMN = "now_s"  # the same, in parse_readings' output


def _newest_allowed(future_skew_s: int) -> Column:
    return F.col(NOW_S) + F.lit(future_skew_s)


def _reason(fields: Column, epoch: Column, kwh: Column, limits: dict) -> Column:
    value = F.col("value")
    ts, household, kwh_text = fields[0], fields[1], fields[2]
    newest_allowed = _newest_allowed(limits["future_skew_s"])
    return (
        F.when(value.isNull() | (F.octet_length(value) == 0), F.lit("empty"))
        .when(F.octet_length(value) > limits["max_line_bytes"], F.lit("too_long"))
        .when(~F.is_valid_utf8(value), F.lit("not_utf8"))
        .when(F.size(fields) != 3, F.lit("bad_field_count"))
        .when(~ts.rlike(TIMESTAMP_RE) | epoch.isNull()
              | (epoch < MIN_EPOCH_S) | (epoch >= MAX_EPOCH_S), F.lit("bad_timestamp"))
        .when(epoch > newest_allowed, F.lit("future_timestamp"))
        .when(~household.rlike(HOUSEHOLD_RE), F.lit("bad_household_id"))
        .when(~kwh_text.rlike(DECIMAL_RE) | kwh.isNull() | F.isnan(kwh), F.lit("bad_kwh"))
        .when((kwh < 0) | (kwh > limits["max_kwh"]), F.lit("kwh_out_of_range"))
    )


def round_half_up(value: Column) -> Column:
    """F.round(value) as a long for value >= 0 (a valid reading's energy), exactly: the fraction
    value - floor(value) is exact in floating point. F.round goes through Double.toString and
    BigDecimal for every row, at twice this expression's cost."""
    whole = F.floor(value)
    return whole + (value - whole >= 0.5).cast("long")


def dead_letter_json(value: Column | None = None, reason: Column | None = None, topic: Column | None = None,
                     partition: Column | None = None, offset: Column | None = None,
                     now_s: Column | None = None) -> Column:
    """The dead-letter document of a record, bounded whatever the input. By default of the row
    parse_readings checks (its `value`, `reason`, `topic`, `partition`, `offset` and clock)."""
    value = F.coalesce(F.col("value") if value is None else value, F.lit(b""))
    is_utf8 = F.is_valid_utf8(value)
    prefix = F.when(is_utf8, F.substring(value.cast("string"), 1, DEAD_LETTER_RAW_CHARS)).otherwise(
        F.base64(F.substring(value, 1, DEAD_LETTER_RAW_CHARS)))
    return F.to_json(F.struct(
        prefix.alias("raw"),
        is_utf8.alias("raw_is_utf8"),
        F.octet_length(value).alias("raw_bytes"),
        (F.octet_length(value) > DEAD_LETTER_RAW_CHARS).alias("raw_truncated"),
        F.sha2(value, 256).alias("raw_sha256"),
        (F.col("reason") if reason is None else reason).alias("reason"),
        (F.col("topic") if topic is None else topic).alias("source_topic"),
        (F.col("partition") if partition is None else partition).alias("partition"),
        (F.col("offset") if offset is None else offset).alias("offset"),
        F.date_format(F.timestamp_seconds(F.col(NOW_S) if now_s is None else now_s),
                      "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("detected_at"),
    ))


def _fields(value, text, common_path: bool):
    """(common shape, parsed timestamp, kwh, household) expressions of a line."""
    # The three fields, cut at the commas in the bytes. F.split decodes the line into a Java
    # string, splits that and encodes each part back, every row. These agree with it on a line
    # of three fields, and nothing reads them from a line of any other count: the common
    # pattern and the field count check (in _reason) come first.
    timestamp = F.substring_index(text, ",", 1)
    household = F.substring_index(F.substring_index(text, ",", 2), ",", -1)
    kwh_text = F.substring_index(text, ",", -1)
    shape = text.rlike(COMMON_LINE_RE) if common_path else F.lit(False)
    # On the common shape a cast reads the same instant as the pattern (a test holds them side
    # by side) at a fraction of its cost; a 'Z' stamp is cast without its zone lookup, cut from
    # the bytes of the ASCII line (docs/decisions/0014-measured-details-of-the-job.md).
    stamp = F.when(F.substring(value, 20, 1) == F.lit(b"Z"), F.substring(value, 1, 19).cast("string")).otherwise(
        timestamp)
    parsed_ts = F.when(shape, stamp.try_cast("timestamp")).otherwise(
        F.try_to_timestamp(timestamp, F.lit("yyyy-MM-dd'T'HH:mm:ssXXX")))
    return shape, parsed_ts, kwh_text.try_cast("double"), household


def parse_readings(raw: DataFrame, bounds: ReadingsSettings, common_path: bool = True) -> DataFrame:
    """Kafka records (value binary, topic, partition, offset, timestamp) -> one row per record
    with either `reason` null and (event_time, household_id, kwh_units), or `reason` and
    `dead_letter` (the JSON document the dead-letter topic receives); and `record_time`, the
    record's Kafka timestamp, `now_s`, the wall clock it was read at, and where it was read
    (`partition`, `offset`). `common_path=False`
    checks every line field by field (for the test that holds the two paths side by side)."""
    value = F.col("value")
    text = value.cast("string")
    shape, parsed_ts, kwh, household = _fields(value, text, common_path)
    epoch = F.unix_timestamp(parsed_ts)
    limits = {"max_kwh": bounds.max_reading_kwh, "max_line_bytes": bounds.max_line_bytes,
              "future_skew_s": bounds.max_future_skew}
    common = (shape & (F.octet_length(value) <= bounds.max_line_bytes)
              & epoch.between(MIN_EPOCH_S, MAX_EPOCH_S - 1) & (epoch <= _newest_allowed(bounds.max_future_skew))
              & (kwh <= bounds.max_reading_kwh))
    clocked = raw.select("*", wall_clock_s().alias(NOW_S))
    checked = clocked.select("*", parsed_ts.alias("_ts"), kwh.alias("_kwh"), household.alias("_household"),
                             common.alias("_common"))
    reason = F.when(F.col("_common"), F.lit(None).cast("string")).otherwise(
        _reason(F.split(text, ",", -1), F.unix_timestamp("_ts"), F.col("_kwh"), limits))
    valid = F.col("reason").isNull()
    return checked.withColumn("reason", reason).select(
        F.col("reason"),
        F.when(valid, F.col("_ts")).alias("event_time"),
        F.when(valid, F.col("_household")).alias("household_id"),
        F.when(valid, round_half_up(F.col("_kwh") * KWH_UNITS)).alias("kwh_units"),
        F.when(~valid, dead_letter_json()).alias("dead_letter"),
        F.col("timestamp").alias("record_time"),
        F.col(NOW_S).alias(NOW_COLUMN),
        F.col("partition"),
        F.col("offset"),
    )
