"""`energy-monitor up/down/status`: the local stack as background processes.

Each component runs detached in its own session, with its log in `VAR_DIR/log/<name>.log`
(rotated at LOG_MAX_BYTES) and its pid and start time in `VAR_DIR/run/<name>.pid`. `up` is
idempotent (a running component is left alone) and waits for each component's own readiness
check; `down` stops only what `up` started (processes.py).
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.ops import broker

from pipeline.ops import ports

from pipeline.ops import processes
from pipeline.ops.broker import port_open
from pipeline.core.settings import PROJECT_ROOT, Settings
from pipeline.core.kafka import ensure_topics
from pipeline.ops.processes import PidFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Component:
    name: str
    command: Callable[[Settings], list[str]]
    address: Callable[[Settings], str]
    ready: Callable[[Settings], bool]  # its own readiness check, not just an open port
    port: Callable[[Settings], int] | None = None  # must be free before it starts
    wait_s: float = 120.0


def kafka_dir(settings: Settings) -> Path:
    """Where the local broker keeps its data; a cluster of N nodes has a folder of its own, so
    changing KAFKA_BROKERS never meets storage formatted for another quorum."""
    var = Path(settings.stack.var_dir)
    return var / "kafka" if settings.stack.kafka_brokers == 1 else var / f"kafka-{settings.stack.kafka_brokers}"


def kafka_nodes(settings: Settings) -> list[broker.Node]:
    return broker.local_nodes(settings.kafka.bootstrap_list[:settings.stack.kafka_brokers], settings.stack.kafka_controller_port,
                              kafka_dir(settings))


def _kafka_ready(settings: Settings) -> bool:
    """Every local broker registered, with the pipeline's topics created (so the exporter sees
    them at once)."""
    if broker.live_brokers(settings.kafka.bootstrap_servers) < settings.stack.kafka_brokers:
        return False
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topics, **settings.kafka.topic_replication)
    return True


def _kafka_component(index: int, count: int) -> Component:
    """Node `index` of `count`. A quorum forms only once most voters run, so the nodes before
    the last are ready when their controller listens; the last waits for the whole cluster."""
    def node(settings: Settings) -> broker.Node:
        return kafka_nodes(settings)[index - 1]

    def command(settings: Settings) -> list[str]:
        return broker.prepare(node(settings), kafka_nodes(settings), broker.cluster_id(kafka_dir(settings)),
                              settings.stack.kafka_retention_bytes)

    def ready(settings: Settings) -> bool:
        return _kafka_ready(settings) if index == count else port_open("127.0.0.1", node(settings).controller_port)

    return Component("kafka" if count == 1 else f"kafka-{index}", command,
                     lambda s: f"{node(s).host}:{node(s).port}", ready, lambda s: node(s).port)


MONITORING_DIR = PROJECT_ROOT / "monitoring"


def scrape_targets(settings: Settings) -> dict[str, str]:
    host = settings.metrics.metrics_host
    return {
        "energy-producer": f"{host}:{settings.simulator.producer_metrics_port}",
        "energy-stream": f"{host}:{settings.job.stream_metrics_port}",
        "energy-exporter": f"{host}:{settings.stack.exporter_port}",
        "energy-history": f"{host}:{settings.history.history_metrics_port}",
        "spark": f"127.0.0.1:{settings.job.spark_ui_port}",
        "prometheus": f"127.0.0.1:{settings.stack.prometheus_port}",
        "alertmanager": f"127.0.0.1:{settings.stack.alertmanager_port}",
    }


def write_prometheus_config(settings: Settings, folder: Path) -> Path:
    """A copy of monitoring/prometheus.yml and its rules, with file-SD targets for these ports."""
    (folder / "targets").mkdir(parents=True, exist_ok=True)
    shutil.copy(MONITORING_DIR / "prometheus.yml", folder / "prometheus.yml")
    shutil.copytree(MONITORING_DIR / "rules", folder / "rules", dirs_exist_ok=True)
    for job, target in scrape_targets(settings).items():
        (folder / "targets" / f"{job}.json").write_text(json.dumps([{"targets": [target]}]))
    return folder / "prometheus.yml"


def _prometheus_command(settings: Settings) -> list[str]:
    folder = Path(settings.stack.var_dir) / "prometheus"
    config = write_prometheus_config(settings, folder)
    return ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.stack.prometheus_port}", "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=15d",
            f"--storage.tsdb.retention.size={settings.stack.prometheus_retention_size}"]


def _alertmanager_command(settings: Settings) -> list[str]:
    """The same renderer as docker compose: the receiver comes from ALERT_WEBHOOK_URL."""
    folder = Path(settings.stack.var_dir) / "alertmanager"
    folder.mkdir(parents=True, exist_ok=True)
    return ["env", f"ALERT_WEBHOOK_URL={settings.stack.alert_webhook_url}",
            f"WATCHDOG_WEBHOOK_URL={settings.stack.watchdog_webhook_url}", "sh",
            str(MONITORING_DIR / "alertmanager-run.sh"), str(MONITORING_DIR / "alertmanager.yml"),
            str(folder / "alertmanager.yml"), f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.stack.alertmanager_port}", "--cluster.listen-address="]


def _http_text(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.read(1_000_000).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def _serves(port_of: Callable[[Settings], int], path: str, marker: str) -> Callable[[Settings], bool]:
    """Ready when the port answers `path` with `marker` in the body: a foreign process that
    merely holds the port does not pass."""
    return lambda settings: marker in (_http_text(port_of(settings), path) or "")


def _metric_positive(port_of: Callable[[Settings], int], metric: str) -> Callable[[Settings], bool]:
    """Ready when the component's own metric is above 0 (its first acknowledged reading, its
    query's first progress report); with its metrics port off, as soon as it runs."""
    def ready(settings: Settings) -> bool:
        port = port_of(settings)
        if not port:
            return True
        lines = (_http_text(port, "/metrics") or "").splitlines()
        return any(line.startswith(metric + " ") and float(line.split()[-1]) > 0 for line in lines)
    return ready


