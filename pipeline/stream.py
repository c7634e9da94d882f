"""The Spark Structured Streaming job's dataflow, top to bottom:

    read_readings (Kafka) -> parse_readings (validate.py) -> stage_panes
      -> alert_state: watermark, groupBy(state bucket), applyInPandasWithState(panes.advance)
      -> outgoing: each row's topic (ALERTS_TOPIC or DLQ_TOPIC), key and value, for Kafka's own
         streaming sink (driver.start_query)

Households are hashed into `STATE_BUCKETS` state keys, and one Python call handles a whole
bucket with numpy (see panes.py), so Python's per-group overhead (about 0.8 ms of task time a
call here) is paid per bucket, not per household. The household id crosses into Python as
an integer (panes.household_code) and is turned back into text natively for the alert.
Invalid lines travel through the same operator untouched and leave as dead letters:
splitting them off with a union before it would scan the Kafka batch twice. The state
function also tallies what it did in an accumulator, by batch id, which the driver reads when
the batch's progress is reported, so a micro-batch is one Spark job and its output goes to
Kafka's sink with no second plan. Starting the query, its session and its bookkeeping are the
driver's (driver.py).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.accumulators import AccumulatorParam

from .baseline import BaselineState, Seed, adopt, fingerprint
from .config import KWH_UNITS, BaselineRule, Rule, Settings
from .contract import REASONS
from .panes import HOUSEHOLD_DIGITS_SHIFT, PaneState, advance
from .validate import NOW_COLUMN, dead_letter_json, parse_readings, wall_clock_s

# What the state function returns for a bucket that has something to say: one row of parallel
# arrays, its alerts (household code, window_start, kwh_units; dead_letter null) followed by its
# dead letters (the document; the numbers 0). alert_state turns them into a row each natively
# (OUTPUT_COLUMNS). pyspark pads the state rows it returns beside the output rows to as many as
# those, and checks every padding cell for NA in Python: a row per alert cost 0.7 s of the
# workers' 3.0 s of CPU in a demo drain (py-spy, 110,298 alerts). What a batch did (alerts by the
# time their crossing reading reached Kafka, dead letters by reason, late readings) is tallied
# by the state function in an accumulator (BatchTally), so a batch is one Spark job: the write.
# Spark names the micro-batch of each task in this local property (MicroBatchExecution.BATCH_ID_KEY).
BATCH_ID_PROPERTY = "streaming.sql.batchId"
# An alert's columns (kind 0: the fixed rule, 1: the baseline rule, whose alerts also carry
# their slot's threshold and state) and a dead letter's, as one row of parallel arrays per bucket.
OUTPUT_COLUMNS = ("household", "window_start", "kwh_units", "dead_letter", "kind", "threshold", "mean", "sigma",
                  "windows", "slot")
BUCKET_OUTPUT_SCHEMA = ("household array<long>, window_start array<long>, kwh_units array<long>, "
                        "dead_letter array<string>, kind array<long>, threshold array<double>, mean array<double>, "
                        "sigma array<double>, windows array<long>, slot array<long>")
_NO_OUTPUT = pd.DataFrame({name: pd.Series([], dtype=object) for name in OUTPUT_COLUMNS})
STATE_SCHEMA = "panes binary, alerted binary, baseline binary"
# Output rows of kind 2 are readings refused by the household bound (admit): household, event
# second (window_start), units and where the reading was read (windows: POSITION_SHIFT).
KIND_THRESHOLD, KIND_BASELINE, KIND_REFUSED = 0, 1, 2
HOUSEHOLD_LIMIT_REASON = REASONS[-1]
POSITION_SHIFT = 48  # a record's position as one long: partition << 48 | offset
# Kafka client timeouts of the job's source and sink. A broker that dies without closing its
# connections (a lost host or container) is only noticed through timeouts, and the clients'
# defaults let one batch stall for the admin client's 60 s API timeout
# (docs/decisions/0005-kafka-source-fetch-and-poll.md).
KAFKA_FAILOVER_OPTIONS = {
    "kafka.request.timeout.ms": "10000",
    "kafka.socket.connection.setup.timeout.ms": "2000",
    "kafka.socket.connection.setup.timeout.max.ms": "5000",
}
SOURCE_OPTIONS = {
    **KAFKA_FAILOVER_OPTIONS,
    "kafka.default.api.timeout.ms": "15000",
    # Each read task's fetch would wait out the broker's default 500 ms although its records
    # are there.
    "kafka.fetch.max.wait.ms": "20",
    # A fetch of the client's default 1 MiB is a humongous object in a 1 GiB heap of 1 MiB G1
    # regions, and each such allocation can start a concurrent GC cycle.
    "kafka.max.partition.fetch.bytes": str(256 * 1024),
    # After every poll Spark's reader looks up the partition's offset range (two round trips to
    # the broker), so a poll takes what one 256 KiB fetch holds rather than the client's 500
    # records (docs/decisions/0005-kafka-source-fetch-and-poll.md).
    "kafka.max.poll.records": "10000",
}


def read_readings(spark, settings: Settings, since_ms: int | None = None):
    """The readings topic as a stream. A new checkpoint starts where STARTING_OFFSETS says;
    `recent` is the records written since `since_ms` (by Kafka record time; by default the
    last window + watermark). The seek finds each partition's first such record, and a filter
    drops older records after it: record times need not grow along a partition."""
    from pyspark.sql import functions as F

    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.bootstrap_servers)
              .option("subscribe", settings.readings_topic)
              .options(**SOURCE_OPTIONS)
              .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
              # Records deleted by retention before we read them are gone either way; say so
              # in the log instead of stopping the job.
              .option("failOnDataLoss", "false"))
    if settings.starting_offsets != "recent":
        return reader.option("startingOffsets", settings.starting_offsets).load()
    since_ms = recent_since_ms(settings) if since_ms is None else since_ms
    return (reader.option("startingTimestamp", str(since_ms))
            .option("startingOffsetsByTimestampStrategy", "latest").load()
            .where(F.col("timestamp") >= F.timestamp_millis(F.lit(since_ms))))


def recent_since_ms(settings: Settings) -> int:
    rule = settings.rule
    return int((time.time() - rule.window_s - rule.watermark_s) * 1000)


def household_code(household):
    """panes.household_code as a Spark expression (null stays null) of a valid id, which is
    ASCII: its digits are counted in bytes, which Spark reads off the string, where a count of
    characters decodes it."""
    from pyspark.sql import functions as F

    digits = F.substring(household, 2, 12)
    return F.shiftleft(F.octet_length(digits).cast("long"), HOUSEHOLD_DIGITS_SHIFT) + digits.try_cast("long")


def household_text(code):
    """panes.household_id as a Spark expression."""
    from pyspark.sql import functions as F

    value = (code.bitwiseAND(F.lit((1 << HOUSEHOLD_DIGITS_SHIFT) - 1))).cast("string")
    return F.concat(F.lit("H"), F.lpad(value, F.shiftright(code, HOUSEHOLD_DIGITS_SHIFT).cast("int"), F.lit("0")))


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
    """Each reading as integers: household code, event time (epoch seconds), nano-kWh and
    Kafka time; its state bucket (a hash of the household, or of the dead letter for an invalid
    line, which spreads them over the buckets), as one of `bucket_keys`; and the event time up to
    the wall clock, for the watermark (state_inputs). Integer columns are never null (an invalid line has household -1), so Python
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


