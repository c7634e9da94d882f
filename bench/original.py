"""The seed's query, re-implemented as the baseline the job is measured against: parse, a
10-minute watermark, Spark's sliding `window()` sum, the threshold filter and JSON, in append
mode, written to Kafka by Spark's own sink."""
from __future__ import annotations

from pipeline.core.settings import Settings


def original_stream(spark, settings: Settings):
    """The seed's query: parse, 10-min watermark, sliding window sum, filter, JSON (append mode)."""
    from pyspark.sql import functions as F

    rule = settings.rule
    parts = F.split(F.col("value").cast("string"), ",")
    readings = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
                .option("subscribe", settings.kafka.readings_topic).option("startingOffsets", "earliest").load()
                .select(F.to_timestamp(parts[0]).alias("event_time"), parts[1].alias("household_id"),
                        parts[2].cast("double").alias("energy_kwh")))
    windows = (readings.withWatermark("event_time", f"{rule.watermark_s} seconds")
               .groupBy(F.window("event_time", f"{rule.window_s} seconds", f"{rule.slide_s} seconds"),
                        "household_id")
               .agg(F.sum("energy_kwh").alias("kwh_window")))
    alerts = windows.where(F.col("kwh_window") > rule.threshold).select(
        F.col("household_id").alias("key"),
        F.to_json(F.struct(F.col("household_id"),
                           F.date_format("window.start", "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("window_start"),
                           F.date_format("window.end", "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("window_end"),
                           F.col("kwh_window").alias("kwh"), F.lit(rule.mode).alias("mode"))).alias("value"))
    return alerts
