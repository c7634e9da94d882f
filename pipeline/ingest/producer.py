"""Publishing readings: the live simulator and the replay of recorded files."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.ingest.importers import convert, per_minute
from pipeline.core.clock import parse_utc, utc_stamp
from pipeline.core.kafka import ReadingProducer, RecordRefused, last_values
from pipeline.ingest.simulator import Simulator

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
FLUSH_TIMEOUT_S = 30.0


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
             max_lead_s: float | None = None, stop: threading.Event | None = None) -> ProduceSummary:
    """Publish ticks paced at tick_s / speedup wall-clock seconds (speedup <= 0: no pacing).

    With `max_lead_s`, event time never runs more than that far ahead of the wall clock: past
    it the simulator waits, so SPEEDUP only fast-forwards until the lead is reached. Setting
    `stop` ends it between records, which a signal handler should do rather than raise: an
    exception raised inside a delivery callback lost that record from the counts (a compose
    run stopped with 6,150 sent, 6,149 acknowledged, none failed or pending)."""
    stopped = (lambda: stop.is_set()) if stop is not None else (lambda: False)
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY_S
    tick_wall_s = simulator.tick_s / speedup if speedup > 0 else 0.0
    next_tick = started
    sent = 0
    try:
        while (not stopped() and (count is None or sent < count)
               and (duration_s is None or time.monotonic() - started < duration_s)):
            if max_lead_s is not None:
                producer.wait(simulator.epoch_s - max_lead_s - time.time(), stop)
                if stopped():
                    break
            _, lines = simulator.tick_lines()
            for household, line in lines[: None if count is None else count - sent]:
                if stopped():
                    break
                producer.send(household, line)
                sent += 1
            now = time.monotonic()
            if now >= next_progress:
                log.info("produced %d readings (acknowledged %d, failed %d)", sent,
                         producer.stats.acknowledged, producer.stats.failed)
                next_progress = now + PROGRESS_EVERY_S
            next_tick += tick_wall_s
            producer.wait(next_tick - now, stop)
    except KeyboardInterrupt:
        log.info("interrupted; flushing")
    if stopped():
        log.info("stopped; flushing")
    return _summary(producer, sent, FLUSH_TIMEOUT_S)


def resume_point(bootstrap: str, topic: str, tick_s: int, now: int, max_lead_s: int) -> int:
    """Where the simulated clock starts: now, or after the newest reading already in the topic.

    With SPEEDUP > 1 event time runs ahead of the wall clock; a restarted simulator that began
    at `now` again would send readings the stream's watermark has long passed (all dropped as
    late), so it continues its clock instead, but never from further ahead than `max_lead_s`:
    a far-future line in the topic (a bad sender's) must not drag the simulator along.
    """
    newest = now - tick_s
    for value in last_values(bootstrap, topic):
        try:
            stamp = parse_utc(value.split(b",", 1)[0].decode("utf-8"))
        except ValueError:
            continue  # not a reading of ours: it cannot tell where the clock was
        if stamp > now + max_lead_s:
            log.warning("ignoring the newest reading in %s (%s): it is further ahead of the clock "
                        "than the simulator may run", topic, value[:40])
            continue
        newest = max(newest, stamp)
    if newest >= now:
        log.info("continuing the simulated clock after the newest reading in %s (%s)", topic, utc_stamp(newest))
    return max(now, newest + tick_s)


@dataclass(frozen=True)
class ReplaySummary:
    lines_read: int
    published: int
    skipped: int  # rows the converter could not use
    refused: int  # lines the Kafka client would not take (over its record size)
    failed: int
    error: str | None = None  # why the replay stopped early


def replay(producer: ReadingProducer, path: Path, fmt: str, household: str | None = None,
           report: Callable[[int, str], None] | None = None, minutes: bool = False) -> ReplaySummary:
    """Publish a file's lines (converted by `fmt`; `minutes`: each converted half hour as a
    reading a minute, importers.per_minute), logging progress every PROGRESS_EVERY_S.
    A line that cannot be converted, or that Kafka refuses, is reported with its number and
    passed over. An interruption or a read error ends it early, but what was sent is always
    flushed and the summary always says what reached Kafka."""
    read = skipped = refused = sent = 0
    size = max(1, path.stat().st_size)
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY_S
    error = None
    try:
        for item in convert(path, fmt, household):
            read += 1
            why = item.skipped
            if why is None:
                for value in per_minute(item.value) if minutes else (item.value,):
                    try:
                        producer.send(item.key, value)
                        sent += 1
                    except RecordRefused as exc:
                        refused += 1
                        why = f"refused by Kafka ({len(value)} bytes): {exc}"
            else:
                skipped += 1
            if why is not None and report:
                report(item.line_no, why)
            if time.monotonic() >= next_progress:
                elapsed = time.monotonic() - started
                log.info("replay %s: %d lines (%.0f%%), %.0f lines/s", path.name, read,
                         100.0 * item.end_offset / size, read / elapsed)
                next_progress += PROGRESS_EVERY_S
    except KeyboardInterrupt:
        error = f"interrupted after line {read}"
    except OSError as exc:
        error = f"reading {path} failed after line {read}: {exc}"
    result = _summary(producer, sent, 2 * FLUSH_TIMEOUT_S)
    return ReplaySummary(read, result.acknowledged, skipped, refused, result.failed + result.unflushed, error)
