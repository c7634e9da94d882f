from __future__ import annotations

import re

import pytest

from pipeline.core.settings import ConfigError, load_settings, parse_duration, with_values
from pipeline.core.checkpoint import checkpoint_dir, other_checkpoints


def test_modes_and_overrides():
    demo = load_settings({}).rule
    assert (demo.window_s, demo.slide_s, demo.threshold, demo.watermark_s) == (60, 15, 0.05, 600)
    assert demo.description == "kwh>0.05 over 1 minute"
    prod = load_settings({"RUN_MODE": "prod"}).rule
    assert (prod.window_s, prod.slide_s, prod.threshold) == (900, 15, 2.0)
    assert prod.description == "kwh>2.0 over 15 minutes"
    custom = load_settings({"RUN_MODE": "prod", "THRESHOLD_KWH": "1.5", "WINDOW_DURATION": "30 minutes",
                            "WATERMARK_DELAY": "5m"}).rule
    assert (custom.window_s, custom.threshold, custom.watermark_s) == (1800, 1.5, 300)


def test_source_topic_alias():
    assert load_settings({"SOURCE_TOPIC": "x"}).kafka.readings_topic == "x"
    assert load_settings({"READINGS_TOPIC": "a", "SOURCE_TOPIC": "x"}).kafka.readings_topic == "a"


@pytest.mark.parametrize("env,names", [
    ({"RUN_MODE": "fast"}, "RUN_MODE"),
    ({"WINDOW_DURATION": "1 minute", "SLIDE_DURATION": "25 seconds"}, "SLIDE_DURATION"),
    ({"THRESHOLD_KWH": "lots"}, "THRESHOLD_KWH"),
    ({"THRESHOLD_KWH": "nan"}, "THRESHOLD_KWH"),
    ({"HOUSEHOLDS": "many"}, "HOUSEHOLDS"),
    ({"HOUSEHOLDS": "0"}, "HOUSEHOLDS"),
    ({"WATERMARK_DELAY": "ten minutes"}, "WATERMARK_DELAY"),
    ({"REPLICATION_FACTOR": "2", "MIN_INSYNC_REPLICAS": "3"}, "MIN_INSYNC_REPLICAS"),
    ({"KAFKA_BROKERS": "3"}, "KAFKA_BROKERS"),
    ({"KAFKA_BROKERS": "0"}, "KAFKA_BROKERS"),
    ({"BOOTSTRAP_SERVERS": "kafka-1,kafka-2:9092"}, "BOOTSTRAP_SERVERS"),
    ({"ALERTS_PARTITIONS": "0"}, "ALERTS_PARTITIONS"),
    ({"BASELINE": "maybe"}, "BASELINE"),
    ({"BASELINE_ALPHA": "0"}, "BASELINE_ALPHA"),
    ({"BASELINE_EXCESS_KWH": "0"}, "BASELINE_EXCESS_KWH"),
    ({"BASELINE_PERSIST_KWH": "-1"}, "BASELINE_PERSIST_KWH"),
    ({"BASELINE_QUANTILE": "0.5"}, "BASELINE_QUANTILE"),
    ({"BASELINE_RUN": "0"}, "BASELINE_RUN"),
    ({"BASELINE_FAST_RUN": "-1"}, "BASELINE_FAST_RUN"),
    ({"BASELINE_FAST_KWH": "lots"}, "BASELINE_FAST_KWH"),
    ({"BASELINE_FAST_SCALE": "-2"}, "BASELINE_FAST_SCALE"),
    ({"BASELINE_SLOTS": "1.5"}, "BASELINE_SLOTS"),
    ({"BASELINE_SLOT": "soon"}, "BASELINE_SLOT"),
    ({"BASELINE_WARMUP": "0"}, "BASELINE_WARMUP"),
])
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(ConfigError, match=names):
        load_settings(env)


def test_checkpoint_follows_everything_that_shapes_state():
    demo = load_settings({"RUN_MODE": "demo"})
    assert checkpoint_dir(demo.job) == checkpoint_dir(load_settings({"RUN_MODE": "demo"}).job)
    others = [checkpoint_dir(load_settings(env).job) for env in (
        {"RUN_MODE": "prod"}, {"WATERMARK_DELAY": "5 minutes"}, {"BASELINE_ALPHA": "0.2"}, {"BASELINE_QUANTILE": "0.9"},
        {"BASELINE_SLOT": "1 hour"}, {"BASELINE": "off"},
        {"STATE_BUCKETS": "32"}, {"READINGS_TOPIC": "other"}, {"ALERTS_TOPIC": "other"},
        {"STATE_OPERATOR": "python"})]
    assert len({checkpoint_dir(demo.job), *others}) == 11


