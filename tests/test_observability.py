"""The running pipeline under Prometheus: every contract metric and every dashboard panel has
data, and stopping the stream job pages through Alertmanager until it is started again."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import dashboard_queries, free_port, isolated_stack, prom_query, publish, run_cli, up, wait_for
from pipeline.core.history import AlertQuery, HistoryStore
from pipeline.ops.exporter import KafkaBrokerCollector

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

CONTRACT_METRICS = [
    "energy_readings_produced_total", "energy_stream_input_rows_total",
    "energy_stream_processed_rows_per_second", "energy_stream_batch_duration_seconds",
    "energy_stream_offsets_behind_latest", "energy_stream_watermark_lag_seconds",
    "energy_stream_late_rows_dropped_total", "energy_invalid_readings_total", "energy_alerts_total",
    "energy_consumer_group_lag", "energy_alert_latency_seconds_count", "energy_stream_lag_seconds",
    "energy_stream_partition_offsets_behind", "energy_consumer_group_partition_lag",
    'energy_data_dir_free_bytes{dir="history"}', "metrics_executor_JVMHeapMemory_bytes",
    "energy_history_rows_written_total", 'energy_kafka_broker_up{broker=~".+"} == 1',
    "energy_kafka_broker_under_replicated_partitions", "energy_kafka_offline_partitions == 0",
    "energy_duplicate_readings_total", 'energy_alerts_total{kind="baseline"}', "energy_baseline_households_warm",
    "energy_history_duplicate_readings_total", "energy_history_retention_gap_records_total",
    "energy_stream_households > 0", "energy_stream_households_limit", "energy_stream_state_bytes > 0",
    "energy_stream_memory_bytes > 0", "energy_stream_state_rows > 0",
]


class Webhook:
    """Collects what Alertmanager posts."""

    def __init__(self):
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def statuses(self, alertname: str) -> list[str]:
        return [alert["status"] for post in self.posts for alert in post["alerts"]
                if alert["labels"]["alertname"] == alertname]


def until_nothing_missing(what: str, missing, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while left := missing():
        assert time.monotonic() < deadline, f"{what}: {left}"
        time.sleep(3)


def test_metrics_dashboards_and_paging(tmp_path):
    webhook = Webhook()
    settings = isolated_stack(tmp_path, alert_webhook_url=webhook.url)
    up(settings)
    try:
        publish(settings, [b"2026-07-02T14:00:00Z,H001,NaN", b"not,a,reading", b"\xff,H001,1"])
        history = HistoryStore(settings.history.history_root)
        wait_for("the archiver to keep alerts", lambda: not history.alerts(AlertQuery(limit=1)).empty, 120, 1)

        until_nothing_missing("metrics without data", lambda: [
            m for m in CONTRACT_METRICS if not prom_query(settings.stack.prometheus_port, m)])
        until_nothing_missing("dashboard panels without data", lambda: [
            (d, title, expr) for d, title, expr in dashboard_queries()
            if not prom_query(settings.stack.prometheus_port, expr)])

        assert "stopped" in run_cli(settings, "down", "stream", timeout=120).stdout
        wait_for("EnergyStreamJobDown to fire in Prometheus", lambda: prom_query(
            settings.stack.prometheus_port, 'ALERTS{alertname="EnergyStreamJobDown", alertstate="firing"}'), 180)
        wait_for("the webhook to receive EnergyStreamJobDown", lambda: "firing" in webhook.statuses("EnergyStreamJobDown"), 120)

        up(settings, "stream")
        wait_for("EnergyStreamJobDown to resolve", lambda: "resolved" in webhook.statuses("EnergyStreamJobDown"), 240)
        assert not prom_query(settings.stack.prometheus_port, 'ALERTS{alertname="EnergyStreamJobDown"}')
    finally:
        run_cli(settings, "down", timeout=180, check=False)
        webhook.server.shutdown()


def broker_samples(bootstrap: str) -> dict:
    collector = KafkaBrokerCollector(bootstrap)
    return {(s.name, s.labels.get("broker")): s.value for family in collector.collect() for s in family.samples}


def test_brokers_are_named_by_their_advertised_address_and_a_silent_one_reads_down(kafka):
    port = kafka.rsplit(":", 1)[1]
    # `localhost` is another name for the broker advertised as 127.0.0.1: it is no second broker.
    by_alias = broker_samples(f"localhost:{port}")
    assert by_alias == {("energy_kafka_offline_partitions", None): 0,
                        ("energy_kafka_broker_up", f"127.0.0.1:{port}"): 1,
                        ("energy_kafka_broker_under_replicated_partitions", f"127.0.0.1:{port}"): 0}
    # A bootstrap address nothing answers on, beside the live broker: a broker down at the start.
    silent = f"127.0.0.1:{free_port()}"
    with_silent = broker_samples(f"{kafka},{silent}")
    assert with_silent[("energy_kafka_broker_up", kafka)] == 1
    assert with_silent[("energy_kafka_broker_up", silent)] == 0
