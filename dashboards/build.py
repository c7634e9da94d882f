"""Builds the Grafana dashboards in dashboards/json/ with grafana-foundation-sdk.

    .venv/bin/python dashboards/build.py          # rewrite the JSON files
    .venv/bin/python dashboards/build.py --check  # exit 1 if the files differ from this code

Every panel reads a recording rule of monitoring/rules/recording.yml through the `datasource`
variable, so dashboards and alerts share one definition of each quantity. A stat panel that
mirrors an alert rule takes its colours from that rule's threshold in monitoring/rules/alerts.yml
(rule_threshold), the one place thresholds are written.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from functools import cache
from pathlib import Path

import yaml

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueColorMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

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


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Threshold steps from (value, color) pairs; the first value is None (the base colour)."""
    return db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(v, c) for v, c in pairs])


ALERT_RULES = Path(__file__).resolve().parents[1] / "monitoring" / "rules" / "alerts.yml"
_COMPARISON = re.compile(r"[<>]=?\s*\(?\s*([0-9.]+)(?:\s*\*\s*([0-9.]+))?\s*\)?")


@cache
def _alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def rule_threshold(alert: str, nth: int = 0) -> float:
    """The number the alert rule's `nth` comparison is against (`> 120`, `> (14.4 * 0.01)`)."""
    found = _COMPARISON.findall(_alert_exprs()[alert])
    if len(found) <= nth:
        raise ValueError(f"{ALERT_RULES}: {alert} has no comparison #{nth} with a number")
    value, factor = found[nth]
    return _plain(float(value) * (float(factor) if factor else 1.0))


def _plain(number: float) -> float:
    """Rounded off float noise, and whole numbers as integers, as they read in the JSON."""
    number = round(number, 12)
    return int(number) if number.is_integer() else number


def red_from(alert: str, nth: int = 0, yellow_share: float | None = None) -> db.ThresholdsConfig:
    """Green, then red from the alert rule's threshold (yellow from a share of it, if given)."""
    red = rule_threshold(alert, nth)
    yellow = [(_plain(red * yellow_share), "yellow")] if yellow_share else []
    return steps((None, "green"), *yellow, (red, "red"))


NEEDS_DATA = steps((None, "red"), (0.001, "green"))  # red at 0: nothing flows
BELOW_IS_BAD = steps((None, "red"), (1, "green"))


def single(title: str, unit: str, description: str, expr: str, thresholds: db.ThresholdsConfig,
           span: int = 6) -> stat.Panel:
    return (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
            .height(4).span(span).with_target(query(expr)).thresholds(thresholds)
            .color_mode(BigValueColorMode.BACKGROUND))


def row(title: str) -> db.Row:
    return db.Row(title)


def base(uid: str, title: str, description: str) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(["energy-monitor"])
            .refresh("10s").time("now-30m", "now").timezone("utc")
            .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
            .annotation(db.AnnotationQuery().name("Firing alerts").datasource(DATASOURCE).enable(True)
                        .icon_color("red").expr('ALERTS{alertstate="firing", alertname=~"Energy.*"}')))


def variable(name: str, label: str, query_text: str) -> db.QueryVariable:
    return (db.QueryVariable(name).label(label).datasource(DATASOURCE).query(query_text)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).include_all(True).all_value(".*").multi(True))


def pipeline_health() -> db.Dashboard:
    dashboard = (base("energy-pipeline-health", "Energy monitor · pipeline health",
                      "Throughput, lag, alert latency, batch timing, state, data quality, Spark and scrape health.")
                 .with_variable(variable("topic", "Topic", "label_values(energy_stream_lag_seconds, topic)"))
                 .with_variable(variable("partition", "Partition",
                                         'label_values(energy_stream_lag_seconds{topic=~"$topic"}, partition)')))
    for panel in _health_overview() + _kafka_brokers() + _latency_and_lag() + _batches_and_state() + _spark_jvm():
        dashboard = dashboard.with_row(panel) if isinstance(panel, db.Row) else dashboard.with_panel(panel)
    return dashboard


