"""Settings: read from the environment once, at an entry point, into one frozen object.

Every variable here has its default in `.env.example`; the README's configuration table
lists them all. Components take plain values from `Settings`, never `os.environ`.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MODES = {
    "demo": {"window": "1 minute", "slide": "15 seconds", "threshold": 0.05},
    "prod": {"window": "15 minutes", "slide": "15 seconds", "threshold": 2.0},
}

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
}
_DURATION = re.compile(r"^\s*(\d+)\s*([a-z]+)\s*$")


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot run with; the message names it."""


def parse_duration(text: str, name: str = "duration") -> int:
    """'15 seconds', '1 minute', '10m' -> whole seconds."""
    match = _DURATION.match(text.lower())
    if not match or match.group(2) not in _UNITS:
        raise ConfigError(f"{name}: cannot read {text!r} as a duration (e.g. '15 seconds', '1 minute')")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{name}: must be positive, got {text!r}")
    return seconds


def human_duration(seconds: int) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


@dataclass(frozen=True)
class Rule:
    """The alert rule: sum of kWh per household over sliding event-time windows."""

    mode: str
    window_s: int
    slide_s: int
    threshold_kwh: float
    watermark_s: int

    @property
    def panes_per_window(self) -> int:
        return self.window_s // self.slide_s

    @property
    def description(self) -> str:
        return f"kwh>{self.threshold_kwh!r} over {human_duration(self.window_s)}"

    @property
    def key(self) -> str:
        """What identifies the rule in alert ids: the mode name is only a label for it."""
        return f"w{self.window_s}-s{self.slide_s}-t{self.threshold_kwh:g}"


def make_rule(mode: str, window: str | None = None, slide: str | None = None,
              threshold: str | float | None = None, watermark: str = "10 minutes") -> Rule:
    if mode not in MODES:
        raise ConfigError(f"RUN_MODE: must be one of {', '.join(MODES)}, got {mode!r}")
    base = MODES[mode]
    window_s = parse_duration(window or base["window"], "WINDOW_DURATION")
    slide_s = parse_duration(slide or base["slide"], "SLIDE_DURATION")
    try:
        threshold_kwh = float(base["threshold"] if threshold in (None, "") else threshold)
    except ValueError:
        raise ConfigError(f"THRESHOLD_KWH: not a number: {threshold!r}") from None
    if not threshold_kwh >= 0 or threshold_kwh == float("inf"):
        raise ConfigError(f"THRESHOLD_KWH: must be a finite number >= 0, got {threshold!r}")
    if slide_s > window_s or window_s % slide_s:
        raise ConfigError(
            f"SLIDE_DURATION ({slide_s}s) must divide WINDOW_DURATION ({window_s}s): "
            "windows are built from slide-sized panes")
    return Rule(mode, window_s, slide_s, threshold_kwh,
                parse_duration(watermark, "WATERMARK_DELAY"))


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    readings_topic: str = "energy_readings"
    alerts_topic: str = "energy_alerts"
    dlq_topic: str = "energy_readings_dlq"
    readings_partitions: int = 4
    run_mode: str = "demo"
    window_duration: str = ""
    slide_duration: str = ""
    threshold_kwh: str = ""
    watermark_delay: str = "10 minutes"
    max_reading_kwh: float = 10.0
    checkpoint_root: str = str(PROJECT_ROOT / "var" / "checkpoints")
    var_dir: str = str(PROJECT_ROOT / "var")
    spark_master: str = "local[2]"
    spark_driver_host: str = "127.0.0.1"
    spark_bind_address: str = "127.0.0.1"
    shuffle_partitions: int = 4
    state_buckets: int = 64
    trigger_interval: str = "1 second"
    max_offsets_per_trigger: int = 0
    households: int = 50
    tick_seconds: int = 15
    speedup: float = 30.0
    jitter_pct: float = 10.0
    sim_seed: int = 42
    kafka_controller_port: int = 9094
    metrics_host: str = "127.0.0.1"
    producer_metrics_port: int = 9101
    stream_metrics_port: int = 9102
    exporter_port: int = 9103
    view_host: str = "127.0.0.1"
    view_port: int = 8501
    view_group: str = "energy-alert-view"
    view_refresh_seconds: float = 2.0
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    alert_webhook_url: str = ""
    log_level: str = "INFO"

    @property
    def rule(self) -> Rule:
        return make_rule(self.run_mode, self.window_duration, self.slide_duration,
                         self.threshold_kwh, self.watermark_delay)

    def checkpoint_dir(self) -> Path:
        """A checkpoint per everything that shapes the job's state, so a mode or rule switch
        starts a fresh state of its own and switching back resumes the old one."""
        rule = self.rule
        shape = "|".join(str(v) for v in (
            rule.window_s, rule.slide_s, rule.threshold_kwh, rule.watermark_s, self.max_reading_kwh,
            self.state_buckets, self.shuffle_partitions, self.readings_topic, self.alerts_topic,
            self.dlq_topic))
        digest = hashlib.sha256(shape.encode()).hexdigest()[:10]
        name = f"{rule.mode}-{rule.key}-wm{rule.watermark_s}-{digest}"
        return Path(self.checkpoint_root) / name


