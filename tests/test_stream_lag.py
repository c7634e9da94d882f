"""energy_stream_lag_seconds per partition, served by the real exporter from the real job's
checkpoint: it falls back to 0 once the job catches up, and grows while the job is stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import publish, settings_env, wait_for
from pipeline.ingest.simulator import Simulator

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(metric, partition) -> value, for the stream-lag series of the exporter."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("energy_stream_lag_seconds{", "energy_stream_partition_offsets_behind{")):
            name, rest = line.split("{", 1)
            partition = rest.split('partition="', 1)[1].split('"', 1)[0]
            out[(name, partition)] = float(line.rsplit(" ", 1)[1])
    return out


def values(sample: dict, metric: str) -> list[float]:
    return [v for (name, _), v in sample.items() if name == metric]


def start(settings, command: str, log_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", command], env=settings_env(settings),
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def test_lag_falls_to_zero_after_catching_up_and_grows_while_the_job_is_stopped(make_settings, tmp_path):
    settings = make_settings(run_mode="demo", max_offsets_per_trigger=200, trigger_interval="1 second")
    lines = [line for _, line in Simulator(40, 15, 10.0, 5, 1_783_000_800).lines(150)]  # 6,000 readings
    publish(settings, lines)
    exporter = start(settings, "exporter", tmp_path / "exporter.log")
    job = start(settings, "stream", tmp_path / "stream.log")
    try:
        behind = wait_for("the job to report lag while it works through the backlog", lambda: (
            s := scrape(settings.stack.exporter_port)) and max(values(s, "energy_stream_partition_offsets_behind")) > 0
            and s, 180, 0.5)
        assert max(values(behind, "energy_stream_lag_seconds")) > 0
        assert len(values(behind, "energy_stream_lag_seconds")) == settings.kafka.readings_partitions

        caught_up = wait_for("the lag to fall back to 0", lambda: (s := scrape(settings.stack.exporter_port)) and
                             max(values(s, "energy_stream_partition_offsets_behind")) == 0 and s, 240, 1)
        assert values(caught_up, "energy_stream_lag_seconds") == [0.0] * settings.kafka.readings_partitions

        os.killpg(job.pid, signal.SIGTERM)
        job.wait(120)
        publish(settings, lines[:200])
        first = wait_for("lag once the job is stopped", lambda: (s := scrape(settings.stack.exporter_port)) and
                         max(values(s, "energy_stream_lag_seconds")) > 0 and s, 30, 0.5)
        time.sleep(3)
        later = scrape(settings.stack.exporter_port)
        assert max(values(later, "energy_stream_lag_seconds")) >= max(values(first, "energy_stream_lag_seconds")) + 2
        assert max(values(later, "energy_stream_partition_offsets_behind")) > 0
    finally:
        for process in (job, exporter):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
