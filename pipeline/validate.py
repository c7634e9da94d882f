"""The readings contract as Spark column expressions: one CSV line -> a valid reading or a reason.

A line is `timestamp,household_id,energy_kwh` without spaces (see shared/design.md). Every
check is a native expression (no Python UDF), and pyspark 4 runs with ANSI mode on, so only
`try_` conversions are used: a malformed value must become a reason, never a failed query.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

TIMESTAMP_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$"
HOUSEHOLD_RE = r"^H\d{3,}$"
DECIMAL_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
# Panes are indexed in 64-bit integers together with household codes; a corrupt far-future
# timestamp would also drag the watermark past every real reading. Both are avoided by
# accepting event times in [1970, 2100).
MIN_EPOCH_S = 0
MAX_EPOCH_S = 4102444800
KWH_UNITS = 1_000_000_000  # energy is summed as integer nano-kWh: exact and order-independent

REASONS = ("empty", "not_utf8", "bad_field_count", "bad_timestamp", "bad_household_id",
           "bad_kwh", "kwh_out_of_range")


def _reason(fields: Column, epoch: Column, kwh: Column, max_kwh: float) -> Column:
    ts, household, kwh_text = fields[0], fields[1], fields[2]
    return (
        F.when(F.col("value").isNull() | (F.length(F.col("value")) == 0), F.lit("empty"))
        .when(~F.is_valid_utf8(F.col("value")), F.lit("not_utf8"))
        .when(F.size(fields) != 3, F.lit("bad_field_count"))
        .when(~ts.rlike(TIMESTAMP_RE) | epoch.isNull()
              | (epoch < MIN_EPOCH_S) | (epoch >= MAX_EPOCH_S), F.lit("bad_timestamp"))
        .when(~household.rlike(HOUSEHOLD_RE), F.lit("bad_household_id"))
        .when(~kwh_text.rlike(DECIMAL_RE) | kwh.isNull() | F.isnan(kwh), F.lit("bad_kwh"))
        .when((kwh < 0) | (kwh > max_kwh), F.lit("kwh_out_of_range"))
    )


def parse_readings(raw: DataFrame, max_kwh: float) -> DataFrame:
    """Kafka records (value binary, topic, partition, offset) -> one row per record with either
    `reason` null and (event_time, household_id, kwh, kwh_units), or `reason` and `dead_letter`
    (the JSON document the dead-letter topic receives)."""
    text = F.col("value").cast("string")
    fields = F.split(text, ",", -1)
    parsed_ts = F.try_to_timestamp(fields[0], F.lit("yyyy-MM-dd'T'HH:mm:ssXXX"))
    epoch = F.unix_timestamp(parsed_ts)
    kwh = F.expr("try_cast(split(cast(value as string), ',', -1)[2] as double)")
    reason = _reason(fields, epoch, kwh, max_kwh)
    raw_text = F.when(F.is_valid_utf8(F.col("value")), text).otherwise(F.base64(F.col("value")))
    dead_letter = F.to_json(F.struct(
        F.coalesce(raw_text, F.lit("")).alias("raw"),
        F.is_valid_utf8(F.coalesce(F.col("value"), F.lit(b""))).alias("raw_is_utf8"),
        F.col("reason"),
        F.col("topic").alias("source_topic"),
        F.col("partition"),
        F.col("offset"),
        F.date_format(F.current_timestamp(), "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("detected_at"),
    ))
    with_reason = raw.withColumn("reason", reason)
    valid = F.col("reason").isNull()
    return with_reason.select(
        F.col("reason"),
        F.when(valid, parsed_ts).alias("event_time"),
        F.when(valid, fields[1]).alias("household_id"),
        F.when(valid, kwh).alias("kwh"),
        F.when(valid, F.round(kwh * KWH_UNITS).cast("long")).alias("kwh_units"),
        F.when(~valid, dead_letter).alias("dead_letter"),
    )