class BatchTally(AccumulatorParam):
    """What the state function did, as {(batch id, kind, detail): count}: (batch, "alert",
    centisecond the crossing reading reached Kafka), (batch, "dlq", reason), (batch, "late", ""),
    (batch, "duplicate", "").
    The driver takes a batch's keys out when the batch's progress is reported (driver.py), so
    what it holds is bounded by a batch's or two's output rows."""

    def zero(self, _value):
        return {}

    def addInPlace(self, total: dict, more: dict) -> dict:
        for key, n in more.items():
            total[key] = total.get(key, 0) + n
        return total


def make_state_function(rule: Rule, baseline: BaselineRule | None, tally, seed=None,
                        capacity: int = 2**62) -> Callable:
    """`seed`: a broadcast baseline.Seed (each Python worker loads its value once), or None;
    `capacity`: the households a bucket may hold (admit)."""
    from pyspark import TaskContext

    k, slide_s, threshold_units = rule.panes_per_window, rule.slide_s, rule.threshold_units
    fixed_fp, scoring_fp = fingerprint(rule.key), fingerprint(baseline.key if baseline else "off")

    def step(key, batches: Iterator[pd.DataFrame], state) -> Iterator[pd.DataFrame]:
        households, panes, units, record_ms, seconds, positions, invalid = _batch_columns(list(batches), slide_s)
        previous, learned = _stored(state, fixed_fp, scoring_fp)
        taken = admit(np.union1d(previous.names, learned.names), households, capacity)
        refused = Refused(households[~taken], panes[~taken] * slide_s + seconds[~taken], units[~taken],
                          positions[~taken])
        households, panes, units, record_ms, seconds = (a[taken] for a in (households, panes, units, record_ms, seconds))
        if baseline is not None and seed is not None:
            learned = adopt(learned, seed.value, households, baseline.slots)
        result = advance(previous, households, panes, units, state.getCurrentWatermarkMs(), slide_s, k,
                         threshold_units, record_ms, None if baseline is None else (learned, baseline), seconds)
        learned = learned if result.baseline is None else result.baseline.state
        stored = 0
        if result.state.is_empty() and learned.is_empty():
            if state.exists:
                state.remove()
        else:
            blobs = (*result.state.to_bytes(), learned.to_bytes())
            stored = sum(len(blob) for blob in blobs)
            state.update(blobs)
        counts = _tally(result, invalid, refused, key[0], len(np.union1d(result.state.names, learned.names)), stored)
        batch = int(TaskContext.get().getLocalProperty(BATCH_ID_PROPERTY))
        tally.add({(batch, *name): n for name, n in counts.items()})
        yield _output_rows(result.alerts, result.baseline, invalid, refused, slide_s)

    return step