def _health_overview() -> list:
    backlog, disk = rule_threshold("EnergyStreamLagGrowing", nth=1), rule_threshold("EnergyDiskFillingUp")
    return [
        row("Overview"),
        single("Readings in", "rps", "Readings per second written to the readings topic. Red at 0: the producers "
               "or meters stopped (EnergyReadingsStalled); read the producer log.",
               'energy:topic_records_in:rate1m{role="readings"}', NEEDS_DATA),
        single("Stream lag", "s", "Age of the oldest reading the job has not processed. Red from "
               f"{rule_threshold('EnergyStreamLagHigh'):g} s, as EnergyStreamLagHigh: check the lag-per-partition "
               "table, then batch duration.",
               "energy:stream_lag_seconds:max", red_from("EnergyStreamLagHigh", yellow_share=0.5)),
        single("Stream backlog", "short", "Readings in Kafka the job has not processed. Yellow from "
               f"{backlog:,.0f}, where EnergyStreamLagGrowing starts watching the trend; if it keeps growing, "
               "scale out.", "energy:stream_offsets_behind_latest:sum",
               steps((None, "green"), (backlog, "yellow"), (10 * backlog, "red"))),
        single("Since last progress", "s", "Seconds since the query last reported progress. Red from "
               f"{rule_threshold('EnergyStreamStalled'):g} s, as EnergyStreamStalled: look for a stuck batch in the "
               "Spark UI.", "energy:stream_seconds_since_progress:max",
               red_from("EnergyStreamStalled", yellow_share=0.25)),
        single("Alert receiver", "short", "1: Alertmanager posts to ALERT_WEBHOOK_URL. 0 (red): no receiver is "
               "configured and alerts reach nobody; set ALERT_WEBHOOK_URL in .env and restart alertmanager.",
               "energy:alert_receiver_configured:min", BELOW_IS_BAD),
        single("Least disk free", "percentunit", "Free share of the fullest data directory's filesystem (Kafka, "
               f"checkpoints, Prometheus, logs). Red under {disk:.0%}, where EnergyDiskFillingUp watches the trend: "
               "lower retention or add disk.",
               "min(energy:data_dir_free:ratio)", steps((None, "red"), (disk, "yellow"), (2 * disk, "green"))),
        single("Invalid readings/s", "rps", "Dead letters per second. Yellow above 0, as EnergyInvalidReadings: "
               "read energy_readings_dlq (reason, raw prefix, partition/offset) and fix the sender.",
               "sum(energy:invalid_readings:rate5m)", steps((None, "green"), (0.001, "yellow"))),
        single("Late readings/s", "rps", "Readings dropped as later than the watermark. Yellow above 0, as "
               "EnergyLateReadingsDropped: a delayed producer or clock skew.",
               "sum(energy:late_rows_dropped:rate5m)", steps((None, "green"), (0.001, "yellow"))),
        series("Throughput in / out", "rps", "Produced readings, readings read by Spark, alerts written. If input "
               "exceeds what the job reads for long, the backlog grows: scale out.",
               query("energy:readings_produced:rate1m", "produced (acks)"),
               query("energy:stream_input_rows:rate1m", "stream input", "B"),
               query('energy:topic_records_in:rate1m{role="alerts"}', "alerts out", "C")),
        series("Exporters up", "short", "1 when Prometheus scrapes the target. A 0 is EnergyTargetDown: "
               "`energy-monitor status` and the component's log.",
               query('up{job=~"energy-.*|prometheus|alertmanager|spark"}', "{{job}}"),
               query("energy_kafka_up", "kafka reachable", "B")),
    ]


