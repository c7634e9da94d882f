"""`energy-monitor up/status/down`: the local stack as `make up` starts it, on its own ports."""
from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from pipeline.core.settings import with_values

from helpers import free_port, isolated_stack, run_cli, up
from pipeline.core.kafka import read_topic
from pipeline.ops.stack import components

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def test_up_gives_demo_alerts_and_down_stops_everything(tmp_path):
    settings = isolated_stack(tmp_path)
    started = time.monotonic()
    names = list(components(settings))
    out = up(settings).stdout
    try:
        for component in names:
            assert re.search(rf"^{component} +started", out, re.M), out
        alert = None
        # A bound for a hung job, not a latency claim: in one CI run (three test workers on a
        # slower host) the query started 67 s after `up` and its first batch took 42 s more.
        while alert is None and time.monotonic() - started < 300:
            alert = next(iter(read_topic(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic,
                                         idle_timeout_s=2)), None)
        assert alert is not None, (tmp_path / "var" / "log" / "stream.log").read_text()[-3000:]
        assert b'"mode":"demo"' in alert.value()

        status = run_cli(settings, "status").stdout
        assert status.count(" running ") == len(names)
        assert up(settings).stdout.count("already running") == len(names)
        assert "rdkafka" not in out and "Connection refused" not in out
    finally:
        down = run_cli(settings, "down", timeout=400).stdout
    assert re.search(r"^stream +stopped$", down, re.M) and re.search(r"^producer +stopped$", down, re.M), down
    assert list((tmp_path / "var" / "run").glob("*.pid")) == []
    # The job ended through query.stop(), not by a signal to its JVM.
    stream_log = (tmp_path / "var" / "log" / "stream.log").read_text()
    assert "stopping the query (query.stop())" in stream_log and "query stopped" in stream_log
    assert "rdkafka" not in out + down
    status = run_cli(settings, "status").stdout
    assert status.count(" stopped ") == len(names)
    assert (tmp_path / "var" / "kafka" / "logs" / "meta.properties").exists()
    assert all((tmp_path / "var" / "log" / f"{c}.log").stat().st_size > 0 for c in names)


def test_cli_errors_are_one_line(make_settings, tmp_path):
    dead = with_values(make_settings(), bootstrap_servers=f"127.0.0.1:{free_port()}")
    result = run_cli(dead, "alerts", "--timeout", "1", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("energy-monitor: error: cannot reach Kafka")
    missing = run_cli(dead, "replay", str(tmp_path / "nope.csv"), check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    bad_mode = run_cli(dead, "status", check=False, extra_env={"RUN_MODE": "fast"})
    assert bad_mode.returncode == 2 and "RUN_MODE" in bad_mode.stderr
    assert "Traceback" not in result.stderr + missing.stderr + bad_mode.stderr


def test_restarted_simulator_continues_its_clock(make_settings):
    settings = make_settings(households=5)
    run_cli(settings, "produce", "--count", "50", "--no-pacing")  # 10 ticks, 150 s ahead of now
    first = Counter(m.value() for m in read_topic(settings.kafka.bootstrap_servers, settings.kafka.readings_topic,
                                                  stop_at_end=True))
    run_cli(settings, "produce", "--count", "5", "--no-pacing")
    every = Counter(m.value() for m in read_topic(settings.kafka.bootstrap_servers, settings.kafka.readings_topic,
                                                  stop_at_end=True))
    second = every - first
    assert sum(first.values()) == 50 and sum(second.values()) == 5
    assert min(v.split(b",")[0] for v in second) > max(v.split(b",")[0] for v in first)
