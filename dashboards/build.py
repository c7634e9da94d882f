"""Builds the Grafana dashboards in dashboards/json/ with grafana-foundation-sdk.

    .venv/bin/python dashboards/build.py          # rewrite the JSON files
    .venv/bin/python dashboards/build.py --check  # exit 1 if the files differ from this code

Every panel reads a recording rule of monitoring/rules/recording.yml through the `datasource`
variable, so dashboards and alerts share one definition of each quantity.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)


def series(title: str, unit: str, description: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .height(8).span(12).min(0))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def single(title: str, unit: str, description: str, expr: str) -> stat.Panel:
    return (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
            .height(4).span(6).with_target(query(expr)))


def base(uid: str, title: str, description: str) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(["energy-monitor"])
            .refresh("10s").time("now-30m", "now").timezone("utc")
            .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))


def pipeline_health() -> db.Dashboard:
    return (base("energy-pipeline-health", "Energy monitor · pipeline health",
                 "Throughput, lag, batch timing, data quality and scrape health of the pipeline.")
            .with_panel(single("Readings in", "rps", "Readings per second written to the readings topic.",
                               'energy:topic_records_in:rate1m{role="readings"}'))
            .with_panel(single("Stream backlog", "short", "Readings in Kafka the stream job has not processed.",
                               "energy:stream_offsets_behind_latest:sum"))
            .with_panel(single("Last batch", "s", "Duration of the latest micro-batch.",
                               "energy:stream_batch_duration_seconds:max"))
            .with_panel(single("Since last progress", "s", "Seconds since the query last reported progress.",
                               "energy:stream_seconds_since_progress:max"))
            .with_panel(single("Alert receiver", "short",
                               "1: Alertmanager posts to ALERT_WEBHOOK_URL. 0: no receiver is configured and "
                               "alerts reach nobody: set ALERT_WEBHOOK_URL in .env and restart alertmanager.",
                               "energy:alert_receiver_configured:min"))
            .with_panel(single("Least disk free", "percentunit",
                               "Free share of the fullest data directory's filesystem (Kafka, checkpoints, "
                               "Prometheus, logs). Below 20% and falling, EnergyDiskFillingUp fires.",
                               "min(energy:data_dir_free:ratio)"))
            .with_panel(series("Throughput in / out", "rps", "Produced readings, readings read by Spark, alerts written.",
                               query("energy:readings_produced:rate1m", "produced (acks)"),
                               query("energy:stream_input_rows:rate1m", "stream input", "B"),
                               query('energy:topic_records_in:rate1m{role="alerts"}', "alerts out", "C")))
            .with_panel(series("Stream lag", "short", "Offsets behind latest (Spark query progress) and consumer-group lag.",
                               query("energy:stream_offsets_behind_latest:sum", "stream job"),
                               query("energy:consumer_group_lag:max", "{{group}} on {{topic}}", "B")))
            .with_panel(series("Lag in seconds", "s", "Watermark lag of the stream job and age of the oldest unconsumed alert per group.",
                               query("energy:stream_watermark_lag_seconds:max", "watermark lag"),
                               query("energy:consumer_group_lag_seconds:max", "{{group}} on {{topic}}", "B")))
            .with_panel(series("Batch duration", "s", "Last micro-batch duration and the producer's p99 delivery latency.",
                               query("energy:stream_batch_duration_seconds:max", "batch duration"),
                               query("energy:producer_delivery_latency_seconds:p99_5m", "producer p99 delivery", "B")))
            .with_panel(series("Invalid and late readings", "rps", "Dead letters by reason and readings dropped as late.",
                               query("energy:invalid_readings:rate5m", "invalid: {{reason}}"),
                               query("energy:late_rows_dropped:rate5m", "late, dropped", "B")))
            .with_panel(series("Exporters up", "short", "1 when Prometheus scrapes the target.",
                               query('up{job=~"energy-.*|prometheus|alertmanager"}', "{{job}}"),
                               query("energy_kafka_up", "kafka reachable", "B"))))


def energy_alerts() -> db.Dashboard:
    return (base("energy-alerts", "Energy monitor · energy & alerts",
                 "Alert rates by mode and the readings behind them. Per-household detail is in the alert view.")
            .with_panel(single("Alerts, last hour", "short", "Alerts emitted in the last hour, all modes.",
                               "sum(energy:alerts:increase1h)"))
            .with_panel(single("Alerts/s", "short", "Alert rate over 5 minutes.", "sum(energy:alerts:rate5m)"))
            .with_panel(single("Readings/s", "rps", "Readings read by the stream job.", "energy:stream_input_rows:rate1m"))
            .with_panel(single("Invalid readings/s", "rps", "Readings sent to the dead-letter topic.",
                               "sum(energy:invalid_readings:rate5m)"))
            .with_panel(series("Alert rate by mode", "short", "Alerts per second, by rule mode.",
                               query("energy:alerts:rate5m", "{{mode}}")))
            .with_panel(series("Alerts over time", "short", "Alerts in the trailing hour, by mode.",
                               query("energy:alerts:increase1h", "{{mode}}")))
            .with_panel(series("Readings per second", "rps", "Produced and processed readings.",
                               query("energy:readings_produced:rate1m", "produced"),
                               query("energy:stream_input_rows:rate1m", "processed", "B")))
            .with_panel(series("Invalid readings by reason", "rps", "Dead letters per second by reason.",
                               query("energy:invalid_readings:rate5m", "{{reason}}"))))


DASHBOARDS = {"pipeline-health.json": pipeline_health, "energy-alerts.json": energy_alerts}


def _without_nulls(value):
    """The SDK writes unset fields as null; Grafana expects them absent."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def render(build) -> str:
    plain = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    return json.dumps(_without_nulls(plain), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the Grafana dashboards")
    parser.add_argument("--check", action="store_true", help="fail if the JSON files are out of date")
    args = parser.parse_args()
    stale = []
    for name, build in DASHBOARDS.items():
        text = render(build)
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
