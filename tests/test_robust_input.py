"""No line a sender writes, and no rule change an operator makes, stops or floods alerting.

Everything runs through the real `energy-monitor stream --once` against the session broker."""
from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from pipeline.core.settings import ReadingsSettings, with_values

from helpers import publish, records, run_job_once
from pipeline.core.contract import DEAD_LETTER_RAW_CHARS
from reference import Expectation, iso

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

T0 = 1_783_000_800
# A dead letter is JSON around a bounded prefix; JSON-escaping control characters grows a
# character to at most 6 ("\u0001"), base64 grows bytes by 4/3.
DEAD_LETTER_MAX_BYTES = 6 * DEAD_LETTER_RAW_CHARS + 1024

POISON = [
    (b"\xff\xfe" * 400_000, "too_long"),  # 800 KB, not UTF-8
    (bytes(range(1, 32)) * 5_500, "too_long"),  # 170 KB of control characters
    (f"{iso(T0)},H{'1' * 600_000},0.01".encode(), "too_long"),  # a 600 KB household id
    (f"{iso(T0)},H{'1' * 20},0.01".encode(), "bad_household_id"),  # an id longer than 12 digits
    (b"2099-12-31T23:59:59Z,H001,0.01", "future_timestamp"),
    (f"{iso(T0)},H001,0.5\r".encode(), "bad_kwh"),
    (f"{iso(T0)},H0\n01,0.5".encode(), "bad_household_id"),
    (f"{iso(T0)}\n,H001,0.5".encode(), "bad_timestamp"),
]


def valid_lines(start: int, ticks: int) -> list[tuple[str, str, str]]:
    return [(iso(start + 15 * i), household, kwh) for i in range(ticks)
            for household, kwh in (("H001", "0.02"), ("H002", "0.011"))]


def raw_of(letter: dict) -> bytes:
    return letter["raw"].encode() if letter["raw_is_utf8"] else base64.b64decode(letter["raw"])


def test_poison_lines_among_valid_ones_do_not_stop_or_silence_alerting(make_settings, spark):
    settings = make_settings(run_mode="demo")
    phase1, phase2 = valid_lines(T0, 8), valid_lines(T0 + 120, 8)
    expect = Expectation(60, 15, Decimal("0.05"), 600)

    publish(settings, [",".join(r).encode() for r in phase1[:8]] + [p for p, _ in POISON[:5]]
            + [",".join(r).encode() for r in phase1[8:]])
    run_job_once(spark, settings)
    expect.batch(phase1)
    publish(settings, [p for p, _ in POISON[5:]] + [",".join(r).encode() for r in phase2])
    run_job_once(spark, settings)
    expect.batch(phase2)

    alerts = records(settings, settings.kafka.alerts_topic)
    assert expect.alerts() and len(expect.alerts()) > 8
    assert {(a["household_id"], a["window_start"], a["window_end"]) for a in alerts} == set(expect.alerts())

    letters = records(settings, settings.kafka.dlq_topic)
    assert sorted(letter["reason"] for letter in letters) == sorted(reason for _, reason in POISON)
    for line, reason in POISON:
        digest = hashlib.sha256(line).hexdigest()
        letter = next(x for x in letters if x["raw_sha256"] == digest)
        assert letter["reason"] == reason and letter["raw_bytes"] == len(line)
        try:
            prefix = line.decode("utf-8")[:DEAD_LETTER_RAW_CHARS].encode()
        except UnicodeDecodeError:
            prefix = line[:DEAD_LETTER_RAW_CHARS]
        assert raw_of(letter) == prefix
        assert len(json.dumps(letter)) <= DEAD_LETTER_MAX_BYTES, (reason, len(json.dumps(letter)))


