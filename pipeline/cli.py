"""`energy-monitor`: the one entry point. Settings are read here, once, from the environment."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.ops import stack
from pipeline.core.settings import ConfigError, KafkaSettings, Settings, SimulatorSettings, load_settings
from pipeline.ingest.importers import FORMATS
from pipeline.core.kafka import BrokerUnavailable, ReadingProducer, ensure_topics, read_topic
from pipeline.core.metrics import ProducerMetrics, serve
from pipeline.core.signals import stop_flag_on_signals

log = logging.getLogger("energy_monitor")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def _components(settings: Settings, names: list[str]) -> list[str]:
    known = stack.components(settings)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CliError(f"unknown component {', '.join(unknown)}; choose from {', '.join(known)}")
    return names or list(known)


def cmd_up(settings: Settings, args) -> int:
    names = _components(settings, args.components)
    if "alertmanager" in names and not settings.stack.alert_webhook_url:
        print("WARNING: ALERT_WEBHOOK_URL is not set: Alertmanager has no receiver, alerts reach nobody",
              file=sys.stderr, flush=True)
    for name in names:
        print(f"{name:<12} starting, waiting until it is ready", flush=True)
        outcome = stack.start(settings, name)
        print(f"{name:<12} {outcome:<16} {stack.components(settings)[name].address(settings)}", flush=True)
    print(f"logs in {Path(settings.stack.var_dir) / 'log'}")
    return 0


def cmd_down(settings: Settings, args) -> int:
    # Reverse order: producers and consumers stop before the broker they talk to.
    for name in reversed(_components(settings, args.components)):
        print(f"{name:<12} {stack.stop(settings, name)}", flush=True)
    return 0


def cmd_status(settings: Settings, _args) -> int:
    for name, state, address, log_file in stack.status(settings):
        print(f"{name:<12} {state:<8} {address:<60} {log_file}")
    return 0


def _ensure_topics(kafka: KafkaSettings) -> None:
    ensure_topics(kafka.bootstrap_servers, kafka.topics, **kafka.topic_replication)


def _producer(simulator: SimulatorSettings, metrics_port: int = 0) -> ReadingProducer:
    _ensure_topics(simulator.kafka)
    on_delivery = None
    if metrics_port:
        registry = CollectorRegistry()
        on_delivery = ProducerMetrics(registry).delivered
        serve(registry, simulator.metrics.metrics_host, metrics_port)
    return ReadingProducer(simulator.kafka.bootstrap_servers, simulator.kafka.readings_topic, on_delivery)


def cmd_produce(settings: Settings, args) -> int:
    from pipeline.ingest.producer import resume_point, simulate
    from pipeline.ingest.simulator import Simulator

    sim = settings.simulator
    producer = _producer(sim, sim.producer_metrics_port)
    lead_s = sim.readings.simulator_lead_s
    start = args.start
    if start is None:
        start = resume_point(sim.kafka.bootstrap_servers, sim.kafka.readings_topic, sim.tick_seconds,
                             int(time.time()), lead_s)
    simulator = Simulator(sim.households, sim.tick_seconds, sim.jitter_pct, sim.sim_seed, start)
    log.info("simulating %d households, tick %ds, speedup %g (at most %ds ahead of the clock), seed %d -> %s",
             sim.households, sim.tick_seconds, sim.speedup, lead_s, sim.sim_seed, sim.kafka.readings_topic)
    # SIGTERM (`docker compose stop`, `down`) and Ctrl-C only set a flag here: raised inside a
    # delivery callback, the interrupt would lose that record from the summary's counts.
    with stop_flag_on_signals() as stop:
        result = simulate(producer, simulator, 0 if args.no_pacing else sim.speedup, args.count,
                          args.duration, max_lead_s=lead_s, stop=stop)
    print(f"sent {result.sent}, acknowledged {result.acknowledged}, failed {result.failed}, "
          f"unacknowledged {result.unflushed}")
    if result.failed or result.unflushed:
        raise CliError(f"{result.failed + result.unflushed} readings not delivered: {result.last_error}")
    return 0


def cmd_replay(settings: Settings, args) -> int:
    from pipeline.ingest.producer import replay

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}")

    def report(line_no: int, why: str) -> None:
        print(f"{path}:{line_no}: skipped: {why}", file=sys.stderr)

    if args.per_minute and args.format != "lcl":
        raise CliError("--per-minute spreads half-hourly readings: it goes with --format lcl")
    result = replay(_producer(settings.simulator), path, args.format, args.household, report, args.per_minute)
    print(f"lines read {result.lines_read}, published {result.published}, "
          f"skipped {result.skipped}, refused {result.refused}, failed {result.failed}")
    if result.error:
        raise CliError(result.error)
    return 1 if result.failed or result.refused else 0


def cmd_stream(settings: Settings, args) -> int:
    from pipeline.job.driver import run

    print(run(settings.job, once=args.once).summary())
    return 0


def cmd_exporter(settings: Settings, _args) -> int:
    from pipeline.ops.exporter import exporter_registry

    registry = exporter_registry(settings)
    host, port = settings.metrics.metrics_host, settings.stack.exporter_port
    serve(registry, host, port)
    print(f"exporter on http://{host}:{port}/metrics", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_view(settings: Settings, _args) -> int:
    import subprocess

    from pipeline.view import app as alert_view

    view = settings.view
    command = [sys.executable, "-m", "streamlit", "run", alert_view.__file__,
               "--server.address", view.view_host, "--server.port", str(view.view_port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal"]
    print(f"alert view on http://{view.view_host}:{view.view_port}", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def cmd_alerts(settings: Settings, args) -> int:
    from pipeline.core.alert import parse_alert

    _ensure_topics(settings.kafka)
    unreadable = 0
    for msg in read_topic(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic,
                          from_beginning=args.from_beginning, idle_timeout_s=args.timeout):
        parsed = parse_alert(msg.value())
        if parsed.alert is None:
            unreadable += 1
            print(f"unreadable record at partition {msg.partition()} offset {msg.offset()}: "
                  f"{parsed.problem}", file=sys.stderr, flush=True)
            continue
        print(json.dumps(parsed.alert, separators=(",", ":")), flush=True)
    if unreadable:
        print(f"{unreadable} unreadable records skipped", file=sys.stderr)
    return 0


def cmd_archive(settings: Settings, args) -> int:
    from pipeline.archiver.archive import Archiver, lock_history
    from pipeline.core.history import HistoryStore
    from pipeline.core.metrics import HistoryMetrics

    history = settings.history
    store = HistoryStore(history.history_root)
    if args.maintain:
        print(json.dumps(store.maintain(history.history_retention_days)))
        return 0
    lock = lock_history(history.history_root)  # held until this process ends
    _ensure_topics(history.kafka)
    registry = CollectorRegistry()
    if history.history_metrics_port:
        serve(registry, history.metrics.metrics_host, history.history_metrics_port)
    print(f"archiving {history.kafka.readings_topic} and {history.kafka.alerts_topic} into {history.history_root}",
          flush=True)
    stop = threading.Event()
    try:
        Archiver(history, store, HistoryMetrics(registry), args.accept_new_topic).run(stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_history(settings: Settings, args) -> int:
    import csv

    from pipeline.core import incidents
    from pipeline.core.alert import NAMES
    from pipeline.core.history import AlertQuery, HistoryStore, alert_documents

    since, until = _utc_option(args.since, "--since"), _utc_option(args.until, "--until")
    store = HistoryStore(settings.history.history_root)
    if args.incidents:
        learning = settings.baseline
        found = incidents.incidents(store.alerts(AlertQuery(args.household, since, until)),
                                    learning.slot_s if learning else None, learning.slots if learning else None)
        documents, fields = incidents.documents(found.tail(args.limit) if args.limit else found), incidents.FIELDS
    else:
        documents, fields = alert_documents(store.alerts(AlertQuery(args.household, since, until, args.limit))), list(NAMES)
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "+".join(v) if isinstance(v, list) else v for k, v in d.items()} for d in documents)
    else:
        for document in documents:
            print(json.dumps(document, separators=(",", ":")))
    return 0


def _utc_option(text: str | None, option: str):
    from datetime import datetime, timezone

    from pipeline.core.clock import parse_utc

    if text is None:
        return None
    try:
        return datetime.fromtimestamp(parse_utc(text), tz=timezone.utc)
    except ValueError:
        raise CliError(f"{option}: an ISO-8601 time with a zone, such as 2026-01-05T17:00:00Z, "
                       f"got {text!r}") from None


def cmd_dashboards_publish(settings: Settings, args) -> int:
    from pipeline.ops.grafana_publish import PublishError, publish

    try:
        published = publish(args.url, args.folder, settings.grafana)
    except PublishError as exc:
        raise CliError(str(exc)) from None
    for uid, version in published:
        print(f"{uid:<28} version {version}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="energy-monitor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, text in (("up", cmd_up, "start the local stack (or the named components)"),
                             ("down", cmd_down, "stop what `up` started")):
        p = sub.add_parser(name, help=text)
        p.add_argument("components", nargs="*", metavar="COMPONENT",
                       help=f"any of: {', '.join(stack.components(load_settings({})))} (default: all; "
                            "with KAFKA_BROKERS=N the broker is kafka-1 … kafka-N)")
        p.set_defaults(func=func)
    sub.add_parser("status", help="each component: running or not, address, log").set_defaults(func=cmd_status)

    p = sub.add_parser("produce", help="run the smart-meter simulator")
    p.add_argument("--count", type=_positive_int, help="stop after N readings")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.add_argument("--start", type=int, help="event time of the first tick (epoch seconds; default now)")
    p.add_argument("--no-pacing", action="store_true", help="publish as fast as possible")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("replay", help="publish the lines of a file (or convert a public data set)")
    p.add_argument("file")
    p.add_argument("--format", choices=FORMATS, default="readings")
    p.add_argument("--household", help="household id for --format uci (default H900001)")
    p.add_argument("--per-minute", action="store_true",
                   help="with --format lcl: publish each half hour as 30 one-minute readings of its energy")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("stream", help="run the Spark job")
    p.add_argument("--once", action="store_true", help="process what is available, then exit")
    p.set_defaults(func=cmd_stream)

    sub.add_parser("exporter", help="serve Kafka consumer-group lag and topic offsets to Prometheus"
                   ).set_defaults(func=cmd_exporter)

    sub.add_parser("view", help="the Streamlit alert view").set_defaults(func=cmd_view)

    _add_dashboards(sub)
    _add_history(sub)
    p = sub.add_parser("alerts", help="print alerts as JSON lines")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--timeout", type=float, default=None,
                   help="exit after S seconds without a new alert (default: keep waiting)")
    p.set_defaults(func=cmd_alerts)
    return parser


def _add_dashboards(sub) -> None:
    dashboards = sub.add_parser("dashboards", help="Grafana dashboards").add_subparsers(dest="action", required=True)
    p = dashboards.add_parser("publish", help="load the dashboards into a running Grafana (re-run: update)")
    p.add_argument("--url", required=True, help="Grafana's base URL, e.g. http://127.0.0.1:3000")
    p.add_argument("--folder", default="Energy monitor", help="folder to put them in (created if missing)")
    p.set_defaults(func=cmd_dashboards_publish)


def _add_history(sub) -> None:
    p = sub.add_parser("archive", help="keep the alert and energy history (HISTORY_ROOT) up to date")
    p.add_argument("--maintain", action="store_true",
                   help="apply retention and compact the tables once, then exit")
    p.add_argument("--accept-new-topic", action="store_true",
                   help="a topic recreated since this history last read it: archive it from its start")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("history", help="alerts from the durable history, one per line, oldest first")
    p.add_argument("--household", help="only this household")
    p.add_argument("--since", help="only windows starting at or after this time (ISO-8601)")
    p.add_argument("--until", help="only windows starting before this time (ISO-8601)")
    p.add_argument("--limit", type=_positive_int, help="only the newest N of those")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--incidents", action="store_true",
                   help="one line per incident: a household's alerts of every kind whose windows start at most "
                        "one window apart, with the rules that fired and why (with --limit: the newest N incidents)")
    p.set_defaults(func=cmd_history)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (from `down`) ends a command the way Ctrl-C does: cleanly


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"energy-monitor: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.stack.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # logs every gateway call at INFO
    try:
        return args.func(settings, args)
    except BrokenPipeError:
        # The reader went away (`energy-monitor alerts | head`): nothing more to print.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CliError, BrokerUnavailable, RuntimeError) as exc:
        print(f"energy-monitor: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
