"""The driver's side of a batch's counts: the state function's tally, keyed by batch id, is
handed over batch by batch as Spark reports each batch's progress, to the run that made it."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from pipeline.driver import BatchCountsRouter
from pipeline.stream import BatchCounts


def tally(entries: dict) -> SimpleNamespace:
    """What the router reads of a pyspark accumulator on the driver: its `value`."""
    return SimpleNamespace(value=dict(entries))


def test_a_batch_report_takes_its_own_entries_and_leaves_the_next_batch_s():
    router, seen = BatchCountsRouter(), []
    accumulated = tally({(4, "alert", 100): 2, (4, "dlq", "bad_kwh"): 1, (4, "late", ""): 3,
                         (5, "alert", 150): 7})
    router.announce("q", accumulated, seen.append)
    router.started("run-1", "q")
    router.progressed("run-1", 4)

    assert [(c.batch_id, c.alerts, c.late_readings, c.invalid_by_reason) for c in seen] == [(4, 2, 3, {"bad_kwh": 1})]
    assert accumulated.value == {(5, "alert", 150): 7}
    router.progressed("run-1", 5)
    assert seen[-1].alerts == 7 and accumulated.value == {}


def test_alert_latency_runs_to_the_report():
    counts = BatchCounts.from_tally(0, {(0, "alert", 100): 2}, written_ms=2_500)
    assert counts.alert_latencies_s == [(1.5, 2)]


def test_each_run_gets_its_own_reports_even_under_one_name():
    router, first, second = BatchCountsRouter(), [], []
    router.announce("q", tally({(0, "alert", 1): 1}), first.append)
    router.started("run-1", "q")
    router.announce("q", tally({(0, "alert", 1): 9}), second.append)
    router.progressed("run-1", 0)  # the first run's last report, after the second was announced
    router.terminated("run-1")
    router.started("run-2", "q")
    router.progressed("run-2", 0)

    assert [c.alerts for c in first] == [1] and [c.alerts for c in second] == [9]


def test_a_query_that_did_not_start_is_withdrawn():
    router, seen = BatchCountsRouter(), []
    route = router.announce("q", tally({}), lambda c: pytest.fail("a withdrawn route got counts"))
    router.withdraw("q", route)
    router.announce("q", tally({(0, "late", ""): 2}), seen.append)
    router.started("run-1", "q")
    router.progressed("run-1", 0)
    assert [c.late_readings for c in seen] == [2]


def test_withdrawing_a_start_spark_already_reported_leaves_the_route_bound():
    router, seen = BatchCountsRouter(), []
    route = router.announce("q", tally({(0, "alert", 1): 4}), seen.append)
    router.started("run-1", "q")  # reported before start() raised in the caller
    router.withdraw("q", route)
    router.progressed("run-1", 0)
    assert [c.alerts for c in seen] == [4]


def test_unknown_runs_are_ignored_and_waiting_ends_with_the_run():
    router = BatchCountsRouter()
    router.progressed("someone-else", 3)
    with pytest.raises(TimeoutError):
        router.wait_reported("run-1", timeout_s=0.1)
    threading.Timer(0.2, router.terminated, ["run-1"]).start()
    router.wait_reported("run-1", timeout_s=10)


def test_a_run_gets_its_progress_before_its_counts_and_its_idle_notices():
    router, seen = BatchCountsRouter(), []
    router.announce("q", tally({(0, "alert", 1): 3}), lambda c: seen.append(("batch", c.alerts)),
                    lambda p: seen.append(("progress", p["numInputRows"])), lambda: seen.append("idle"))
    router.announce("other", tally({}), lambda c: pytest.fail("another query's route got counts"))
    router.started("run-1", "q")
    router.progressed("run-1", 0, lambda: {"numInputRows": 12})
    router.idle("run-1")
    router.idle("someone-else")
    assert seen == [("progress", 12), ("batch", 3), "idle"]