def _kafka_brokers() -> list:
    return [
        row("Kafka brokers"),
        single("Offline partitions", "short", "Partitions with no leader: nothing can be read from or written to "
               "them. Red above 0, as EnergyKafkaOfflinePartitions: start the brokers that are down.",
               "energy:kafka_offline_partitions:max", steps((None, "green"), (1, "red")), span=4),
        single("Brokers up", "short", "Brokers the cluster lists. Below the brokers you run is "
               "EnergyKafkaBrokerDown: see the panel to the right for which.",
               "sum(energy:kafka_broker_up:max)", BELOW_IS_BAD, span=4),
        single("Under-replicated partitions", "short", "Partitions with fewer in-sync replicas than replicas. "
               "Above 0 while a broker is down or catching up; for 5 min is "
               "EnergyKafkaUnderReplicatedPartitions.",
               "sum(energy:kafka_under_replicated_partitions:max)", steps((None, "green"), (1, "yellow")), span=4),
        series("Broker up", "short", "1 per broker the cluster lists (registered, not fenced); 0: dead or "
               "fenced, EnergyKafkaBrokerDown after 1 min.",
               query("energy:kafka_broker_up:max", "{{broker}}")),
        series("Under-replicated partitions by leader", "short", "Partitions each broker leads with a replica "
               "out of sync. Back to 0 once a restarted broker has caught up and rejoined the ISR.",
               query("energy:kafka_under_replicated_partitions:max", "{{broker}}")),
    ]


def _latency_and_lag() -> list:
    slo = steps((None, "green"), (1.5, "yellow"), (2, "red"))  # ALERT_LATENCY_SLO_SECONDS default
    return [
        row("Alert latency and lag"),
        single("Alert latency p50", "s", "Median time from the crossing reading reaching Kafka to its alert "
               "written (5 min). Red from the 2 s SLO target: see batch duration and lag.",
               "energy:alert_latency_seconds:p50_5m", slo),
        single("Alert latency p95", "s", "95th percentile of the alert latency (5 min). Red from the SLO target.",
               "energy:alert_latency_seconds:p95_5m", slo),
        single("Alert latency p99", "s", "99th percentile (5 min): the SLO wants 99% of alerts within "
               "ALERT_LATENCY_SLO_SECONDS. Red here for long is an SLO burn.",
               "energy:alert_latency_seconds:p99_5m", slo),
        single("SLO errors (1 h)", "percentunit", "Share of alerts over the latency target in the last hour. "
               f"Yellow from {rule_threshold('EnergyAlertLatencySLOSlowBurn'):.1%}, as EnergyAlertLatencySLOSlowBurn; "
               f"red from {rule_threshold('EnergyAlertLatencySLOFastBurn'):.1%}, as EnergyAlertLatencySLOFastBurn.",
               "energy:alert_latency_slo_errors:ratio_rate1h",
               steps((None, "green"), (rule_threshold("EnergyAlertLatencySLOSlowBurn"), "yellow"),
                     (rule_threshold("EnergyAlertLatencySLOFastBurn"), "red"))),
        heatmap.Panel().title("Alert latency").description(
            "Alerts per latency bucket over time. A band moving up: batches slow down or the job falls behind.")
        .datasource(DATASOURCE).height(8).span(12)
        .with_target(query("energy:alert_latency_seconds_bucket:rate1m", "{{le}}").format(PromQueryFormat.HEATMAP)),
        table.Panel().title("Lag per partition").description(
            "Seconds and records behind, per partition of $topic. One partition far behind: its leader broker "
            "or a hot key; all of them: the job is too slow.")
        .datasource(DATASOURCE).height(8).span(12)
        .with_target(query('energy:stream_lag_seconds:by_partition{topic=~"$topic", partition=~"$partition"}',
                           "seconds").instant().format(PromQueryFormat.TABLE))
        .with_target(query('energy:stream_offsets_behind:by_partition{topic=~"$topic", partition=~"$partition"}',
                           "records", "B").instant().format(PromQueryFormat.TABLE)),
        series("Lag in seconds", "s", "Oldest unprocessed reading per partition, and the oldest unconsumed "
               "alert per committing group. Rising without end: the consumer is down or too slow.",
               query('energy:stream_lag_seconds:by_partition{topic=~"$topic", partition=~"$partition"}',
                     "stream {{topic}}/{{partition}}"),
               query("energy:consumer_group_lag_seconds:max", "{{group}} on {{topic}}", "B")),
        series("Records behind", "short", "Records behind per partition for the job and for every committing group.",
               query('energy:stream_offsets_behind:by_partition{topic=~"$topic", partition=~"$partition"}',
                     "stream {{topic}}/{{partition}}"),
               query("energy:consumer_group_partition_lag:max", "{{group}} {{topic}}/{{partition}}", "B")),
    ]