@dataclass(frozen=True)
class Refused:
    """Readings a full bucket did not take (admit): household, epoch second, units, position."""

    households: np.ndarray
    epoch_s: np.ndarray
    units: np.ndarray
    positions: np.ndarray


def admit(known: np.ndarray, households: np.ndarray, capacity: int) -> np.ndarray:
    """Which readings a bucket takes: those of the households it holds (`known`), and those of new
    households in the order they first appear in the batch, as long as the bucket has room
    (`capacity` households in all). A refused household's readings are all refused."""
    room = capacity - len(known)
    new = ~np.isin(households, known)
    if not new.any():
        return np.ones(len(households), dtype=bool)
    arrivals, first_at = np.unique(households[new], return_index=True)
    if len(arrivals) <= room:
        return np.ones(len(households), dtype=bool)
    refused = arrivals[np.argsort(first_at, kind="stable")[max(room, 0):]]
    return ~np.isin(households, refused)


def _batch_columns(chunks: list[pd.DataFrame], slide_s: int):
    """A bucket's rows (in chunks of Arrow's batch size) as numpy arrays of the valid readings
    (household, pane, units, record time, second within the pane), and the dead letters of the
    invalid ones. The numbers are joined as numpy arrays: pd.concat of the frames checks every
    empty text cell for NA."""
    column = (lambda name: chunks[0][name].to_numpy(dtype=np.int64)) if len(chunks) == 1 else (
        lambda name: np.concatenate([c[name].to_numpy(dtype=np.int64) for c in chunks]))
    households, epoch, units, record_ms, positions = (
        column(n) for n in ("household", "epoch_s", "kwh_units", "record_ms", "position"))
    valid = households >= 0
    invalid = None
    if not valid.all():
        invalid = pd.concat([c.dead_letter[c.household < 0] for c in chunks], ignore_index=True)
        households, epoch, units, record_ms, positions = (
            a[valid] for a in (households, epoch, units, record_ms, positions))
    panes = epoch // slide_s
    return households, panes, units, record_ms, epoch - panes * slide_s, positions, invalid


def _stored(state, fixed_fp: int, scoring_fp: int) -> tuple[PaneState, BaselineState]:
    """The bucket's state under the current rules: the windows alerted under another fixed
    threshold or baseline scoring rule are forgotten, what was learned is kept."""
    if not state.exists:
        return PaneState.empty(), BaselineState.empty(fixed_fp, scoring_fp)
    panes_blob, alerted_blob, baseline_blob = state.get
    panes = PaneState.from_bytes(panes_blob, alerted_blob)
    learned = BaselineState.from_bytes(baseline_blob)
    if learned.fixed_rule != fixed_fp:
        none = np.zeros(0, dtype=np.int64)
        panes = replace(panes, alerted_households=none, alerted_starts=none)
    return panes, learned.for_rules(fixed_fp, scoring_fp)


