"""`energy-monitor up/down/status`: the local stack as background processes.

Each component runs detached in its own session, with its log in `VAR_DIR/log/<name>.log` and
its pid in `VAR_DIR/run/<name>.pid`. `up` is idempotent (a running component is left alone),
and `down` stops only what `up` started, found by those pid files.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import broker
from .broker import host_port, port_open
from .config import PROJECT_ROOT, Settings
from .kafka_io import ensure_topics

log = logging.getLogger(__name__)

STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class Component:
    name: str
    command: Callable[[Settings], list[str]]
    address: Callable[[Settings], str]
    ready: Callable[[Settings], bool] | None = None


def _kafka_command(settings: Settings) -> list[str]:
    host, port = host_port(settings.bootstrap_servers)
    return broker.prepare(Path(settings.var_dir) / "kafka", host, port, settings.kafka_controller_port)


def _kafka_ready(settings: Settings) -> bool:
    """Answering, with the pipeline's topics created (so the exporter sees them at once)."""
    if not broker.is_ready(settings.bootstrap_servers):
        return False
    ensure_topics(settings.bootstrap_servers, settings.topics)
    return True


MONITORING_DIR = PROJECT_ROOT / "monitoring"


def scrape_targets(settings: Settings) -> dict[str, str]:
    host = settings.metrics_host
    return {
        "energy-producer": f"{host}:{settings.producer_metrics_port}",
        "energy-stream": f"{host}:{settings.stream_metrics_port}",
        "energy-exporter": f"{host}:{settings.exporter_port}",
        "prometheus": f"127.0.0.1:{settings.prometheus_port}",
        "alertmanager": f"127.0.0.1:{settings.alertmanager_port}",
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
    folder = Path(settings.var_dir) / "prometheus"
    config = write_prometheus_config(settings, folder)
    return ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.prometheus_port}", "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=7d"]


def _alertmanager_command(settings: Settings) -> list[str]:
    folder = Path(settings.var_dir) / "alertmanager"
    folder.mkdir(parents=True, exist_ok=True)
    config = (MONITORING_DIR / "alertmanager.yml").read_text()
    if settings.alert_webhook_url:
        config = config.replace("http://127.0.0.1:9099/alerts", settings.alert_webhook_url)
    (folder / "alertmanager.yml").write_text(config)
    return ["prometheus-alertmanager", f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}",
            "--cluster.listen-address="]


def _http_ready(port_of: Callable[[Settings], int]) -> Callable[[Settings], bool]:
    return lambda settings: port_open("127.0.0.1", port_of(settings))


def _cli(*args: str) -> Callable[[Settings], list[str]]:
    return lambda _settings: [sys.executable, "-m", "pipeline.cli", *args]


COMPONENTS = {
    "kafka": Component("kafka", _kafka_command, lambda s: s.bootstrap_servers, _kafka_ready),
    "prometheus": Component("prometheus", _prometheus_command,
                            lambda s: f"http://127.0.0.1:{s.prometheus_port}",
                            _http_ready(lambda s: s.prometheus_port)),
    "alertmanager": Component("alertmanager", _alertmanager_command,
                              lambda s: f"http://127.0.0.1:{s.alertmanager_port}",
                              _http_ready(lambda s: s.alertmanager_port)),
    "exporter": Component("exporter", _cli("exporter"),
                          lambda s: f"http://{s.metrics_host}:{s.exporter_port}/metrics",
                          _http_ready(lambda s: s.exporter_port)),
    "producer": Component("producer", _cli("produce"),
                          lambda s: f"-> {s.readings_topic}; metrics http://{s.metrics_host}:{s.producer_metrics_port}/metrics"),
    "stream": Component("stream", _cli("stream"),
                        lambda s: f"{s.readings_topic} -> {s.alerts_topic}; metrics "
                                  f"http://{s.metrics_host}:{s.stream_metrics_port}/metrics; Spark UI http://127.0.0.1:4040"),
    "view": Component("view", _cli("view"), lambda s: f"http://127.0.0.1:{s.view_port}"),
}


def _paths(settings: Settings, name: str) -> tuple[Path, Path]:
    var = Path(settings.var_dir)
    return var / "run" / f"{name}.pid", var / "log" / f"{name}.log"


def running_pid(settings: Settings, name: str) -> int | None:
    pid_file, _ = _paths(settings, name)
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def start(settings: Settings, name: str, wait_s: float = 90.0) -> str:
    component = COMPONENTS[name]
    pid_file, log_file = _paths(settings, name)
    if running_pid(settings, name):
        return "already running"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        process = subprocess.Popen(component.command(settings), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(process.pid))
    if component.ready is None:
        return "started"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}; see {log_file}")
        if component.ready(settings):
            return "started"
        time.sleep(1.0)
    raise RuntimeError(f"{name} not ready after {wait_s:.0f}s; see {log_file}")


def stop(settings: Settings, name: str) -> str:
    pid = running_pid(settings, name)
    pid_file, _ = _paths(settings, name)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return "not running"
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and running_pid(settings, name):
        time.sleep(0.3)
    if running_pid(settings, name):
        os.killpg(pid, signal.SIGKILL)
        outcome = "killed after grace period"
    else:
        outcome = "stopped"
    pid_file.unlink(missing_ok=True)
    return outcome


def status(settings: Settings) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, component in COMPONENTS.items():
        _, log_file = _paths(settings, name)
        state = "running" if running_pid(settings, name) else "stopped"
        rows.append((name, state, component.address(settings), str(log_file)))
    return rows