def test_a_new_checkpoint_starts_from_recent_readings(make_settings, spark, tmp_path):
    now = int(time.time()) // 60 * 60
    old = valid_lines(now - 2 * 86400, 8)
    fresh = valid_lines(now - 600, 8)
    settings = make_settings(run_mode="demo")
    publish(settings, [",".join(r) for r in old], timestamp_ms=(now - 2 * 86400) * 1000)
    publish(settings, [",".join(r) for r in fresh])

    run_job_once(spark, settings)
    only_fresh = Expectation(60, 15, Decimal("0.05"), 600)
    only_fresh.batch(fresh)
    alerts = {(a["household_id"], a["window_start"], a["window_end"])
              for a in records(settings, settings.kafka.alerts_topic)}
    assert only_fresh.alerts() and alerts == set(only_fresh.alerts())

    replay = with_values(settings, starting_offsets="earliest", alerts_topic=settings.kafka.alerts_topic + "_all",
                                 checkpoint_root=str(tmp_path / "replay"))
    run_job_once(spark, replay)
    everything = Expectation(60, 15, Decimal("0.05"), 600)
    everything.batch(old + fresh)
    alerts = {(a["household_id"], a["window_start"], a["window_end"])
              for a in records(replay, replay.kafka.alerts_topic)}
    assert alerts == set(everything.alerts()) and len(alerts) > len(only_fresh.alerts())


def threshold_alerts(settings) -> set[tuple[str, str, str]]:
    return {(a["household_id"], a["window_start"], a["window_end"])
            for a in records(settings, settings.kafka.alerts_topic) if a["kind"] == "threshold"}


def test_a_new_checkpoint_reads_no_old_record_after_a_fresh_one(make_settings, spark):
    """Record times that go back along a partition: a fresh record, then two-day-old ones."""
    now = int(time.time()) // 60 * 60
    fresh, old = valid_lines(now - 600, 8), valid_lines(now - 2 * 86400, 8)
    settings = make_settings(run_mode="demo")
    publish(settings, [",".join(r) for r in fresh])
    publish(settings, [",".join(r) for r in old], timestamp_ms=(now - 2 * 86400) * 1000)

    run_job_once(spark, settings)
    only_fresh = Expectation(60, 15, Decimal("0.05"), 600)
    only_fresh.batch(fresh)
    assert only_fresh.alerts() and threshold_alerts(settings) == set(only_fresh.alerts())


def test_a_reading_59_minutes_ahead_does_not_make_on_time_readings_late(make_settings, spark):
    """Within MAX_FUTURE_SKEW, so valid; the watermark still stays behind the wall clock."""
    now = int(time.time()) // 60 * 60
    settings = make_settings(run_mode="demo")
    publish(settings, [f"{iso(now + 59 * 60)},H999,0.001"])
    run_job_once(spark, settings)
    on_time = valid_lines(now - 300, 8)
    publish(settings, [",".join(r) for r in on_time])
    run_job_once(spark, settings)

    expect = Expectation(60, 15, Decimal("0.05"), 600)
    expect.batch(on_time)
    assert expect.alerts() and threshold_alerts(settings) == set(expect.alerts())


EDGE_TIMESTAMPS = ["2026-07-02T14:00:00Z", "2026-07-02T14:00:00+02:00", "2026-07-02T14:00:00-00:00",
                   "2026-07-02T14:00:00+18:00", "2026-07-02T14:00:00+19:00", "2026-07-02T14:00:00+02:60",
                   "2026-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
                   "2026-07-02T24:00:00Z", "2026-07-02T23:60:00Z", "2026-07-02T23:59:60Z", "0000-01-01T00:00:00Z",
                   "1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2099-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
                   "9999-12-31T23:59:59Z", "2026-07-02T14:00:00z", "2026-07-02 14:00:00Z", "2026-07-02T14:00:00.5Z"]
EDGE_KWH = ["0", "0.", "0.0", ".5", "+0.5", "1e-3", "10", "10.0", "10.000000001", "9.999999999", "123456789012345678",
            "1234567890123456789", "0.123456789012345678", "0.1234567890123456789", "00000000000000000.5", "-0",
            "NaN", "0.0000000005", "0.0000000015"]
EDGE_HOUSEHOLDS = ["H001", "H12", "H000000000000", "H1234567890123", "h001", "H00a"]