def _batches_and_state() -> list:
    return [
        row("Batches and state"),
        series("Batch duration", "s", "Last micro-batch duration and the producer's p99 delivery latency. "
               "Above the trigger interval for 5 min is EnergyStreamBatchesSlow: more cores, or check state size.",
               query("energy:stream_batch_duration_seconds:max", "batch duration"),
               query("energy:producer_delivery_latency_seconds:p99_5m", "producer p99 delivery", "B")),
        series("State", "short", "Keys (state buckets) and memory of the alert state store. Memory growing "
               "without bound means windows are not evicted: check the watermark lag.",
               query("energy:stream_state_rows:sum", "rows"),
               query("energy:stream_state_memory_bytes:sum", "memory bytes", "B")),
        single("Households in the state", "percentunit", "Households in the job's state as a share of "
               "MAX_HOUSEHOLDS. Past the rule's line for 15 min is EnergyStreamHouseholdsNearLimit; at 100% new "
               "households' readings are dead letters (household_limit).", "energy:stream_households:ratio",
               red_from("EnergyStreamHouseholdsNearLimit", yellow_share=0.8)),
        single("State against memory", "percentunit", "Bytes of the stored state as a share of the heap its "
               "tasks run in. Past the rule's line for 15 min is EnergyStreamStateNearMemory; near 100% a batch "
               "runs out of memory.", "energy:stream_state_memory:ratio",
               red_from("EnergyStreamStateNearMemory", yellow_share=0.6)),
        series("Households and their state", "short", "Households in the state and their bound (MAX_HOUSEHOLDS); "
               "bytes of the stored state and the heap that holds it.",
               query("energy:stream_households:max", "households"),
               query("energy:stream_households_limit:max", "bound (MAX_HOUSEHOLDS)", "B"),
               query("energy:stream_state_bytes:max", "state bytes", "C"),
               query("energy:stream_memory_bytes:max", "heap bytes", "D")),
        series("Watermark lag", "s", "Wall-clock time minus the event-time watermark (negative while the "
               "simulator runs ahead with SPEEDUP). Growing: readings arrive late or the job is behind.",
               query("energy:stream_watermark_lag_seconds:max", "watermark lag")),
        series("Invalid and late readings", "rps", "Dead letters by reason and readings dropped as late. "
               "Read energy_readings_dlq to find the sender.",
               query("energy:invalid_readings:rate5m", "invalid: {{reason}}"),
               query("energy:late_rows_dropped:rate5m", "late, dropped", "B")),
        series("History writes", "rps", "Rows the archiver commits to the history per table (alerts: new "
               "alert ids only; energy: slot sums). Zero while readings flow: the archiver is down "
               "(EnergyTargetDown) or failing (EnergyHistoryWritesFailing); its lag is in the consumer-lag panel.",
               query("energy:history_rows_written:rate1m", "{{table}}")),
    ]


def _spark_jvm() -> list:
    return [
        row("Spark JVM"),
        series("JVM heap", "bytes", "Heap in use per executor (the driver in local mode). Near the maximum "
               "with rising GC time: smaller batches (MAX_OFFSETS_PER_TRIGGER) or more memory.",
               query("energy:spark_jvm_heap_bytes:max", "{{executor_id}}")),
        series("GC time", "percentunit", "Share of time in garbage collection per executor. Above 10%: the "
               "JVM is short of memory.",
               query("energy:spark_gc_seconds:rate1m", "{{executor_id}}")),
        series("Active tasks", "short", "Tasks running now. Always at the core count: the job is CPU-bound.",
               query("energy:spark_active_tasks:sum", "active")),
        series("Failed tasks", "short", "Tasks failed in the last 5 minutes. Any: read the stream log; "
               "Spark retries them, but a batch that keeps failing stops the query.",
               query("energy:spark_failed_tasks:increase5m", "failed")),
    ]


