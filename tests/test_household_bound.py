"""The bound on households in the job's state (MAX_HOUSEHOLDS): a full state bucket refuses the
readings of households new to it, as dead letters with their own reason, counted; the
households it holds go on as before."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import publish, records, run_job_once
from pipeline.core.kafka import read_topic
from pipeline.job.counts import BatchCounts
from pipeline.job.state import admit
from reference import iso

T0 = 1_783_000_800


def test_a_full_bucket_takes_its_households_and_then_none():
    known = np.array([5, 9])
    batch = np.array([9, 7, 3, 7, 5, 1, 3])
    assert admit(known, batch, 4).tolist() == [True, True, True, True, True, False, True]
    assert admit(known, batch, 2).tolist() == [True, False, False, False, True, False, False]
    assert admit(np.array([], dtype=np.int64), batch, 10).all()


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.parametrize("operator", ["python", "jvm"])
def test_readings_of_households_beyond_the_bound_are_dead_letters_and_known_ones_go_on(spark, make_settings, operator):
    settings = make_settings(run_mode="demo", state_buckets=4, max_households=8, state_operator=operator)  # 2 a bucket
    flood = [f"{iso(T0 + 15 * i)},H{100 + h},0.02" for h in range(40) for i in range(4)]
    publish(settings, flood)
    first = run_job_once(spark, settings)

    letters = [r for r in records(settings, settings.kafka.dlq_topic) if r["reason"] == "household_limit"]
    refused = {letter["raw"].split(",")[1] for letter in letters}
    admitted = {f"H{100 + h}" for h in range(40)} - refused
    assert len(admitted) == 8  # every bucket of the four filled with two of the forty
    assert len(letters) == 4 * len(refused) == sum(c.invalid_by_reason.get("household_limit", 0) for c in first)
    assert sum(first, BatchCounts()).households()[0] == 8
    sent = {(m.partition(), m.offset()): m.value().decode()
            for m in read_topic(settings.kafka.bootstrap_servers, settings.kafka.readings_topic, stop_at_end=True, idle_timeout_s=10)}
    for letter in letters:
        assert sent[(letter["partition"], letter["offset"])] == letter["raw"]
        assert letter["source_topic"] == settings.kafka.readings_topic and letter["raw_bytes"] == len(letter["raw"])
    # 0.08 kWh in each of the minute windows holding all four readings of a household
    assert {a["household_id"] for a in records(settings, settings.kafka.alerts_topic)} == admitted

    later = T0 + 120
    publish(settings, [f"{iso(later + 15 * i)},{h},0.02" for h in sorted(admitted) for i in range(4)]
            + [f"{iso(later)},H999,0.5"])
    second = run_job_once(spark, settings)
    alerts = records(settings, settings.kafka.alerts_topic)
    assert {a["household_id"] for a in alerts if a["window_start"] >= iso(later - 45)} == admitted
    assert sum(c.invalid_by_reason.get("household_limit", 0) for c in second) == 1
    assert "H999" in {r["raw"].split(",")[1] for r in records(settings, settings.kafka.dlq_topic)}
