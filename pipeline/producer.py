"""Publishing readings: the live simulator and the replay of recorded files."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .importers import convert
from .kafka_io import ReadingProducer
from .simulator import Simulator, format_reading, utc_stamp

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class ProduceSummary:
    sent: int
    acknowledged: int
    failed: int
    unflushed: int
    last_error: str | None


def _summary(producer: ReadingProducer, sent: int, flush_timeout_s: float) -> ProduceSummary:
    unflushed = producer.flush(flush_timeout_s)
    stats = producer.stats
    return ProduceSummary(sent, stats.acknowledged, stats.failed, unflushed, stats.last_error)


def simulate(producer: ReadingProducer, simulator: Simulator, speedup: float,
             count: int | None = None, duration_s: float | None = None,
             on_sent: Callable[[int], None] | None = None) -> ProduceSummary:
    """Publish ticks paced at tick_s / speedup wall-clock seconds (speedup <= 0: no pacing)."""
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY_S
    tick_wall_s = simulator.tick_s / speedup if speedup > 0 else 0.0
    next_tick = started
    sent = 0
    try:
        while (count is None or sent < count) and (duration_s is None or time.monotonic() - started < duration_s):
            epoch, kwh = simulator.tick()
            households = simulator.homes.ids
            if count is not None:
                households = households[: count - sent]
            stamp = utc_stamp(epoch)
            for household, value in zip(households, kwh.tolist()):
                producer.send(household, format_reading(epoch, household, value, stamp=stamp))
            sent += len(households)
            if on_sent:
                on_sent(len(households))
            now = time.monotonic()
            if now >= next_progress:
                log.info("produced %d readings (acknowledged %d, failed %d)", sent,
                         producer.stats.acknowledged, producer.stats.failed)
                next_progress = now + PROGRESS_EVERY_S
            next_tick += tick_wall_s
            producer.wait(next_tick - now)
    except KeyboardInterrupt:
        log.info("interrupted; flushing")
    return _summary(producer, sent, 30.0)


@dataclass(frozen=True)
class ReplaySummary:
    lines_read: int
    published: int
    skipped: int
    failed: int


def replay(producer: ReadingProducer, path: Path, fmt: str, household: str | None = None,
           report_skip: Callable[[int, str], None] | None = None) -> ReplaySummary:
    read = skipped = 0
    for item in convert(path, fmt, household):
        read += 1
        if item.skipped is not None:
            skipped += 1
            if report_skip:
                report_skip(item.line_no, item.skipped)
            continue
        producer.send(item.key, item.value)
    result = _summary(producer, read - skipped, 60.0)
    return ReplaySummary(read, result.acknowledged, skipped, result.failed + result.unflushed)
