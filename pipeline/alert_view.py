"""The Streamlit alert view: a live, de-duplicated alert feed. Run by `energy-monitor view`.

It consumes `ALERTS_TOPIC` in the consumer group `VIEW_GROUP` and commits what it has shown,
so its lag is visible in `energy_consumer_group_lag`. New alerts are fetched by a fragment
that reruns every `VIEW_REFRESH_SECONDS`; nothing in the script loops or sleeps.
Metrics belong to the Grafana dashboards; this page only shows alerts.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque

import pandas as pd

from pipeline.alerts import parse_alert
from pipeline.kafka_io import client_config

log = logging.getLogger(__name__)

TABLE_ROWS = 200
COLUMNS = ["detected_at", "household_id", "window_start", "window_end", "kwh", "threshold_kwh",
           "rule", "mode", "alert_id"]


class AlertFeed:
    """Alerts by alert_id (a re-delivered alert replaces itself), newest kept up to max_rows.

    A record that is not an alert is counted in `unreadable` (its reason kept in
    `recent_problems`) and skipped. Offsets are stored for commit only after a fetched batch
    has been kept, so a failure mid-batch re-reads it rather than losing it."""

    def __init__(self, bootstrap: str, topic: str, group: str, max_rows: int = 5000):
        from confluent_kafka import Consumer

        self.bootstrap, self.topic, self.max_rows = bootstrap, topic, max_rows
        self._consumer = Consumer(client_config(bootstrap, **{
            "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,
        }))
        self._consumer.subscribe([topic])
        self._alerts: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.unreadable = 0
        self.recent_problems: deque[str] = deque(maxlen=5)

    def check_broker(self, timeout_s: float = 3.0) -> None:
        """Raises KafkaException when the broker does not answer."""
        self._consumer.list_topics(self.topic, timeout=timeout_s)

    def poll(self, max_messages: int = 2000, timeout_s: float = 0.5) -> int:
        """Fetch what is waiting; returns how many new alert ids arrived."""
        with self._lock:
            before = len(self._alerts)
            kept = []
            for msg in self._consumer.consume(max_messages, timeout=timeout_s):
                if msg.error():
                    self.last_error = msg.error().str()
                    continue
                self._add(msg)
                kept.append(msg)
            while len(self._alerts) > self.max_rows:
                self._alerts.popitem(last=False)
            for msg in kept:
                self._consumer.store_offsets(message=msg)
            return len(self._alerts) - before

    def _add(self, msg) -> None:
        parsed = parse_alert(msg.value())
        if parsed.alert is None:
            self.unreadable += 1
            where = f"partition {msg.partition()} offset {msg.offset()}"
            self.recent_problems.append(f"{where}: {parsed.problem}")
            log.warning("unreadable record in %s at %s: %s", self.topic, where, parsed.problem)
            return
        key = parsed.alert["alert_id"]
        self._alerts.pop(key, None)
        self._alerts[key] = parsed.alert

    def frame(self) -> pd.DataFrame:
        with self._lock:
            rows = list(self._alerts.values())
        frame = pd.DataFrame(rows, columns=COLUMNS)
        return frame.sort_values(["detected_at", "window_start"], ascending=False, kind="stable",
                                 ignore_index=True)


def filtered(frame: pd.DataFrame, households: list[str], modes: list[str]) -> pd.DataFrame:
    if households:
        frame = frame[frame.household_id.isin(households)]
    if modes:
        frame = frame[frame["mode"].isin(modes)]
    return frame


def main() -> None:
    import streamlit as st
    from confluent_kafka import KafkaException

    from pipeline.config import load_settings

    st.set_page_config(page_title="Energy alerts", layout="wide")
    settings = load_settings()
    st.title("Energy alerts")
    st.caption(f"{settings.alerts_topic} on {settings.bootstrap_servers} · consumer group {settings.view_group}")
    feed = _feed(settings.bootstrap_servers, settings.alerts_topic, settings.view_group)

    @st.fragment(run_every=settings.view_refresh_seconds)
    def live() -> None:
        try:
            feed.check_broker()
        except KafkaException as exc:
            st.error(f"Kafka is unreachable at {settings.bootstrap_servers} ({exc.args[0].str()}). "
                     "This page keeps retrying.")
            return
        feed.poll()
        if feed.unreadable:
            st.warning(f"{feed.unreadable} unreadable records in {settings.alerts_topic} skipped "
                       f"(latest: {'; '.join(feed.recent_problems)})")
        frame = feed.frame()
        if frame.empty:
            st.info("No alerts yet. They appear here as soon as the stream job emits them.")
            return
        left, right = st.columns(2)
        households = left.multiselect("Household", sorted(frame.household_id.unique()))
        modes = right.multiselect("Mode", sorted(frame["mode"].unique()))
        shown = filtered(frame, households, modes)
        st.metric("Alerts shown", len(shown))
        # A plain table (real DOM rows, newest first) rather than a canvas grid: the feed is short.
        st.table(shown.head(TABLE_ROWS).set_index("detected_at"))
        chart_left, chart_right = st.columns(2)
        chart_left.subheader("Alerts by household")
        chart_left.bar_chart(shown.groupby("household_id").size().rename("alerts"))
        chart_right.subheader("Window sums that alerted (kWh)")
        chart_right.line_chart(shown.assign(window_start=pd.to_datetime(shown.window_start, utc=True)).pivot_table(
            index="window_start", columns="household_id", values="kwh", aggfunc="max"))

    live()


def _feed(bootstrap: str, topic: str, group: str) -> AlertFeed:
    import streamlit as st

    # One consumer per (broker, topic, group) for the whole server process, shared by reruns.
    @st.cache_resource
    def create(bootstrap: str, topic: str, group: str) -> AlertFeed:
        return AlertFeed(bootstrap, topic, group)
    return create(bootstrap, topic, group)


if __name__ == "__main__":
    main()
