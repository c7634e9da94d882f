"""Kafka plumbing shared by the commands: topics, an idempotent producer, reading a topic.

The client is confluent-kafka (librdkafka): on the producer path it measured several times
faster than kafka-python from one Python process (docs/decisions/0006-confluent-kafka.md).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not answer in time; the message says where we looked."""


class _OncePerMinute(logging.Filter):
    """Lets a message through once a minute per (logger, level, text without the client's
    timestamp): a broker that is down makes librdkafka repeat the same line many times a second."""

    def __init__(self, interval_s: float = 60.0):
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg)[:120], record.args and str(record.args[-1])[:120])
        now = time.monotonic()
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


# librdkafka's own log, through Python logging at WARNING and rate-limited, instead of its
# default of printing every line to stderr.
CLIENT_LOG = logging.getLogger("librdkafka")
CLIENT_LOG.setLevel(logging.WARNING)
CLIENT_LOG.addFilter(_OncePerMinute())


def client_config(bootstrap: str, **extra) -> dict:
    """The configuration every Kafka client of the pipeline starts from."""
    return {"bootstrap.servers": bootstrap, "logger": CLIENT_LOG, **extra}


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient(client_config(bootstrap))


def replication_for(brokers: int, replication_factor: int = 0, min_insync_replicas: int = 0) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of `brokers`; 0 means derived:
    up to 3 replicas, and one fewer in sync than replicas (at least 1), so with 3 replicas an
    acknowledged write (acks=all) is on 2 brokers and one broker may be lost."""
    replicas = replication_factor or min(3, max(1, brokers))
    return replicas, min_insync_replicas or max(1, replicas - 1)


def ensure_topics(bootstrap: str, partitions: dict[str, int], timeout_s: float = 15.0,
                  replication_factor: int = 0, min_insync_replicas: int = 0) -> None:
    """Create the topics that are missing; existing ones are left as they are (a replication
    below the wanted one is logged: Kafka changes it only by a partition reassignment)."""
    admin = _admin(bootstrap)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {exc.args[0].str()}") from None
    replicas, min_isr = replication_for(len(metadata.brokers), replication_factor, min_insync_replicas)
    for name in partitions.keys() & metadata.topics.keys():
        held = min((len(p.replicas) for p in metadata.topics[name].partitions.values()), default=replicas)
        if held < replicas:
            log.warning("topic %s has %d replica(s), %d wanted: left as it is (reassign its partitions "
                        "to raise it)", name, held, replicas)
    config = {"min.insync.replicas": str(min_isr), "unclean.leader.election.enable": "false"}
    missing = [NewTopic(name, num_partitions=count, replication_factor=replicas, config=config)
               for name, count in partitions.items() if name not in metadata.topics]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
        try:
            future.result()
            log.info("created topic %s (%d replica(s), min.insync.replicas %d)", name, replicas, min_isr)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


@dataclass
class DeliveryStats:
    acknowledged: int = 0
    failed: int = 0
    last_error: str | None = None


class RecordRefused(Exception):
    """The client refused a record before sending it (too large, for one)."""


class ReadingProducer:
    """Idempotent producer (acks=all): every record is either acknowledged or counted as failed.

    `on_delivery(ok, latency_s)` lets the caller feed metrics without this class knowing them.
    """

    def __init__(self, bootstrap: str, topic: str,
                 on_delivery: Callable[[bool, float], None] | None = None,
                 extra_config: dict | None = None):
        config = client_config(bootstrap, **{
            "enable.idempotence": True,
            "acks": "all",
            # A record is retried (in order, without duplicates: idempotence) for up to 5 minutes,
            # which rides out a leader election (seconds) when a broker of a cluster dies.
            "message.timeout.ms": 300_000,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            "error_cb": self._on_error,
        })
        config.update(extra_config or {})
        self._producer = Producer(config)
        self.topic = topic
        self.stats = DeliveryStats()
        self._on_delivery = on_delivery
        self._sent = 0

    def _on_error(self, err: KafkaError) -> None:
        CLIENT_LOG.warning("kafka client error: %s", err.str())
        self.stats.last_error = err.str()

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.stats.acknowledged += 1
        else:
            self.stats.failed += 1
            self.stats.last_error = err.str()
            log.error("delivery failed: %s", err.str())
        if self._on_delivery:
            # librdkafka measures produce() -> acknowledgement itself.
            self._on_delivery(err is None, msg.latency() or 0.0)

    def send(self, key: str | bytes | None, value: bytes | str | None, timestamp_ms: int = 0) -> None:
        """Queue one record; `timestamp_ms` 0 lets the client stamp it with the current time.
        Raises RecordRefused if the client will not take it; nothing else is affected."""
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=self._delivered,
                                       timestamp=timestamp_ms)
                break
            except BufferError:
                # The local queue is full: wait for deliveries to drain it (backpressure).
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise RecordRefused(exc.args[0].str() if exc.args else str(exc)) from exc
        self._sent += 1
        if self._sent % 1000 == 0:  # serve delivery callbacks without a system call per record
            self._producer.poll(0)

    def wait(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Sleep while serving delivery callbacks (so acknowledgements are counted promptly);
        with `stop`, return soon after it is set."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not (stop and stop.is_set()):
            self._producer.poll(left if stop is None else min(left, 0.2))

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still unacknowledged."""
        return self._producer.flush(timeout_s)


