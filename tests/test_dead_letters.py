"""Every kind of malformed line reaches the dead-letter topic with its reason; the valid lines
around it are still processed."""
from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from helpers import publish, records, run_job_once
from reference import Expectation, iso

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

T0 = 1_783_000_800
MALFORMED = [
    (b"2026-07-02T14:00:00Z,H001", "bad_field_count"),
    (b"2026-07-02T14:00:00Z,H001,0.01,extra", "bad_field_count"),
    (b"2026-02-30T14:00:00Z,H001,0.01", "bad_timestamp"),
    (b"2026-07-02 14:00:00,H001,0.01", "bad_timestamp"),
    (b"2026-07-02T14:00:00.500Z,H001,0.01", "bad_timestamp"),
    (b"yesterday,H001,0.01", "bad_timestamp"),
    (b"2026-07-02T14:00:00Z,H01,0.01", "bad_household_id"),
    (b"2026-07-02T14:00:00Z,h001,0.01", "bad_household_id"),
    (b"2026-07-02T14:00:00Z, H001,0.01", "bad_household_id"),
    (b"2026-07-02T14:00:00Z,H001,abc", "bad_kwh"),
    (b"2026-07-02T14:00:00Z,H001,NaN", "bad_kwh"),
    (b"2026-07-02T14:00:00Z,H001,inf", "bad_kwh"),
    (b"2026-07-02T14:00:00Z,H001,", "bad_kwh"),
    (b"2026-07-02T14:00:00Z,H001,-0.5", "kwh_out_of_range"),
    (b"2026-07-02T14:00:00Z,H001,10.5", "kwh_out_of_range"),
    (b"\xff\xfe,H001,0.1", "not_utf8"),
    (b"", "empty"),
]


@pytest.mark.parametrize("operator", ["python", "jvm"])
def test_each_malformed_line_gets_its_reason(spark, make_settings, operator):
    settings = make_settings(run_mode="demo", state_operator=operator)
    valid = [(iso(T0 + 15 * i), "H042", "0.02") for i in range(len(MALFORMED))]
    lines = []
    for reading, (bad, _) in zip(valid, MALFORMED):
        lines += [",".join(reading).encode(), bad]
    publish(settings, lines)
    counts = run_job_once(spark, settings)

    letters = records(settings, settings.kafka.dlq_topic)
    assert len(letters) == len(MALFORMED)
    by_raw = {}
    for letter in letters:
        raw = letter["raw"].encode() if letter["raw_is_utf8"] else base64.b64decode(letter["raw"])
        by_raw[raw] = letter
        assert letter["source_topic"] == settings.kafka.readings_topic
        assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
    for bad, reason in MALFORMED:
        assert by_raw[bad]["reason"] == reason, bad
    invalid_counted = {}
    for batch in counts:
        for reason, n in batch.invalid_by_reason.items():
            invalid_counted[reason] = invalid_counted.get(reason, 0) + n
    expected_counts = {}
    for _, reason in MALFORMED:
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert invalid_counted == expected_counts

    expect = Expectation(60, 15, Decimal("0.05"), 600)
    expect.batch(valid)
    alerts = records(settings, settings.kafka.alerts_topic)
    assert expect.alerts()
    assert {(a["household_id"], a["window_start"], a["window_end"]) for a in alerts} == set(expect.alerts())


def test_offset_timestamps_are_converted_to_utc(spark, make_settings):
    settings = make_settings(run_mode="demo")
    publish(settings, ["2026-07-02T16:00:00+02:00,H043,0.06"])
    run_job_once(spark, settings)
    alerts = records(settings, settings.kafka.alerts_topic)
    assert {a["window_start"] for a in alerts} == {iso(T0 - 45 + 15 * i) for i in range(4)}