def energy_alerts() -> db.Dashboard:
    storm = rule_threshold("EnergyAlertStorm")
    return (base("energy-alerts", "Energy monitor · energy & alerts",
                 "Alert rates by mode and the readings behind them. Per-household detail is in the alert view.")
            .with_variable(variable("mode", "Mode", "label_values(energy_alerts_total, mode)"))
            .with_panel(single("Alerts, last hour", "short", f"Alerts emitted in the last hour. Red from "
                               f"{storm * 3600:,.0f} ({storm:g}/s, as EnergyAlertStorm): check RUN_MODE and the "
                               "threshold.", 'sum(energy:alerts:increase1h{mode=~"$mode"})',
                               steps((None, "green"), (storm * 3600, "red"))))
            .with_panel(single("Alerts/s", "short", f"Alert rate over 5 minutes. Red from {storm:g}/s, as "
                               "EnergyAlertStorm: a wrong threshold or a meter stuck high.",
                               'sum(energy:alerts:rate5m{mode=~"$mode"})', red_from("EnergyAlertStorm")))
            .with_panel(single("Readings/s", "rps", "Readings read by the stream job. Red at 0: the job or the "
                               "producers stopped.", "energy:stream_input_rows:rate1m", NEEDS_DATA))
            .with_panel(single("Invalid readings/s", "rps", "Readings sent to the dead-letter topic. Yellow above 0, "
                               "as EnergyInvalidReadings: read energy_readings_dlq.",
                               "sum(energy:invalid_readings:rate5m)", steps((None, "green"), (0.001, "yellow"))))
            .with_panel(series("Alert rate by mode", "short", "Alerts per second, by rule mode. A jump after a "
                               "rule change is expected; a jump without one is a meter or data problem.",
                               query('energy:alerts:rate5m{mode=~"$mode"}', "{{mode}}")))
            .with_panel(series("Alerts over time", "short", "Alerts in the trailing hour, by mode. Compare with "
                               "yesterday at the same hour: a daily pattern is normal, a step is not.",
                               query('energy:alerts:increase1h{mode=~"$mode"}', "{{mode}}")))
            .with_panel(series("Readings per second", "rps", "Produced and processed readings. A gap between "
                               "them is the job falling behind.",
                               query("energy:readings_produced:rate1m", "produced"),
                               query("energy:stream_input_rows:rate1m", "processed", "B")))
            .with_panel(series("Invalid readings by reason", "rps", "Dead letters per second by reason: the "
                               "reason says what the sender writes wrong.",
                               query("energy:invalid_readings:rate5m", "{{reason}}")))
            .with_row(row("Baseline rule"))
            .with_panel(series("Alerts by rule", "short", "Alerts per second of the fixed threshold rule and of the "
                               "per-household baseline rule. Baseline alerts without threshold alerts are the "
                               "small households' anomalies the fixed rule cannot see.",
                               query("energy:alerts_by_kind:rate5m", "{{kind}}")))
            .with_panel(series("Baseline warm-up", "short", "Households whose baseline is warm in every slot, and "
                               "those still learning (BASELINE_WARMUP windows per slot). After a new mode or slot "
                               "layout without a history, all of them start warming.",
                               query("energy:baseline_households:sum", "{{state}}")))
            .with_panel(series("Baseline alerts per warm household", "short", "Baseline alerts per second per "
                               "warm household. EnergyBaselineAlertsJump fires at five times the last day's "
                               "average: units, clocks or a replay, more likely than many heaters at once.",
                               query("energy:baseline_alerts_per_warm_household:rate15m", "per household")))
            .with_panel(series("Duplicate readings/s", "rps", "Readings of a household and timestamp already "
                               "counted, sent again (meter retransmissions, a replay run twice): each counted "
                               "once. A steady rate is a sender that repeats itself.",
                               query("energy:duplicate_readings:rate5m", "repeats"))))


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