def test_common_path_and_field_by_field_checks_agree(spark):
    """The common-line shortcut gives every line the same reason and values as checking it
    field by field, on the edges of each field's format and range."""
    from pipeline.job.validate import parse_readings

    now = int(time.time())
    lines = [f"{ts},H001,0.5" for ts in EDGE_TIMESTAMPS] + [f"{iso(now - 60)},{h},0.5" for h in EDGE_HOUSEHOLDS]
    lines += [f"{iso(now - 60)},H001,{kwh}" for kwh in EDGE_KWH]
    lines += [f"{iso(now + 1800)},H001,0.5", f"{iso(now + 7200)},H001,0.5",  # within and beyond 1 h of skew
              f"{iso(now)},H123456789012,123456789012345678.123456789012345678"]  # 72 bytes > 64
    # Each line's Kafka time is its index: the key that pairs the two paths' rows.
    raw = spark.createDataFrame([(line.encode(), "t", 0, i, datetime.fromtimestamp(i, timezone.utc))
                                 for i, line in enumerate(lines)],
                                "value binary, topic string, partition int, offset long, timestamp timestamp")

    def parsed(common_path: bool) -> dict:
        rows = parse_readings(raw, ReadingsSettings(10.0, 64, 3600), common_path=common_path).collect()
        return {r.record_time: (r.reason, r.event_time, r.household_id, r.kwh_units,
                                json.loads(r.dead_letter)["offset"] if r.dead_letter else None) for r in rows}

    # The shortcut must take the common line, or the comparison below holds trivially.
    from pyspark.sql import functions as F
    from pipeline.core.contract import COMMON_LINE_RE

    assert spark.range(1).select(F.lit(f"{iso(now - 60)},H001,0.5").rlike(COMMON_LINE_RE)).first()[0]
    fast, precise = parsed(True), parsed(False)
    assert len(fast) == len(lines)
    assert fast == precise
    reasons = {row[0] for row in fast.values()}
    assert {None, "bad_timestamp", "future_timestamp", "bad_household_id", "bad_kwh", "kwh_out_of_range",
            "too_long"} <= reasons, reasons  # the cases reach every branch of both paths


def test_round_half_up_is_sparks_round_for_non_negative_values(spark):
    """The parse's rounding of nano-kWh is F.round's, on ties and on values a ulp away from them."""
    from pyspark.sql import functions as F
    from pipeline.job.validate import round_half_up

    values = [0.0, -0.0, 0.5, 1.5, 2.5, 0.49999999999999994, 1 - 2 ** -53, 12340000.000000002, 12339999.5,
              4503599627370495.5, 2.0 ** 52, 2.0 ** 53 + 2, 123456789.49999999, 1e18, 999999999.5000001]
    rows = (spark.createDataFrame([(v,) for v in values], "v double")
            .select("v", F.round("v").cast("long").alias("spark"), round_half_up(F.col("v")).alias("ours")).collect())
    assert [(r.v, r.ours) for r in rows] == [(r.v, r.spark) for r in rows]


def test_valid_lines_parse_to_their_fields(spark):
    """Both paths cut a valid line into the instant, id and energy written in it: the fields are
    cut at the commas in the line's bytes, not by F.split (the two paths share that cut, so the
    test above cannot see it)."""
    from pipeline.job.validate import parse_readings

    now = int(time.time()) - 3600
    lines = {f"{iso(now)},H001,0.01234": (now, "H001", 12_340_000),
             f"{iso(now - 7)},H000000000042,7": (now - 7, "H000000000042", 7_000_000_000),
             f"{iso(now - 60)[:-1]}+02:00,H123,10.000000000": (now - 60 - 7200, "H123", 10_000_000_000),
             f"{iso(now - 120)[:-1]}-00:30,H98765,.5": (now - 120 + 1800, "H98765", 500_000_000)}
    raw = spark.createDataFrame([(line.encode(), "t", 0, i, datetime.fromtimestamp(i, timezone.utc))
                                 for i, line in enumerate(lines)],
                                "value binary, topic string, partition int, offset long, timestamp timestamp")
    for common_path in (True, False):
        rows = sorted(parse_readings(raw, ReadingsSettings(10.0, 64, 3600), common_path=common_path).collect(),
                      key=lambda r: r.record_time)
        assert [(r.reason, int(r.event_time.timestamp()), r.household_id, r.kwh_units)
                for r in rows] == [(None, *expected) for expected in lines.values()]
