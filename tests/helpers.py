"""What the tests share besides fixtures: paths, waiting, publishing, reading, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.ops.broker import free_port
from pipeline.core.settings import Settings, with_values
from pipeline.core.kafka import ReadingProducer, ensure_topics, read_topic
from pipeline.ops.stack import components

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

__all__ = ["ROOT", "SHARED", "free_port", "wait_for", "isolated_stack", "settings_env", "run_cli", "up",
           "publish", "records", "run_job_once", "prom_query", "dashboard_queries"]


def wait_for(what: str, check, timeout_s: float, every_s: float = 3.0):
    """check() until it returns something truthy (returned), or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {outcome!r}")
        time.sleep(every_s)


def isolated_stack(tmp_path, **overrides) -> Settings:
    """Settings for a whole local stack of its own: every port free, every file under tmp_path."""
    var = tmp_path / "var"
    values = dict(
        bootstrap_servers=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
        var_dir=str(var), checkpoint_root=str(var / "checkpoints"), producer_metrics_port=free_port(),
        stream_metrics_port=free_port(), exporter_port=free_port(), prometheus_port=free_port(),
        alertmanager_port=free_port(), view_port=free_port(), spark_ui_port=free_port(),
        history_root=str(var / "history"), history_metrics_port=free_port())
    return with_values(with_values(None), **{**values, **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a CLI subprocess load exactly these settings."""
    env = {name: value for name, value in os.environ.items() if name not in ("SOURCE_TOPIC", "TOPIC")}
    env.update(settings.to_env())
    env["PYSPARK_PYTHON"] = sys.executable
    return env


def run_cli(settings: Settings, *args: str, timeout: float = 300, check: bool = True,
            extra_env: dict[str, str] | None = None):
    """`energy-monitor ARGS` in a subprocess with these settings (and `extra_env` over them)."""
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args],
                            env={**settings_env(settings), **(extra_env or {})},
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        errors = [ln for ln in result.stderr.splitlines()
                  if "error" in ln.lower() or "exception" in ln.lower() or "caused by" in ln.lower()]
        raise AssertionError(f"energy-monitor {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n" + "\n".join(errors[:40]))
    return result


def up(settings: Settings, *names: str):
    """`energy-monitor up NAMES` (every component when none is named), given longer than the CLI's own
    readiness waits added up: a slow start then fails with the CLI's message and the log's end, not with
    a bare subprocess timeout (a restarted stream job once took more than 120 s on a busy CI host)."""
    known = components(settings)
    return run_cli(settings, "up", *names, timeout=sum(known[n].wait_s for n in names or known) + 60)


def publish(settings: Settings, lines: list[bytes | str], timestamp_ms: int = 0) -> None:
    """Each line as one record keyed by its second field (record time `timestamp_ms`, or now)."""
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topics, **settings.kafka.topic_replication)
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.readings_topic)
    for line in lines:
        raw = line.encode() if isinstance(line, str) else line
        parts = raw.split(b",")
        producer.send(parts[1][:100] if len(parts) > 1 else None, raw, timestamp_ms)
    assert producer.flush(30) == 0
    assert producer.stats.failed == 0, producer.stats.last_error


def records(settings: Settings, topic: str) -> list:
    return [json.loads(m.value()) for m in read_topic(settings.kafka.bootstrap_servers, topic,
                                                      stop_at_end=True, idle_timeout_s=10)]


def run_job_once(spark, settings: Settings, on_batch=None, on_progress=None):
    """Run the stream job in this process until the available input is processed (its topics
    created first, as `energy-monitor stream` does); returns each batch's counts, which are also
    handed to `on_batch` as each batch is reported (and its progress report to `on_progress`)."""
    from pipeline.job.driver import start_query
    from pipeline.job.listener import batch_counts_router

    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topics, **settings.kafka.topic_replication)
    seen = []

    def observe(counts) -> None:
        seen.append(counts)
        if on_batch:
            on_batch(counts)

    query = start_query(spark, settings.job, once=True, on_batch=observe, on_progress=on_progress)
    query.awaitTermination()
    assert query.exception() is None, query.exception()
    batch_counts_router(spark).wait_reported(query.runId)
    return seen


def prom_query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """Every panel's query, with the dashboard variables at their 'All' value."""
    out = []
    for path in sorted((ROOT / "dashboards" / "json").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name in ("$topic", "$partition", "$mode"):
                    expr = expr.replace(name, ".*")
                out.append((path.name, panel["title"], expr))
    return out