# Environment variable -> field; aliases from the original design come after the main name.
_ENV = {
    "bootstrap_servers": ("BOOTSTRAP_SERVERS",),
    "readings_topic": ("READINGS_TOPIC", "SOURCE_TOPIC", "TOPIC"),
    "alerts_topic": ("ALERTS_TOPIC",),
    "dlq_topic": ("DLQ_TOPIC",),
    "readings_partitions": ("READINGS_PARTITIONS",),
    "run_mode": ("RUN_MODE",),
    "window_duration": ("WINDOW_DURATION",),
    "slide_duration": ("SLIDE_DURATION",),
    "threshold_kwh": ("THRESHOLD_KWH",),
    "watermark_delay": ("WATERMARK_DELAY",),
    "max_reading_kwh": ("MAX_READING_KWH",),
    "checkpoint_root": ("CHECKPOINT_ROOT",),
    "var_dir": ("VAR_DIR",),
    "spark_master": ("SPARK_MASTER",),
    "spark_driver_host": ("SPARK_DRIVER_HOST",),
    "spark_bind_address": ("SPARK_BIND_ADDRESS",),
    "shuffle_partitions": ("SHUFFLE_PARTITIONS",),
    "state_buckets": ("STATE_BUCKETS",),
    "trigger_interval": ("TRIGGER_INTERVAL",),
    "max_offsets_per_trigger": ("MAX_OFFSETS_PER_TRIGGER",),
    "households": ("HOUSEHOLDS",),
    "tick_seconds": ("TICK_SECONDS",),
    "speedup": ("SPEEDUP",),
    "jitter_pct": ("JITTER_PCT",),
    "sim_seed": ("SIM_SEED",),
    "kafka_controller_port": ("KAFKA_CONTROLLER_PORT",),
    "metrics_host": ("METRICS_HOST",),
    "producer_metrics_port": ("PRODUCER_METRICS_PORT",),
    "stream_metrics_port": ("STREAM_METRICS_PORT",),
    "exporter_port": ("EXPORTER_PORT",),
    "view_host": ("VIEW_HOST",),
    "view_port": ("VIEW_PORT",),
    "view_group": ("VIEW_GROUP",),
    "view_refresh_seconds": ("VIEW_REFRESH_SECONDS",),
    "prometheus_port": ("PROMETHEUS_PORT",),
    "alertmanager_port": ("ALERTMANAGER_PORT",),
    "alert_webhook_url": ("ALERT_WEBHOOK_URL",),
    "log_level": ("LOG_LEVEL",),
}


def _convert(name: str, kind: type, raw: str):
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{_ENV[name][0]}: expected {kind.__name__}, got {raw!r}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment and check that they form a runnable rule."""
    env = os.environ if env is None else env
    values = {}
    for field in fields(Settings):
        for var in _ENV[field.name]:
            if var in env and env[var] != "":
                kind = type(field.default)
                values[field.name] = _convert(field.name, kind, env[var])
                break
    for name in ("checkpoint_root", "var_dir"):
        if name in values and not Path(values[name]).is_absolute():
            values[name] = str(PROJECT_ROOT / values[name])
    settings = Settings(**values)
    make_rule(settings.run_mode, settings.window_duration, settings.slide_duration,
              settings.threshold_kwh, settings.watermark_delay)
    parse_duration(settings.trigger_interval, "TRIGGER_INTERVAL")
    for name in ("readings_partitions", "shuffle_partitions", "state_buckets", "households", "tick_seconds"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{_ENV[name][0]}: must be positive, got {getattr(settings, name)}")
    if settings.speedup <= 0 or not 0 <= settings.jitter_pct < 100:
        raise ConfigError("SPEEDUP must be > 0 and JITTER_PCT in [0, 100)")
    return settings
