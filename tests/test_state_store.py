"""The state store as the job runs it: under the JVM operator RocksDB does not count its keys
(session.store_counts_keys), since counting would read every household's state once more a
batch; the Python operator's store counts them."""
from __future__ import annotations

import pytest

from helpers import publish, run_job_once
from pipeline.job.counts import BatchCounts
from reference import iso

T0 = 1_783_000_800

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


@pytest.mark.parametrize("operator, counted", [("python", True), ("jvm", False)])
def test_the_store_counts_its_keys_only_under_the_python_operator(spark, make_settings, operator, counted):
    settings = make_settings(run_mode="demo", state_buckets=4, state_operator=operator)
    publish(settings, [f"{iso(T0 + 15 * i)},H{100 + h},0.01" for h in range(6) for i in range(2)])
    reports = []
    counts = run_job_once(spark, settings, on_progress=reports.append)

    states = [op for report in reports for op in report.get("stateOperators") or []]
    assert sum(counts, BatchCounts()).households()[0] == 6
    assert states and all(op["numRowsUpdated"] > 0 for op in states)
    assert all((op["numRowsTotal"] > 0) == counted for op in states)