def _cli(*args: str) -> Callable[[Settings], list[str]]:
    return lambda _settings: [sys.executable, "-m", "pipeline.cli", *args]


_SERVICES = {
    "prometheus": Component("prometheus", _prometheus_command,
                            lambda s: f"http://127.0.0.1:{s.stack.prometheus_port}",
                            _serves(lambda s: s.stack.prometheus_port, "/-/ready", "Prometheus"),
                            lambda s: s.stack.prometheus_port),
    "alertmanager": Component("alertmanager", _alertmanager_command,
                              lambda s: f"http://127.0.0.1:{s.stack.alertmanager_port}",
                              _serves(lambda s: s.stack.alertmanager_port, "/-/ready", "OK"),
                              lambda s: s.stack.alertmanager_port),
    "exporter": Component("exporter", _cli("exporter"),
                          lambda s: f"http://{s.metrics.metrics_host}:{s.stack.exporter_port}/metrics",
                          _serves(lambda s: s.stack.exporter_port, "/metrics", "energy_kafka_up"),
                          lambda s: s.stack.exporter_port),
    "producer": Component("producer", _cli("produce"),
                          lambda s: f"-> {s.kafka.readings_topic}; metrics http://{s.metrics.metrics_host}:{s.simulator.producer_metrics_port}/metrics",
                          _metric_positive(lambda s: s.simulator.producer_metrics_port, "energy_readings_produced_total"),
                          lambda s: s.simulator.producer_metrics_port),
    "stream": Component("stream", _cli("stream"),
                        lambda s: f"{s.kafka.readings_topic} -> {s.kafka.alerts_topic}; metrics "
                                  f"http://{s.metrics.metrics_host}:{s.job.stream_metrics_port}/metrics; Spark UI http://127.0.0.1:{s.job.spark_ui_port}",
                        _metric_positive(lambda s: s.job.stream_metrics_port,
                                         "energy_stream_last_progress_timestamp_seconds"),
                        lambda s: s.job.stream_metrics_port, wait_s=240.0),
    "archiver": Component("archiver", _cli("archive"),
                          lambda s: f"{s.kafka.readings_topic}, {s.kafka.alerts_topic} -> {s.history.history_root}; metrics "
                                    f"http://{s.metrics.metrics_host}:{s.history.history_metrics_port}/metrics",
                          lambda s: not s.history.history_metrics_port or _serves(
                              lambda s: s.history.history_metrics_port, "/metrics", "energy_history_records_total")(s),
                          lambda s: s.history.history_metrics_port),
    "view": Component("view", _cli("view"), lambda s: f"http://127.0.0.1:{s.view.view_port}",
                      _serves(lambda s: s.view.view_port, "/_stcore/health", "ok"), lambda s: s.view.view_port),
}


def components(settings: Settings) -> dict[str, Component]:
    """Every component `up` starts, in order: the broker(s) first, the view last."""
    count = settings.stack.kafka_brokers
    kafka = (_kafka_component(i, count) for i in range(1, count + 1))
    return {**{c.name: c for c in kafka}, **_SERVICES}


def _paths(settings: Settings, name: str) -> tuple[PidFile, Path]:
    var = Path(settings.stack.var_dir)
    return PidFile(var / "run" / f"{name}.pid"), var / "log" / f"{name}.log"


def running_pid(settings: Settings, name: str) -> int | None:
    return _paths(settings, name)[0].running()


def _log_tail(log_file: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(settings: Settings, name: str) -> str:
    component = components(settings)[name]
    pid_file, log_file = _paths(settings, name)
    if pid_file.running():
        return "already running"
    port = component.port(settings) if component.port else 0
    if port and port_open("127.0.0.1", port):
        raise RuntimeError(f"{name}: port {port} is already in use {ports.describe(port, Path(settings.stack.var_dir))} "
                           f"(stop it, or set another port)")
    process = processes.spawn(component.command(settings), log_file, settings.stack.log_max_bytes, settings.stack.log_backups)
    pid_file.write(process.pid)
    deadline = time.monotonic() + component.wait_s
    while not component.ready(settings):
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}; the end of {log_file}:\n"
                               + _log_tail(log_file))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready after {component.wait_s:.0f}s; the end of {log_file}:\n"
                               + _log_tail(log_file))
        time.sleep(1.0)
    return "started"


def stop(settings: Settings, name: str) -> str:
    return processes.stop(_paths(settings, name)[0])


def status(settings: Settings) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, component in components(settings).items():
        pid_file, log_file = _paths(settings, name)
        rows.append((name, "running" if pid_file.running() else "stopped", component.address(settings), str(log_file)))
    return rows