def _tally(result, invalid: pd.Series | None, refused: Refused, bucket: int, households: int,
           stored_bytes: int) -> dict:
    counts = {}
    baseline = result.baseline
    for kind, frame in (("alert", result.alerts), ("baseline_alert", None if baseline is None else baseline.alerts)):
        if frame is not None and len(frame):
            centiseconds, n = np.unique(frame.crossed_ms.to_numpy() // 10, return_counts=True)
            counts.update(((kind, int(cs)), int(c)) for cs, c in zip(centiseconds, n))
    # Each bucket is called once a batch; the driver keeps each bucket's newest figures.
    counts[("households", int(bucket))] = households
    counts[("state_bytes", int(bucket))] = stored_bytes
    if baseline is not None:
        counts[("baseline_warm", int(bucket))] = baseline.warm
        counts[("baseline_warming", int(bucket))] = baseline.warming
    if invalid is not None:
        # The reason is read back from the dead letter: a separate column would cross into
        # Python for every valid reading too, as nulls.
        reasons = Counter(json.loads(letter)["reason"] for letter in invalid)
        counts.update((("dlq", reason), n) for reason, n in reasons.items())
    if len(refused.households):
        counts[("dlq", HOUSEHOLD_LIMIT_REASON)] = len(refused.households)
    if result.late_readings:
        counts[("late", "")] = result.late_readings
    if result.duplicates:
        counts[("duplicate", "")] = result.duplicates
    return counts


def _output_rows(alerts: pd.DataFrame, baseline, invalid: pd.Series | None, refused: Refused,
                 slide_s: int) -> pd.DataFrame:
    scored = baseline.alerts if baseline is not None else None
    n_fixed, n_base, n_refused = len(alerts), 0 if scored is None else len(scored), len(refused.households)
    if not n_fixed and not n_base and not n_refused and invalid is None:  # most calls of a live batch
        return _NO_OUTPUT
    letters = np.empty(0, dtype=object) if invalid is None else invalid.to_numpy(dtype=object)
    frames = [alerts] + ([scored] if n_base else [])
    n_letters = len(letters)

    def ints(name: str, refused_values: np.ndarray) -> np.ndarray:
        return np.concatenate([f[name].to_numpy(np.int64) for f in frames] + [refused_values, np.zeros(n_letters, np.int64)])

    def learned(name: str, dtype) -> np.ndarray:
        values = [scored[name].to_numpy(dtype)] if n_base else []
        blank = np.nan if dtype is np.float64 else 0
        return np.concatenate([np.full(n_fixed, blank, dtype)] + values + [np.full(n_refused + n_letters, blank, dtype)])

    kinds = (np.full(n_fixed, KIND_THRESHOLD), np.full(n_base, KIND_BASELINE), np.full(n_refused, KIND_REFUSED),
             np.zeros(n_letters, np.int64))
    arrays = {
        "household": ints("household", refused.households),
        "window_start": np.concatenate([f.start_pane.to_numpy(np.int64) * slide_s for f in frames]
                                       + [refused.epoch_s, np.zeros(n_letters, np.int64)]),
        "kwh_units": ints("units", refused.units),
        "dead_letter": np.concatenate([np.full(n_fixed + n_base + n_refused, None, dtype=object), letters]),
        "kind": np.concatenate(kinds).astype(np.int64),
        "threshold": learned("threshold", np.float64), "mean": learned("mean", np.float64),
        "sigma": learned("sigma", np.float64), "slot": learned("slot", np.int64),
        "windows": np.concatenate([learned("windows", np.int64)[:n_fixed + n_base], refused.positions,
                                   np.zeros(n_letters, np.int64)]),
    }
    return pd.DataFrame({name: pd.Series([arrays[name]], dtype=object) for name in OUTPUT_COLUMNS})


# Spark's mark of an event-time column (EventTimeWatermark.delayKey): the state operator offers
# getCurrentWatermarkMs only when a column of its input carries it.
WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"


def state_inputs(staged, rule: Rule):
    """What the stateful operator receives: staged readings with the watermark set.

    The event time, but never later than the wall clock when the reading was read
    (`clock_time`), sets the watermark, so that no valid reading, however far ahead of the clock,
    makes the job drop another household's on-time readings; it is then dropped: Python never
    reads it, and pyspark
    turned it into pandas timestamps for every bucket, about 1 ms a bucket and batch (py-spy).
    The event second carries the watermark's mark in its place. With NoTimeout Spark filters no input
    by that mark (only EventTimeTimeout does); late readings are the state function's to count."""
    from pyspark.sql import functions as F

    marked = staged.withWatermark("clock_time", f"{rule.watermark_s} seconds")
    epoch = F.col("epoch_s").alias("epoch_s", metadata={WATERMARK_DELAY_KEY: rule.watermark_s * 1000})
    return marked.select(epoch, *(c for c in marked.columns if c not in ("clock_time", "epoch_s")))


def alert_state(staged, rule: Rule, baseline: BaselineRule | None, tally, seed=None, capacity: int = 2**62):
    """The stateful operator: per bucket, pane sums and alerted windows (panes.py) and the
    baselines (baseline.py; `seed`, a broadcast Seed, to take them from: seeding.py), at most
    `capacity` households; a row per alert, refused reading or dead letter (OUTPUT_COLUMNS)."""
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    state_function = make_state_function(rule, baseline, tally, seed, capacity)
    buckets = (state_inputs(staged, rule).groupBy("bucket")
               .applyInPandasWithState(state_function, BUCKET_OUTPUT_SCHEMA, STATE_SCHEMA, "Append",
                                       GroupStateTimeout.NoTimeout))
    return buckets.select(F.inline(F.arrays_zip(*OUTPUT_COLUMNS)))


def build_stream(spark, settings: Settings, since_ms: int | None = None, seed: Seed | None = None):
    """The streaming DataFrame of the job's output rows (before the sink), and the accumulator
    its state function tallies each batch in (BatchTally); `since_ms` as in read_readings,
    `seed` the baselines to start from (seeding.py)."""
    tally = spark.sparkContext.accumulator({}, BatchTally())
    shipped = None if seed is None else spark.sparkContext.broadcast(seed)
    parsed = parse_readings(read_readings(spark, settings, since_ms), settings.max_reading_kwh,
                            settings.max_line_bytes, settings.future_skew_s)
    staged = stage_panes(parsed, settings.state_buckets, settings.shuffle_partitions)
    return alert_state(staged, settings.rule, settings.baseline_rule, tally, shipped,
                       settings.bucket_capacity), tally


def alert_json(rule: Rule, baseline: BaselineRule | None, household):
    """The alert document, built natively from the state function's alert rows (`household`:
    the id's text); a baseline alert (kind 1) also explains itself with its slot's state.

    alert_id = first 32 hex digits of sha256("household|rule key|window start epoch"): the same
    on every re-delivery of the window's alert. detected_at is the wall clock when the alert's
    record is built, read like validate.wall_clock_s: Spark writes current_timestamp() into a
    streaming query's generated code as the batch's time (tests/test_codegen.py)."""
    from pyspark.sql import functions as F

    def stamp(seconds):
        return F.date_format(F.timestamp_seconds(seconds), "yyyy-MM-dd'T'HH:mm:ss'Z'")

    def by_kind(fixed, learned):
        return fixed if baseline is None else F.when(is_baseline, learned).otherwise(fixed)

    def learned_only(column):
        return F.when(is_baseline, column)  # null for the fixed rule: to_json leaves it out

    start = F.col("window_start")
    is_baseline = F.col("kind") == F.lit(KIND_BASELINE)
    rule_key = by_kind(F.lit(rule.key), F.lit(baseline.key if baseline else ""))
    return F.to_json(F.struct(
        F.substring(F.sha2(F.concat_ws("|", household, rule_key, start.cast("string")), 256),
                    1, 32).alias("alert_id"),
        household.alias("household_id"),
        stamp(start).alias("window_start"),
        stamp(start + rule.window_s).alias("window_end"),
        (F.col("kwh_units") / F.lit(KWH_UNITS)).alias("kwh"),
        by_kind(F.lit(rule.threshold_kwh), F.col("threshold")).alias("threshold_kwh"),
        by_kind(F.lit(rule.description), F.lit(baseline.description if baseline else "")).alias("rule"),
        F.lit(rule.mode).alias("mode"),
        stamp(wall_clock_s()).alias("detected_at"),
        by_kind(F.lit("threshold"), F.lit("baseline")).alias("kind"),
        learned_only(F.col("mean")).alias("baseline_kwh"),
        learned_only(F.col("sigma")).alias("baseline_sigma_kwh"),
        learned_only(F.col("windows")).alias("baseline_windows"),
        learned_only(F.col("slot")).alias("slot"),
    ))


@dataclass
class BatchCounts:
    """What one micro-batch did, as seen by the driver."""

    batch_id: int
    alerts: int = 0
    baseline_alerts: int = 0  # of `alerts`, those of the baseline rule
    late_readings: int = 0
    duplicate_readings: int = 0  # readings already counted: the same household and timestamp
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    # (seconds from a crossing reading reaching Kafka to the report of the batch that wrote its
    # alert, how many alerts), latencies rounded to 10 ms.
    alert_latencies_s: list[tuple[float, int]] = field(default_factory=list)
    # bucket -> (households whose every slot is warm, households still warming), for the
    # buckets this batch touched.
    baseline_households: dict[int, tuple[int, int]] = field(default_factory=dict)
    # bucket -> (households in its state, bytes of its stored state), for the buckets this
    # batch touched.
    bucket_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_tally(cls, batch_id: int, entries: dict, written_ms: float) -> "BatchCounts":
        """From the batch's BatchTally entries, its alerts written by `written_ms` (epoch ms)."""
        counts = cls(batch_id)
        for (_batch, kind, detail), n in entries.items():
            if kind in ("alert", "baseline_alert"):
                counts.alerts += n
                counts.baseline_alerts += n if kind == "baseline_alert" else 0
                counts.alert_latencies_s.append((round((written_ms - detail * 10) / 1000, 2), n))
            elif kind in ("baseline_warm", "baseline_warming"):
                warm, warming = counts.baseline_households.get(detail, (0, 0))
                counts.baseline_households[detail] = (n, warming) if kind == "baseline_warm" else (warm, n)
            elif kind in ("households", "state_bytes"):
                households, stored = counts.bucket_sizes.get(detail, (0, 0))
                counts.bucket_sizes[detail] = (n, stored) if kind == "households" else (households, n)
            elif kind == "late":
                counts.late_readings += n
            elif kind == "duplicate":
                counts.duplicate_readings += n
            else:
                counts.invalid_by_reason[detail] = n
        return counts


def outgoing(stream, settings: Settings):
    """The job's output rows as Kafka records: an alert to ALERTS_TOPIC keyed by its household,
    a dead letter to DLQ_TOPIC as it is."""
    from pyspark.sql import functions as F

    is_refused = F.col("kind") == F.lit(KIND_REFUSED)
    is_alert = F.col("dead_letter").isNull() & ~is_refused
    key = household_text(F.col("household"))
    return stream.select(
        F.when(is_alert, F.lit(settings.alerts_topic)).otherwise(F.lit(settings.dlq_topic)).alias("topic"),
        F.when(is_alert, key).alias("key"),
        F.when(is_alert, alert_json(settings.rule, settings.baseline_rule, key))
        .when(is_refused, refused_letter_json(settings.readings_topic, key))
        .otherwise(F.col("dead_letter")).alias("value"))


def refused_letter_json(readings_topic: str, household):
    """The dead letter of a reading the household bound refused (kind 2): the reading as the job
    read it, in the contract's form (UTC, the kWh in decimal), and where it was read."""
    from pyspark.sql import functions as F

    stamp = F.date_format(F.timestamp_seconds(F.col("window_start")), "yyyy-MM-dd'T'HH:mm:ss'Z'")
    kwh = F.regexp_replace((F.col("kwh_units").cast("decimal(20,0)") / F.lit(KWH_UNITS)).cast("decimal(29,9)")
                           .cast("string"), r"\.?0+\z", "")
    reading = F.concat_ws(",", stamp, household, kwh).cast("binary")
    position = F.col("windows")
    return dead_letter_json(reading, F.lit(HOUSEHOLD_LIMIT_REASON), F.lit(readings_topic),
                            F.shiftright(position, POSITION_SHIFT).cast("int"),
                            position.bitwiseAND(F.lit((1 << POSITION_SHIFT) - 1)), wall_clock_s())


# The sink's producer sends at most 5 requests at a time per broker, and with the client's
# defaults (16 KiB batches, no linger, no compression) a batch of 100,000 alerts took
# thousands of round trips; bigger lz4 batches carry it in a few dozen. 2 ms of linger is
# noise next to a 1 s trigger. A record the broker does not take is retried by the client for up
# to 5 minutes, as the producer's are; then the write task fails, and with it the batch.
SINK_OPTIONS = {
    **KAFKA_FAILOVER_OPTIONS,
    "kafka.acks": "all",
    "kafka.delivery.timeout.ms": "300000",
    "kafka.batch.size": str(256 * 1024),
    "kafka.linger.ms": "2",
    "kafka.compression.type": "lz4",
}
