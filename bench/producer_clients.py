"""Producer throughput of the Kafka clients considered, on the same broker with the same
settings (acks=all, idempotence on, linger 20 ms, no compression), from one Python process.

Usage: .venv/bin/python bench/producer_clients.py [--readings N] [--bootstrap HOST:PORT]
Without --bootstrap a temporary broker is started (and stopped) for the run.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path


from pipeline.ops import broker
from pipeline.core.kafka import ensure_topics
from pipeline.ingest.simulator import Simulator


def readings(n: int) -> list[tuple[bytes, bytes]]:
    lines = Simulator(1000, 15, 10.0, 1, 1_783_000_800).lines()
    out = []
    while len(out) < n:
        household, line = next(lines)
        out.append((household.encode(), line.encode()))
    return out[:n]


def confluent(bootstrap: str, topic: str, data, compression: str = "none") -> tuple[float, int]:
    from confluent_kafka import Producer

    failed = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20, "compression.type": compression,
                         "queue.buffering.max.messages": 1_000_000})
    started = time.perf_counter()
    for key, value in data:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=lambda err, _m: err and failed.append(err))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started, len(failed)


def kafka_python(bootstrap: str, topic: str, data) -> tuple[float, int]:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=20, batch_size=65536)
    failed = []
    started = time.perf_counter()
    for key, value in data:
        producer.send(topic, value=value, key=key).add_errback(failed.append)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    producer.close()
    return elapsed, len(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    process = None
    with tempfile.TemporaryDirectory() as folder:
        bootstrap = args.bootstrap
        if bootstrap is None:
            process, bootstrap = broker.start(Path(folder), broker.free_port(), broker.free_port())
        try:
            data = readings(args.readings)
            results = {}
            for name, run in (("confluent-kafka", lambda t: confluent(bootstrap, t, data)),
                              ("confluent-kafka+lz4", lambda t: confluent(bootstrap, t, data, "lz4")),
                              ("kafka-python", lambda t: kafka_python(bootstrap, t, data))):
                topic = f"bench_{uuid.uuid4().hex[:8]}"
                ensure_topics(bootstrap, {topic: 4})
                confluent(bootstrap, topic, data[:10])  # the broker's first-use work stays out of the timing
                elapsed, failed = run(topic)
                results[name] = {"readings_per_s": round(len(data) / elapsed), "seconds": round(elapsed, 2),
                                 "failed": failed}
                print(f"{name:<22} {len(data) / elapsed:>10,.0f} readings/s  ({elapsed:.1f} s, {failed} failed)",
                      flush=True)
            base = results["kafka-python"]["readings_per_s"]
            for name, row in results.items():
                print(f"{name:<22} {row['readings_per_s'] / base:>6.1f}x kafka-python")
            print(json.dumps(results))
        finally:
            if process is not None:
                broker.stop(process)


if __name__ == "__main__":
    main()