def test_the_checkpoints_of_other_layouts_are_found_beside_a_new_one(tmp_path):
    python = checkpoint_dir(load_settings({"RUN_MODE": "prod", "CHECKPOINT_ROOT": str(tmp_path),
                                           "STATE_OPERATOR": "python"}).job)
    jvm = checkpoint_dir(load_settings({"RUN_MODE": "prod", "CHECKPOINT_ROOT": str(tmp_path)}).job)
    demo = checkpoint_dir(load_settings({"RUN_MODE": "demo", "CHECKPOINT_ROOT": str(tmp_path)}).job)
    assert other_checkpoints(jvm) == []
    python.mkdir()
    demo.mkdir()
    assert other_checkpoints(jvm) == [python.name]


@pytest.mark.parametrize("name,value", [("THRESHOLD_KWH", "0.06"), ("BASELINE_EXCESS_KWH", "0.2"),
                                        ("BASELINE_WARMUP", "3"), ("BASELINE_PERSIST_KWH", "0.5"), ("BASELINE_RUN", "2"),
                                        ("BASELINE_FAST_RUN", "0"), ("BASELINE_FAST_KWH", "0.6"),
                                        ("BASELINE_FAST_SCALE", "2")])
def test_a_scoring_parameter_keeps_the_checkpoint_and_what_it_learned(name, value):
    changed = load_settings({name: value})
    assert checkpoint_dir(changed.job) == checkpoint_dir(load_settings({}).job)
    assert (changed.rule.key, changed.baseline.key) != (with_values(None).rule.key, with_values(None).baseline.key)


def test_baseline_parameters_follow_the_mode():
    demo, prod = load_settings({"RUN_MODE": "demo"}).baseline, load_settings({"RUN_MODE": "prod"}).baseline
    assert (demo.slot_s, demo.slots, demo.excess_kwh, demo.persist_kwh) == (600, 1, 0.01, 0.02)
    assert (prod.slot_s, prod.slots, prod.excess_kwh, prod.persist_kwh) == (3600, 24, 0.12, 0.3)
    assert (prod.quantile, prod.alpha, prod.run, prod.warmup, prod.forget_after_s) == (0.95, 0.1, 3, 8, 35 * 86400)
    assert (demo.fast_kwh, prod.fast_kwh, prod.fast_run, prod.fast_scale) == (0.03, 0.4, 2, 4.0)
    assert prod.description == ("kwh>usual+0.12 for 3 windows of 15 minutes, excess>0.3, or for 2, "
                                "excess>0.4+4*usual (slot: hour of day)")
    assert load_settings({"RUN_MODE": "prod", "BASELINE_FAST_RUN": "0"}).baseline.description == (
        "kwh>usual+0.12 for 3 windows of 15 minutes, excess>0.3 (slot: hour of day)")
    assert load_settings({"BASELINE": "off"}).baseline is None and load_settings({"BASELINE": "off"}).job.baseline is None


def test_replication_is_derived_from_the_cluster_unless_set():
    from pipeline.core.kafka import replication_for

    assert replication_for(1) == (1, 1)
    assert replication_for(2) == (2, 1)
    assert replication_for(3) == (3, 2)
    assert replication_for(5) == (3, 2)
    assert replication_for(5, replication_factor=5) == (5, 4)
    assert replication_for(3, 3, 3) == (3, 3)
    settings = load_settings({"REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2", "ALERTS_PARTITIONS": "3",
                              "KAFKA_BROKERS": "3", "BOOTSTRAP_SERVERS": "a:1,b:2,c:3"})
    assert settings.kafka.topic_replication == {"replication_factor": 3, "min_insync_replicas": 2}
    assert settings.kafka.topics[settings.kafka.alerts_topic] == 3 and settings.kafka.bootstrap_list == ["a:1", "b:2", "c:3"]


