"""`energy-monitor archive`: the alerts and readings topics into the history tables (history.py).

A component of its own, beside the stream job, so that writing history never delays an alert.
It assigns every partition itself, starting where the table's last commit left off (the offsets
are stored in the Delta log, in the same commit as the rows), and gathers records for up to
HISTORY_FLUSH_SECONDS before each commit. It also commits those offsets to Kafka under
HISTORY_GROUP, only so that the exporter shows its lag.

A record that is neither a valid reading nor an alert is counted and skipped: the stream job
already sends invalid readings to the dead-letter topic with their reason. When the store
cannot be written, the gathered batch is kept and retried after re-reading the positions the
store holds (a commit reported failed may have gone through): nothing is skipped or counted
twice.

At start the stored positions are checked against each partition's range: behind the log start
(retention deleted what was never archived) the archiver reads from the log start and counts
the gap; ahead of the log end the topic was recreated, and it stops with a one-line error
unless told to accept the new topic. Partitions added later are picked up. One archiver writes
a history: a second on the same local HISTORY_ROOT is refused (a lock file; on an object store
nothing can hold such a lock, see docs/history.md).
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.core.alert import parse_alert
from pipeline.core.contract import parse_reading
from pipeline.core.history import ENERGY_SCHEMA, HistoryStore, HistoryUnavailable, alerts_table, energy_table
from pipeline.core.kafka import client_config
from pipeline.core.metrics import HistoryMetrics
from pipeline.core.settings import HistorySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pace:
    """How often the archiver does what it does beside gathering records, and its largest batch."""

    max_records: int = 200_000
    maintain_every_s: float = 3600.0
    partitions_every_s: float = 60.0


class SeenReadings:
    """The (household, epoch) of every reading archived within the horizon of the newest one.
    Keys join only once their commit has gone through, so a retried batch is not its own repeat."""

    def __init__(self, horizon_s: int):
        self.horizon_s = horizon_s
        self.newest: int | None = None
        self._keys: set[tuple[str, int]] = set()
        self._sweep_at = 10_000  # keys beyond the horizon are dropped when there are this many

    def fresh(self, readings: list[tuple[str, int, float]]) -> tuple[list[tuple[str, int, float]], int]:
        """The readings that are neither archived nor earlier in the list, and how many were."""
        kept, batch = [], set()
        floor = None if self.newest is None else self.newest - self.horizon_s
        for reading in readings:
            key = reading[:2]
            if key in batch or (key in self._keys and (floor is None or key[1] >= floor)):
                continue
            batch.add(key)
            kept.append(reading)
        return kept, len(readings) - len(kept)

    def add(self, readings: list[tuple[str, int, float]]) -> None:
        for household, epoch, _kwh in readings:
            self._keys.add((household, epoch))
            self.newest = epoch if self.newest is None else max(self.newest, epoch)
        if len(self._keys) > self._sweep_at:
            floor = self.newest - self.horizon_s
            self._keys = {key for key in self._keys if key[1] >= floor}
            self._sweep_at = max(10_000, 2 * len(self._keys))


LOCK_FILE = "_archiver.lock"


# What get_watermark_offsets answers for a partition whose leader is not elected yet.
_NO_LEADER_YET = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART)


class HistoryLocked(RuntimeError):
    pass


def lock_history(root: str):
    """An exclusive lock on a local history for this process's life (the open file holds it;
    the kernel drops it when the process dies, however it dies). None for an object store."""
    if "://" in root:
        log.warning("%s is an object store: nothing stops a second archiver writing it", root)
        return None
    Path(root).mkdir(parents=True, exist_ok=True)
    handle = open(Path(root) / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise HistoryLocked(f"another archiver (pid {holder}) is writing {root}: one archiver per history") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Archiver:
    """`accept_new_topic`: a topic recreated since the history last read it is archived from its
    start, instead of stopping the archiver."""

    def __init__(self, history: HistorySettings, store: HistoryStore, metrics: HistoryMetrics,
                 accept_new_topic: bool = False, pace: Pace = Pace()):
        self.history, self.store, self.metrics, self.pace = history, store, metrics, pace
        self.accept_new_topic = accept_new_topic
        kafka = history.kafka
        self.readings_topic, self.alerts_topic = kafka.readings_topic, kafka.alerts_topic
        # A position that retention passes while we run: go on from the log start, not the end.
        self._consumer = Consumer(client_config(kafka.bootstrap_servers, **{
            "group.id": history.history_group, "enable.auto.commit": False, "enable.partition.eof": False,
            "auto.offset.reset": "earliest"}))
        self._tables = {kafka.readings_topic: "energy", kafka.alerts_topic: "alerts"}
        # (topic, partition) -> the next offset its table has committed: a retried batch whose
        # energy commit went through before the alerts commit failed must not append it again.
        self._committed: dict[tuple[str, int], int] = {}
        # A reading of a (household, timestamp) already archived within the job's watermark delay
        # of the newest one is a repeat, stored once.
        self._seen = SeenReadings(history.rule.watermark_s)

    def _partitions(self) -> dict[str, list[int]]:
        metadata = self._consumer.list_topics(timeout=15)
        for topic in self._tables:
            if topic not in metadata.topics:
                raise RuntimeError(f"topic {topic} does not exist yet")
        return {topic: sorted(metadata.topics[topic].partitions) for topic in self._tables}

    def assign(self) -> dict[str, dict[int, int]]:
        """Every partition of both topics, from the offsets the tables recorded, checked
        against each partition's range."""
        self.store.create()
        start = {topic: self._checked(topic, self.store.next_offsets(self._tables[topic], topic, partitions))
                 for topic, partitions in self._partitions().items()}
        self._committed = {(t, p): o for t, offsets in start.items() for p, o in offsets.items()}
        self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._committed.items()])
        log.info("archiving from offsets %s", start)
        return start

    def _checked(self, topic: str, stored: dict[int, int]) -> dict[int, int]:
        positions = {}
        for partition, offset in stored.items():
            low, high = self._watermarks(topic, partition)
            if offset > high and not self.accept_new_topic:
                raise RuntimeError(
                    f"the history has read {topic} partition {partition} up to offset {offset}, but the partition "
                    f"ends at {high}: the topic was recreated. Start over with a new HISTORY_ROOT, or run "
                    f"`energy-monitor archive --accept-new-topic` to add the new topic to this history")
            if offset > high:
                log.warning("%s[%d]: stored position %d is past the end %d (a new topic, accepted): from %d",
                            topic, partition, offset, high, low)
                offset = low
            elif offset < low:
                log.warning("%s[%d]: records %d..%d were deleted by retention before they were archived",
                            topic, partition, offset, low - 1)
                self.metrics.retention_gap.labels(self._tables[topic]).inc(low - offset)
                offset = low
            positions[partition] = offset
        return positions

    def _watermarks(self, topic: str, partition: int, patience_s: float = 60.0) -> tuple[int, int]:
        """A partition's first and next offsets. A partition created moments ago may have no leader
        yet (NOT_LEADER_FOR_PARTITION): retried for `patience_s`, not a crash at start."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError) or time.monotonic() > deadline or not (
                        error.retriable() or error.code() in _NO_LEADER_YET):
                    raise
                log.warning("%s[%d]: %s; retrying", topic, partition, error.str())
                time.sleep(0.5)

    def _pick_up_new_partitions(self) -> None:
        added = {}
        for topic, partitions in self._partitions().items():
            new = [p for p in partitions if (topic, p) not in self._committed]
            if new:
                added[topic] = self._checked(topic, self.store.next_offsets(self._tables[topic], topic, new))
        if added:
            fresh = {(t, p): o for t, offsets in added.items() for p, o in offsets.items()}
            self._committed.update(fresh)
            self._consumer.incremental_assign([TopicPartition(t, p, o) for (t, p), o in fresh.items()])
            log.info("new partitions, archiving from offsets %s", added)

    def run(self, stop: threading.Event) -> None:
        self.assign()
        next_maintenance = time.monotonic()
        next_partitions = time.monotonic() + self.pace.partitions_every_s
        while not stop.is_set():
            batch = self._gather(stop)
            if batch:
                self._write_until_done(batch, stop)
            if time.monotonic() >= next_partitions:
                self._pick_up_new_partitions()
                next_partitions = time.monotonic() + self.pace.partitions_every_s
            if time.monotonic() >= next_maintenance:
                self.maintain()
                next_maintenance = time.monotonic() + self.pace.maintain_every_s
        self._consumer.close()

    def _gather(self, stop: threading.Event) -> list:
        batch, deadline = [], time.monotonic() + self.history.history_flush_seconds
        while not stop.is_set() and len(batch) < self.pace.max_records and time.monotonic() < deadline:
            for msg in self._consumer.consume(min(10_000, self.pace.max_records - len(batch)), timeout=0.5):
                if msg.error():
                    log.warning("consumer: %s", msg.error().str())
                else:
                    batch.append(msg)
        return batch

    def _write_until_done(self, batch: list, stop: threading.Event) -> None:
        pause = 1.0
        while True:
            try:
                self.write(batch)
                return
            except HistoryUnavailable as exc:
                self.metrics.write_errors.inc()
                log.error("history store unavailable, retrying in %.0f s: %s", pause, exc)
            if stop.wait(pause):
                return
            pause = min(pause * 2, 60.0)
            self._reread_positions()

    def _reread_positions(self) -> None:
        """What the store holds wins over what this process believes: the commit that raised
        may have been written."""
        try:
            for topic, table in self._tables.items():
                partitions = sorted(p for t, p in self._committed if t == topic)
                stored = self.store.next_offsets(table, topic, partitions)
                self._committed.update({(topic, p): max(o, self._committed[(topic, p)]) for p, o in stored.items()})
        except HistoryUnavailable as exc:
            log.error("cannot re-read the stored positions yet: %s", exc)

    def write(self, batch: list) -> None:
        """One commit per table for the batch's records of its topic, then the group offsets."""
        by_topic: dict[str, list] = {topic: [] for topic in self._tables}
        for msg in batch:
            by_topic[msg.topic()].append(msg)
        self._commit(self._energy_rows, by_topic[self.readings_topic], self.readings_topic)
        self._commit(self._alert_rows, by_topic[self.alerts_topic], self.alerts_topic)
        ends = {}
        for msg in batch:
            ends[(msg.topic(), msg.partition())] = msg.offset() + 1
        self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=True)
        self.metrics.last_commit.set_to_current_time()

    def _commit(self, to_rows, messages: list, topic: str) -> None:
        messages = [m for m in messages if m.offset() >= self._committed.get((topic, m.partition()), 0)]
        if not messages:
            return
        table = self._tables[topic]
        rows, skipped, on_commit = to_rows(messages)
        next_offsets = {}
        for msg in messages:
            next_offsets[msg.partition()] = msg.offset() + 1
        if rows is not None:  # else nothing valid: re-read after a restart, it yields nothing again
            self.metrics.rows.labels(table).inc(self.store.commit(table, rows, topic, next_offsets))
        self.metrics.records.labels(table).inc(len(messages))
        self.metrics.skipped.labels(table).inc(skipped)
        on_commit()
        self._committed.update({(topic, p): o for p, o in next_offsets.items()})

    def _energy_rows(self, messages: list):
        """The batch's slot sums of readings not archived yet, the records skipped, and what to
        do once they are committed (note them as seen, count the repeats)."""
        bounds = self.history.readings
        parsed = [parse_reading(m.value(), bounds.max_line_bytes, bounds.max_reading_kwh, bounds.max_future_skew)
                  for m in messages]
        valid = [p for p in parsed if p is not None]
        fresh, repeats = self._seen.fresh(valid)

        def on_commit() -> None:
            self._seen.add(fresh)
            self.metrics.duplicates.inc(repeats)

        if not fresh:
            # Only repeats: an empty commit still records the offsets, so that a restarted
            # archiver (which has forgotten what it saw) does not read them again.
            return (ENERGY_SCHEMA.empty_table() if repeats else None), len(parsed) - len(valid), on_commit
        frame = pd.DataFrame(fresh, columns=["household_id", "epoch", "kwh"])
        slot_s = self.history.rule.slide_s
        frame["slot_start"] = frame.epoch // slot_s * slot_s
        sums = frame.groupby(["household_id", "slot_start"], as_index=False).agg(
            kwh=("kwh", "sum"), readings=("kwh", "size"))
        return energy_table(sums), len(parsed) - len(valid), on_commit

    def _alert_rows(self, messages: list):
        alerts, skipped = {}, 0
        for msg in messages:
            parsed = parse_alert(msg.value())
            if parsed.alert is None:
                skipped += 1
                log.warning("skipping record %s/%d@%d: %s", msg.topic(), msg.partition(), msg.offset(), parsed.problem)
                continue
            alerts.setdefault(parsed.alert["alert_id"], parsed.alert)  # one row per id within the batch too
        return (alerts_table(list(alerts.values())) if alerts else None), skipped, lambda: None

    def maintain(self) -> None:
        try:
            done = self.store.maintain(self.history.history_retention_days)
            log.info("history maintenance: %s", done)
        except Exception as exc:  # a failed compaction is retried on the next schedule
            self.metrics.write_errors.inc()
            log.error("history maintenance failed: %s", exc)