_SETTLING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
             KafkaError.UNKNOWN_TOPIC_OR_PART}


def end_offsets(consumer: Consumer, topics, timeout_s: float) -> dict[str, dict[int, int]]:
    """topic -> partition -> end offset, for those of `topics` that exist."""
    metadata = consumer.list_topics(timeout=timeout_s)
    return {topic: {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
                    for p in metadata.topics[topic].partitions}
            for topic in topics if topic in metadata.topics}


def record_time_ms(consumer: Consumer, topic: str, partition: int, offset: int, timeout_s: float) -> int | None:
    """The Kafka timestamp of the record at `offset` (None if it cannot be read in time)."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        msg = consumer.poll(timeout_s)
        return msg.timestamp()[1] if msg is not None and not msg.error() else None
    finally:
        consumer.unassign()


def topic_end_offsets(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """partition -> end offset of one topic ({} if it does not exist), waiting for a new
    topic's leaders to settle."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "energy-monitor-probe",
                                                    "enable.auto.commit": False}))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                return end_offsets(consumer, [topic], timeout_s).get(topic, {})
            except KafkaException as exc:
                error = exc.args[0]
                settling = error.retriable() or error.code() in _SETTLING
                if not settling or time.monotonic() > deadline:
                    raise BrokerUnavailable(f"cannot read {topic} at {bootstrap}: {exc}") from None
                time.sleep(0.5)
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, from_beginning: bool = True,
               idle_timeout_s: float | None = 5.0, stop_at_end: bool = False) -> Iterator:
    """Yield records of every partition without joining a consumer group (nothing is committed).

    Stops after `idle_timeout_s` without a record (None: never), or, with `stop_at_end`,
    as soon as every partition's end offset at start time has been reached.
    """
    consumer = Consumer(client_config(bootstrap, **{"group.id": "energy-monitor-reader", "enable.auto.commit": False,
                                                    "enable.partition.eof": False}))
    try:
        ends = topic_end_offsets(bootstrap, topic)
        start = -2 if from_beginning else -1  # OFFSET_BEGINNING / OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in ends])
        remaining = {p: end for p, end in ends.items() if end > 0} if from_beginning else {}
        last_record = time.monotonic()
        while True:
            if stop_at_end and not remaining:
                return
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last_record > idle_timeout_s:
                    return
                continue
            if msg.error():
                raise BrokerUnavailable(f"reading {topic}: {msg.error().str()}")
            last_record = time.monotonic()
            if msg.partition() in remaining and msg.offset() + 1 >= remaining[msg.partition()]:
                del remaining[msg.partition()]
            yield msg
    finally:
        consumer.close()


def last_values(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[bytes]:
    """The newest record of each non-empty partition (no consumer group, nothing committed)."""
    ends = topic_end_offsets(bootstrap, topic, timeout_s)
    consumer = Consumer(client_config(bootstrap, **{"group.id": "energy-monitor-probe",
                                                    "enable.auto.commit": False}))
    try:
        values = []
        for partition, end in ends.items():
            if end == 0:
                continue
            consumer.assign([TopicPartition(topic, partition, end - 1)])
            msg = consumer.poll(timeout_s)
            if msg is not None and not msg.error() and msg.value() is not None:
                values.append(msg.value())
        return values
    finally:
        consumer.close()
