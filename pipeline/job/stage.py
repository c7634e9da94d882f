"""Each reading as the stateful operator takes it: integers, its state bucket, and the watermark.

The household id crosses into Python as one integer (panes.household_code, computed natively
here) and is turned back into text natively for the alert (household_text). Households are
hashed into STATE_BUCKETS state keys, so one Python call handles a whole bucket with numpy
(docs/decisions/0002-buckets-of-households.md); invalid lines travel through the same operator
and leave as dead letters, since splitting them off before it would scan the Kafka batch twice.
"""
from __future__ import annotations

import numpy as np

from pipeline.core.settings import Rule
from pipeline.job.panes import HOUSEHOLD_DIGITS_SHIFT
from pipeline.job.state import POSITION_SHIFT
from pipeline.job.validate import NOW_COLUMN

# Spark's mark of an event-time column (EventTimeWatermark.delayKey): the state operator offers
# getCurrentWatermarkMs only when a column of its input carries it.
WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"


def household_code(household):
    """panes.household_code as a Spark expression (null stays null) of a valid id, which is
    ASCII: its digits are counted in bytes, which Spark reads off the string, where a count of
    characters decodes it."""
    from pyspark.sql import functions as F

    digits = F.substring(household, 2, 12)
    return F.shiftleft(F.octet_length(digits).cast("long"), HOUSEHOLD_DIGITS_SHIFT) + digits.try_cast("long")


def _murmur3_long(values: np.ndarray, seed: int = 42) -> np.ndarray:
    """Spark's Murmur3Hash of a long column (Murmur3_x86_32.hashLong, the hash its
    HashPartitioning uses, seed 42), as int32."""
    with np.errstate(over="ignore"):
        def mix(h, word):
            k = word * np.uint32(0xCC9E2D51)
            k = ((k << np.uint32(15)) | (k >> np.uint32(17))) * np.uint32(0x1B873593)
            h = h ^ k
            return ((h << np.uint32(13)) | (h >> np.uint32(19))) * np.uint32(5) + np.uint32(0xE6546B64)

        words = values.astype(np.int64).view(np.uint64)
        h = mix(np.full(len(values), seed, dtype=np.uint32), (words & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        h = mix(h, (words >> np.uint64(32)).astype(np.uint32)) ^ np.uint32(8)
        h = (h ^ (h >> np.uint32(16))) * np.uint32(0x85EBCA6B)
        h = (h ^ (h >> np.uint32(13))) * np.uint32(0xC2B2AE35)
        return (h ^ (h >> np.uint32(16))).view(np.int32)


def bucket_keys(buckets: int, partitions: int) -> list[int]:
    """The state key of each bucket, chosen so that Spark's hash partitioning gives every shuffle
    partition the same number of buckets (±1). Keys 0..63 put 36 buckets in one of two
    partitions and 28 in the other, and the batch waits for the fuller one."""
    share = [buckets // partitions + (p < buckets % partitions) for p in range(partitions)]
    keys: list[int] = []
    start = 0
    while len(keys) < buckets:
        candidates = np.arange(start, start + 4 * buckets + 64, dtype=np.int64)
        for key, partition in zip(candidates.tolist(), (_murmur3_long(candidates) % partitions).tolist()):
            if share[partition]:
                share[partition] -= 1
                keys.append(key)
        start += len(candidates)
    return keys


def stage_panes(parsed, buckets: int, partitions: int):
    """Each reading as integers: household code, event time (epoch seconds), nano-kWh, Kafka
    time and its record's position (partition << 48 | offset); its state bucket (a hash of the
    household, or of the dead letter for an invalid line, which spreads them over the buckets),
    as one of `bucket_keys`; and the event time up to the wall clock, for the watermark
    (state_inputs). Integer columns are never null (an invalid line has household -1), so Python
    receives them as int64, not as floats with NaN."""
    from pyspark.sql import functions as F

    code = household_code(F.col("household_id"))
    index = F.pmod(F.coalesce(F.xxhash64(code), F.xxhash64("dead_letter")), F.lit(buckets))
    clock = F.when(F.col("event_time").isNotNull(),
                   F.least(F.col("event_time"), F.timestamp_seconds(F.col(NOW_COLUMN))))
    return parsed.select(
        clock.alias("clock_time"), "dead_letter",
        F.coalesce(code, F.lit(-1).cast("long")).alias("household"),
        F.coalesce(F.unix_timestamp("event_time"), F.lit(0).cast("long")).alias("epoch_s"),
        F.coalesce("kwh_units", F.lit(0).cast("long")).alias("kwh_units"),
        F.unix_millis("record_time").alias("record_ms"),
        (F.shiftleft(F.col("partition").cast("long"), POSITION_SHIFT) + F.col("offset")).alias("position"),
        F.lit(bucket_keys(buckets, partitions))[index.cast("int")].alias("bucket"),
    )


def state_inputs(staged, rule: Rule):
    """What the stateful operator receives: staged readings with the watermark set.

    The event time, but never later than the wall clock when the reading was read
    (`clock_time`), sets the watermark, so that no valid reading, however far ahead of the clock,
    makes the job drop another household's on-time readings; it is then dropped, since Python
    would receive it as pandas timestamps. The event second carries the watermark's mark in its
    place. With NoTimeout Spark filters no input by that mark (only EventTimeTimeout does); late
    readings are the state function's to count."""
    from pyspark.sql import functions as F

    marked = staged.withWatermark("clock_time", f"{rule.watermark_s} seconds")
    epoch = F.col("epoch_s").alias("epoch_s", metadata={WATERMARK_DELAY_KEY: rule.watermark_s * 1000})
    return marked.select(epoch, *(c for c in marked.columns if c not in ("clock_time", "epoch_s")))