def test_a_checkpoint_root_uri_stays_a_uri():
    checkpoint = checkpoint_dir(load_settings({"CHECKPOINT_ROOT": "s3a://bucket/checkpoints/"}).job)
    assert isinstance(checkpoint, str) and checkpoint.startswith("s3a://bucket/checkpoints/demo-")


def test_relative_paths_are_from_the_repository(tmp_path):
    settings = load_settings({"CHECKPOINT_ROOT": "var/x", "VAR_DIR": str(tmp_path)})
    assert settings.job.checkpoint_root.endswith("/var/x") and settings.job.checkpoint_root.startswith("/")
    assert settings.stack.var_dir == str(tmp_path)


def test_parse_duration():
    assert [parse_duration(t) for t in ("15 seconds", "1 minute", "10m", "2 hours", "1s")] == [15, 60, 600, 7200, 1]


def test_env_example_and_the_configuration_page_list_every_variable_with_its_default():
    from pipeline.core.settings import PROJECT_ROOT, env_names

    env = {}
    for line in (PROJECT_ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    readme = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    for name in env_names():
        assert name in env, f"{name} missing from .env.example"
        assert f"| `{name}` |" in readme, f"{name} missing from docs/configuration.md's table"
    # The page's default of each variable is the one .env.example sets (none: the mode's).
    for row in re.finditer(r"^\| `([A-Z_0-9]+)` \| ([^|]*) \|", readme, flags=re.M):
        name, default = row.group(1), re.fullmatch(r"`([^`]*)`", row.group(2).strip())
        assert env[name] == (default.group(1) if default else ""), name
    assert load_settings(env) == with_values(None)


@pytest.mark.parametrize("env,name", [
    ({"MAX_READING_KWH": "inf"}, "MAX_READING_KWH"),
    ({"MAX_READING_KWH": "nan"}, "MAX_READING_KWH"),
    ({"MAX_READING_KWH": "1e12"}, "MAX_READING_KWH"),
    ({"MAX_READING_KWH": "0"}, "MAX_READING_KWH"),
    ({"SPEEDUP": "nan"}, "SPEEDUP"),
    ({"SPEEDUP": "-1"}, "SPEEDUP"),
    ({"JITTER_PCT": "inf"}, "JITTER_PCT"),
    ({"THRESHOLD_KWH": "inf"}, "THRESHOLD_KWH"),
    ({"MAX_LINE_BYTES": "0"}, "MAX_LINE_BYTES"),
    ({"MAX_LINE_BYTES": "2000000"}, "MAX_LINE_BYTES"),
    ({"MAX_FUTURE_SKEW": "soon"}, "MAX_FUTURE_SKEW"),
    ({"STARTING_OFFSETS": "yesterday"}, "STARTING_OFFSETS"),
    ({"MAX_OFFSETS_PER_TRIGGER": "0"}, "MAX_OFFSETS_PER_TRIGGER"),
    ({"MAX_OFFSETS_PER_TRIGGER": "1000001"}, "MAX_OFFSETS_PER_TRIGGER"),
    ({"VIEW_PORT": "70000"}, "VIEW_PORT"),
    ({"TRIGGER_INTERVAL": "fast"}, "TRIGGER_INTERVAL"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"ALERT_WEBHOOK_URL": "ftp://hooks.example/x"}, "ALERT_WEBHOOK_URL"),
    ({"WATCHDOG_WEBHOOK_URL": "http://hooks.example/a b"}, "WATCHDOG_WEBHOOK_URL"),
])
def test_bad_setting_gives_one_line_error_naming_it_and_a_nonzero_exit(env, name):
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_settings_built_directly_are_validated_too():
    from pipeline.core.settings import ReadingsSettings, Rule

    with pytest.raises(ConfigError, match="MAX_READING_KWH"):
        ReadingsSettings(max_reading_kwh=float("inf"))
    with pytest.raises(ConfigError, match="RUN_MODE"):
        Rule(run_mode="fast")
    with pytest.raises(ConfigError, match="RUN_MODE"):
        with_values(None, run_mode="fast")
    assert with_values(with_values(None), run_mode="prod").rule.window_s == 900


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("RUN_MODE=prod\nHOUSEHOLDS=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOUSEHOLDS", "9")
    monkeypatch.delenv("RUN_MODE", raising=False)
    settings = load_settings()
    assert settings.rule.run_mode == "prod" and settings.simulator.households == 9
