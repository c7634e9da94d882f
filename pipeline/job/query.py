"""The Spark Structured Streaming query, built in one function from the Kafka source to the Kafka
sink (build_query); the driver (driver.py) starts it and keeps its books.

    Kafka readings -> parse_readings (validate.py) -> stage_panes, state_inputs (stage.py)
      -> the state operator by state bucket: the JVM's (jvm.py), or
         applyInPandasWithState(state function: state.py) with STATE_OPERATOR=python
      -> kafka_records (records.py) -> Kafka alerts and dead letters
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.core.settings import JobSettings
from pipeline.job.jvm import jvm_outputs
from pipeline.job.records import kafka_records
from pipeline.job.stage import stage_panes, state_inputs
from pipeline.job.state import BUCKET_OUTPUT_SCHEMA, OUTPUT_COLUMNS, STATE_SCHEMA, Rules, make_state_function
from pipeline.job.validate import parse_readings

# Kafka client timeouts of the source and the sink: a broker that dies without closing its
# connections is only noticed through them (docs/decisions/0005-kafka-source-fetch-and-poll.md).
KAFKA_FAILOVER_OPTIONS = {
    "kafka.request.timeout.ms": "10000",
    "kafka.socket.connection.setup.timeout.ms": "2000",
    "kafka.socket.connection.setup.timeout.max.ms": "5000",
}
# Fetch wait, fetch size and poll size of the source's reads (docs/decisions/0005-kafka-source-fetch-and-poll.md).
SOURCE_OPTIONS = {
    **KAFKA_FAILOVER_OPTIONS,
    "kafka.default.api.timeout.ms": "15000",
    "kafka.fetch.max.wait.ms": "20",
    "kafka.max.partition.fetch.bytes": str(4 * 1024 * 1024),
    "kafka.max.poll.records": "50000",
}
# Large lz4 batches carry a batch's alerts in a few dozen requests instead of thousands; a record
# the broker does not take is retried for 5 minutes, then the batch fails
# (docs/decisions/0004-kafka-sink-and-batch-tally.md).
SINK_OPTIONS = {
    **KAFKA_FAILOVER_OPTIONS,
    "kafka.acks": "all",
    "kafka.delivery.timeout.ms": "300000",
    "kafka.batch.size": str(256 * 1024),
    "kafka.linger.ms": "2",
    "kafka.compression.type": "lz4",
}


def query_name(job: JobSettings) -> str:
    return f"energy-alerts-{job.rule.mode}"


def build_query(spark, job: JobSettings, rules: Rules, tally, checkpoint: Path | str, since_ms: int | None,
                once: bool):
    """The whole query, Kafka to Kafka, ready to start: `rules` what the state step judges with,
    `tally` the accumulator its batches' counts go to (the operator's: jvm.tally_accumulator, or
    a BatchTally), `since_ms` the record time a `recent`
    start reads from (None: what the checkpoint says), `once` whether it stops when it has read
    what is there."""
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    kafka = job.kafka
    readings = read_readings(spark, job, since_ms)
    parsed = parse_readings(readings, job.readings)
    staged = state_inputs(stage_panes(parsed, job.state_buckets, job.shuffle_partitions), job.rule)
    if job.state_operator == "jvm":
        outputs = jvm_outputs(spark, staged, rules, tally)
    else:
        outputs = (staged.groupBy("bucket")
                   .applyInPandasWithState(make_state_function(rules, tally), BUCKET_OUTPUT_SCHEMA, STATE_SCHEMA,
                                           "Append", GroupStateTimeout.NoTimeout)
                   .select(F.inline(F.arrays_zip(*OUTPUT_COLUMNS))))
    writer = (kafka_records(outputs, kafka, job.rule, job.baseline).writeStream.format("kafka")
              .queryName(query_name(job))
              .option("kafka.bootstrap.servers", kafka.bootstrap_servers)
              .options(**SINK_OPTIONS)
              .option("checkpointLocation", str(checkpoint)))
    return trigger(writer, job, once)


def trigger(writer, job: JobSettings, once: bool):
    """`once`: everything available now, in bounded batches; live: every TRIGGER_INTERVAL."""
    return writer.trigger(availableNow=True) if once else writer.trigger(processingTime=f"{job.trigger_interval} seconds")


def read_readings(spark, job: JobSettings, since_ms: int | None):
    """The readings topic as a stream. A new checkpoint starts where STARTING_OFFSETS says;
    `recent` is the records written since `since_ms` (by Kafka record time). The seek finds each
    partition's first such record, and a filter drops older records after it: record times need
    not grow along a partition."""
    from pyspark.sql import functions as F

    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", job.kafka.bootstrap_servers)
              .option("subscribe", job.kafka.readings_topic)
              .options(**SOURCE_OPTIONS)
              .option("maxOffsetsPerTrigger", job.max_offsets_per_trigger)
              # Records deleted by retention before we read them are gone either way; say so
              # in the log instead of stopping the job.
              .option("failOnDataLoss", "false"))
    if job.starting_offsets != "recent":
        return reader.option("startingOffsets", job.starting_offsets).load()
    since_ms = recent_since_ms(job) if since_ms is None else since_ms
    return (reader.option("startingTimestamp", str(since_ms))
            .option("startingOffsetsByTimestampStrategy", "latest").load()
            .where(F.col("timestamp") >= F.timestamp_millis(F.lit(since_ms))))


def recent_since_ms(job: JobSettings) -> int:
    """Where a `recent` start reads from: the records written in the last window + watermark."""
    return int((time.time() - job.rule.window_s - job.rule.watermark_s) * 1000)
