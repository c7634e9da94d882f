"""The session's one StreamingQueryListener and its other half, the router that hands each run of
a query its reports: its progress, each batch's counts (counts.BatchCounts, taken from the run's
accumulator when Spark reports the batch, after its write and commit) and idle notices."""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

from pipeline.job.counts import BatchCounts

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # a route is itself, whatever it holds
class _Route:
    tally: object  # the query's tally: `take(batch_id)` gives the BatchCounts of the batches up to it
    on_batch: Callable[[BatchCounts], None]
    on_progress: Callable[[dict], None] | None
    on_idle: Callable[[], None] | None


class BatchCountsRouter:
    """The session's one StreamingQueryListener's other half: hands each query run its reports.
    A batch's counts go to its `on_batch` when Spark reports the batch's progress (after its
    write and commit), after the progress itself to `on_progress`; idle notices to `on_idle`.

    Each run of a query is routed by its run id (a restart from the same checkpoint keeps the
    query's id). A query is announced by name before it starts and bound to its run id when
    Spark reports its start, which comes before any batch's report, and a finished run's last
    reports keep going to it, never to the next query of the same name."""

    def __init__(self):
        self._lock = threading.Lock()
        self._announced: dict[str, deque] = {}
        self._routes: dict[str, _Route] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # the last 100 run ids, for wait_reported
        self._changed = threading.Condition(self._lock)

    def announce(self, name: str, tally, on_batch: Callable[[BatchCounts], None],
                 on_progress: Callable[[dict], None] | None = None,
                 on_idle: Callable[[], None] | None = None) -> _Route:
        route = _Route(tally, on_batch, on_progress, on_idle)
        with self._lock:
            self._announced.setdefault(name, deque()).append(route)
        return route

    def withdraw(self, name: str, route: _Route) -> None:
        """A query that did not start (unless Spark reported its start all the same)."""
        with self._lock:
            waiting = self._announced.get(name, deque())
            if route in waiting:
                waiting.remove(route)

    def started(self, run_id: str, name: str) -> None:
        with self._lock:
            waiting = self._announced.get(name)
            if waiting:
                self._routes[run_id] = waiting.popleft()

    def progressed(self, run_id: str, batch_id: int, progress: Callable[[], dict] = dict) -> None:
        """`progress` gives the report as a dict, read only when the run has an `on_progress`."""
        route = self._routes.get(run_id)
        if route is None:
            return
        if route.on_progress is not None:
            route.on_progress(progress())
        # Every task of the batch has added to the accumulator before its job ended, and a later
        # batch's record stays for its own report.
        route.on_batch(route.tally.take(batch_id).as_batch(batch_id))

    def idle(self, run_id: str) -> None:
        route = self._routes.get(run_id)
        if route is not None and route.on_idle is not None:
            route.on_idle()

    def terminated(self, run_id: str) -> None:
        with self._lock:
            self._routes.pop(run_id, None)
            self._finished[run_id] = None
            while len(self._finished) > 100:
                self._finished.popitem(last=False)
            self._changed.notify_all()

    def wait_reported(self, run_id: str, timeout_s: float = 60.0) -> None:
        """Until the ended run's every report has been handed over (Spark delivers them to
        listeners asynchronously)."""
        with self._lock:
            if not self._changed.wait_for(lambda: run_id in self._finished, timeout_s):
                raise TimeoutError(f"query run {run_id}: no end reported within {timeout_s:.0f} s")


def batch_counts_router(spark) -> BatchCountsRouter:
    """The session's router, and its listener registered with Spark on first use."""
    from pyspark.sql.streaming import StreamingQueryListener

    router = getattr(spark, "_batch_counts_router", None)
    if router is not None:
        return router
    router = BatchCountsRouter()

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event) -> None:
            log.info("query %s started (id %s)", event.name, event.id)
            router.started(str(event.runId), event.name)

        def onQueryProgress(self, event) -> None:
            router.progressed(str(event.progress.runId), event.progress.batchId,
                              lambda: json.loads(event.progress.json))

        def onQueryIdle(self, event) -> None:
            router.idle(str(event.runId))

        def onQueryTerminated(self, event) -> None:
            log.info("query terminated%s", f": {event.exception}" if event.exception else "")
            router.terminated(str(event.runId))

    spark.streams.addListener(Listener())
    spark._batch_counts_router = router
    return router
