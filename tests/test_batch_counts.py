"""The driver's side of a batch's counts: the state function's tally, keyed by batch id, is
handed over batch by batch as Spark reports each batch's progress, to the run that made it; and
BatchCounts added up in its one place."""
from __future__ import annotations

import threading
from collections import Counter
from types import SimpleNamespace

import pytest

from pipeline.job.counts import BatchCounts, BatchTally, BucketFigures, PythonTally, RunTotals
from pipeline.job.listener import BatchCountsRouter


def alerts(n: int, kind: str = "threshold", centisecond: int = 1) -> BatchCounts:
    return BatchCounts(alerts=Counter({kind: n}), crossings=Counter({centisecond: n}))


def tally(entries: dict) -> PythonTally:
    """What the router reads of a pyspark accumulator on the driver (its `value`, added up by
    the accumulator's own rule), through the Python operator's tally."""
    total = {}
    for batch, counts in entries.items():
        BatchTally().addInPlace(total, {batch: counts})
    return PythonTally(SimpleNamespace(value=total))


def test_a_batch_report_takes_its_own_entries_and_leaves_the_next_batch_s():
    router, seen = BatchCountsRouter(), []
    accumulated = tally({4: alerts(2, centisecond=100) + BatchCounts(late_readings=3, invalid_by_reason=Counter(bad_kwh=1)),
                         5: alerts(7, centisecond=150)})
    router.announce("q", accumulated, seen.append)
    router.started("run-1", "q")
    router.progressed("run-1", 4)

    assert [(c.batch_id, c.alert_total, c.late_readings, c.invalid_by_reason) for c in seen] == [(4, 2, 3, {"bad_kwh": 1})]
    assert list(accumulated.accumulator.value) == [5]
    router.progressed("run-1", 5)
    assert seen[-1].alert_total == 7 and accumulated.accumulator.value == {}


def test_alert_latency_runs_to_the_report():
    assert alerts(2, centisecond=100).latencies_s(written_ms=2_500) == [(1.5, 2)]


def test_counts_add_up_in_one_place_and_buckets_keep_their_newest_figures():
    a = BatchCounts(batch_id=3, alerts=Counter(threshold=2), late_readings=1, invalid_by_reason=Counter(bad_kwh=1),
                    buckets={7: BucketFigures(10, 100), 8: BucketFigures(5, 50)})
    b = BatchCounts(batch_id=4, alerts=Counter(threshold=1, baseline=4), duplicate_readings=2,
                    invalid_by_reason=Counter(bad_kwh=2, household_limit=3), buckets={7: BucketFigures(11, 120)})
    both = a + b
    assert (both.batch_id, both.alert_total, dict(both.alerts)) == (4, 7, {"threshold": 3, "baseline": 4})
    assert (both.late_readings, both.duplicate_readings, dict(both.invalid_by_reason)) == (1, 2, {"bad_kwh": 3,
                                                                                                 "household_limit": 3})
    assert both.households() == (16, 170)
    totals = RunTotals()
    totals.add(a.as_batch(3))
    totals.add(b.as_batch(4))
    totals.readings, totals.seconds = 100, 2.0
    assert totals.summary() == ("batches 2, readings 100 in 2.0 s (50/s), alerts 7, late readings dropped 1, invalid "
                                "readings 6 (bad_kwh=3, household_limit=3), duplicate readings 2")


def test_each_run_gets_its_own_reports_even_under_one_name():
    router, first, second = BatchCountsRouter(), [], []
    router.announce("q", tally({0: alerts(1)}), first.append)
    router.started("run-1", "q")
    router.announce("q", tally({0: alerts(9)}), second.append)
    router.progressed("run-1", 0)  # the first run's last report, after the second was announced
    router.terminated("run-1")
    router.started("run-2", "q")
    router.progressed("run-2", 0)

    assert [c.alert_total for c in first] == [1] and [c.alert_total for c in second] == [9]


def test_a_query_that_did_not_start_is_withdrawn():
    router, seen = BatchCountsRouter(), []
    route = router.announce("q", tally({}), lambda c: pytest.fail("a withdrawn route got counts"))
    router.withdraw("q", route)
    router.announce("q", tally({0: BatchCounts(late_readings=2)}), seen.append)
    router.started("run-1", "q")
    router.progressed("run-1", 0)
    assert [c.late_readings for c in seen] == [2]


def test_withdrawing_a_start_spark_already_reported_leaves_the_route_bound():
    router, seen = BatchCountsRouter(), []
    route = router.announce("q", tally({0: alerts(4)}), seen.append)
    router.started("run-1", "q")  # reported before start() raised in the caller
    router.withdraw("q", route)
    router.progressed("run-1", 0)
    assert [c.alert_total for c in seen] == [4]


def test_unknown_runs_are_ignored_and_waiting_ends_with_the_run():
    router = BatchCountsRouter()
    router.progressed("someone-else", 3)
    with pytest.raises(TimeoutError):
        router.wait_reported("run-1", timeout_s=0.1)
    threading.Timer(0.2, router.terminated, ["run-1"]).start()
    router.wait_reported("run-1", timeout_s=10)


def test_a_run_gets_its_progress_before_its_counts_and_its_idle_notices():
    router, seen = BatchCountsRouter(), []
    router.announce("q", tally({0: alerts(3)}), lambda c: seen.append(("batch", c.alert_total)),
                    lambda p: seen.append(("progress", p["numInputRows"])), lambda: seen.append("idle"))
    router.announce("other", tally({}), lambda c: pytest.fail("another query's route got counts"))
    router.started("run-1", "q")
    router.progressed("run-1", 0, lambda: {"numInputRows": 12})
    router.idle("run-1")
    router.idle("someone-else")
    assert seen == [("progress", 12), ("batch", 3), "idle"]


@pytest.mark.parametrize("store_counts_keys,expected", [(True, 9.0), (False, 3 + 2 + 2.0)])
def test_state_keys_come_from_the_store_or_from_the_buckets_figures(store_counts_keys, expected):
    from prometheus_client import CollectorRegistry

    from pipeline.core.metrics import StateShape, StreamMetrics

    registry = CollectorRegistry()
    metrics = StreamMetrics(registry, "prod", 1.0, 2.0, StateShape(store_counts_keys=store_counts_keys))
    metrics.observe_batch(BatchCounts(buckets={0: BucketFigures(3, 300)}))
    metrics.observe_batch(BatchCounts(buckets={5: BucketFigures(2, 200)}))
    # the JVM operator's store reports no keys: 0, whatever it holds
    metrics.observe_progress({"numInputRows": 5, "stateOperators": [{"numRowsTotal": 9 if store_counts_keys else 0,
                                                                     "memoryUsedBytes": 10}]})
    assert registry.get_sample_value("energy_stream_state_rows") == expected
