"""Settings: read from the environment once, at an entry point, into one frozen object.

`load_settings()` reads the process environment over the `.env` file of the working directory.
Every field's variable is its name in capitals (`run_mode` -> `RUN_MODE`), plus the aliases of
the original design in `ALIASES`. A `Settings` validates itself when it is built, however it
is built, and holds what the components need already parsed: the alert `rule`, the trigger
interval in seconds and the topic layout. Every variable has its default in `.env.example`.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MODES = {
    "demo": {"window": "1 minute", "slide": "15 seconds", "threshold": 0.05,
             "baseline_slot": "10 minutes", "baseline_slots": 1, "baseline_min_kwh": 0.01,
             "baseline_min_sigma_kwh": 0.002},
    "prod": {"window": "15 minutes", "slide": "15 seconds", "threshold": 2.0,
             "baseline_slot": "1 hour", "baseline_slots": 24, "baseline_min_kwh": 0.5,
             "baseline_min_sigma_kwh": 0.05},
}
STARTING_OFFSETS = ("recent", "earliest", "latest")
ALIASES = {"readings_topic": ("SOURCE_TOPIC", "TOPIC")}
KWH_UNITS = 1_000_000_000  # energy is summed as integer nano-kWh: exact and order-independent
# The layout of the job's state: panes.py's and baseline.py's encodings and stream.bucket_keys'
# keys. Part of the checkpoint's name, so a new layout starts a checkpoint of its own instead of
# misreading an old one.
STATE_FORMAT = 8
# 1000 kWh per reading keeps a window's nano-kWh sum inside 64 bits for up to 9.2 million
# maximal readings of one household in one window.
MAX_READING_KWH_LIMIT = 1000.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([a-z]+)\s*$")


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot run with; the message names it."""


def env_name(field_name: str) -> str:
    return field_name.upper()


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
    def threshold_units(self) -> int:
        return int(round(self.threshold_kwh * KWH_UNITS))

    @property
    def description(self) -> str:
        return f"kwh>{self.threshold_kwh!r} over {human_duration(self.window_s)}"

    @property
    def key(self) -> str:
        """What identifies the rule in alert ids: the mode name is only a label for it."""
        return f"w{self.window_s}-s{self.slide_s}-t{self.threshold_kwh:g}"


@dataclass(frozen=True)
class BaselineRule:
    """The per-household baseline rule (docs/contract.md, "Baseline rule"): an EWMA mean and
    variance per household and slot, learned from tumbling windows of the fixed rule's length."""

    window_s: int
    slide_s: int
    watermark_s: int
    slot_s: int
    slots: int
    alpha: float
    k: float
    warmup: int
    min_kwh: float
    min_sigma_kwh: float
    forget_after_s: int

    @property
    def slot_name(self) -> str:
        if self.slot_s == 3600 and self.slots == 24:
            return "hour of day"
        if self.slots == 1:
            return "one for all times"
        return f"{human_duration(self.slot_s)} of {human_duration(self.slot_s * self.slots)}"

    @property
    def description(self) -> str:
        return f"kwh>baseline+{self.k:g}\u03c3 over {human_duration(self.window_s)} (slot: {self.slot_name})"

    @property
    def key(self) -> str:
        """What identifies the rule in alert ids."""
        return (f"baseline-w{self.window_s}-s{self.slide_s}-slot{self.slot_s}x{self.slots}-a{self.alpha:g}"
                f"-k{self.k:g}-n{self.warmup}-m{self.min_kwh:g}-sd{self.min_sigma_kwh:g}")

    @property
    def learning_shape(self) -> tuple:
        """What the learned state depends on; the scoring parameters (k, warm-up, floors) are not
        in it, so changing them keeps what was learned."""
        return (self.window_s, self.slot_s, self.slots, self.alpha)


def make_baseline(mode: str, rule: "Rule", slot: str = "", slots: str = "", alpha: float = 0.1,
                  k: float = 3.0, warmup: int = 8, min_kwh: str = "", min_sigma: str = "",
                  forget_after: str = "35 days") -> BaselineRule:
    base = MODES[mode]
    slot_s = parse_duration(slot or base["baseline_slot"], "BASELINE_SLOT")
    slot_count = int(_number("BASELINE_SLOTS", base["baseline_slots"] if slots in (None, "") else slots, 1, 10_000))
    if slot_count != float(slots or slot_count):
        raise ConfigError(f"BASELINE_SLOTS: must be a whole number, got {slots!r}")
    return BaselineRule(
        rule.window_s, rule.slide_s, rule.watermark_s, slot_s, slot_count,
        _number("BASELINE_ALPHA", alpha, 0.0, 1.0, low_inclusive=False),
        _number("BASELINE_K", k, 0.0, 1000.0),
        int(_number("BASELINE_WARMUP", warmup, 1, 65_535)),
        _number("BASELINE_MIN_KWH", base["baseline_min_kwh"] if min_kwh in (None, "") else min_kwh, 0.0,
                MAX_READING_KWH_LIMIT * 1e6),
        _number("BASELINE_MIN_SIGMA_KWH", base["baseline_min_sigma_kwh"] if min_sigma in (None, "") else min_sigma,
                0.0, MAX_READING_KWH_LIMIT * 1e6),
        parse_duration(forget_after, "BASELINE_FORGET_AFTER"))


def make_rule(mode: str, window: str = "", slide: str = "", threshold: str = "",
              watermark: str = "10 minutes") -> Rule:
    if mode not in MODES:
        raise ConfigError(f"RUN_MODE: must be one of {', '.join(MODES)}, got {mode!r}")
    base = MODES[mode]
    window_s = parse_duration(window or base["window"], "WINDOW_DURATION")
    slide_s = parse_duration(slide or base["slide"], "SLIDE_DURATION")
    threshold_kwh = _number("THRESHOLD_KWH", base["threshold"] if threshold in (None, "") else threshold,
                            0.0, MAX_READING_KWH_LIMIT * 1e6)
    if slide_s > window_s or window_s % slide_s:
        raise ConfigError(
            f"SLIDE_DURATION ({slide_s}s) must divide WINDOW_DURATION ({window_s}s): "
            "windows are built from slide-sized panes")
    return Rule(mode, window_s, slide_s, threshold_kwh, parse_duration(watermark, "WATERMARK_DELAY"))


def _number(name: str, value, low: float, high: float, low_inclusive: bool = True) -> float:
    """A finite number in [low, high] (or (low, high]); the error names the variable."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: not a number: {value!r}") from None
    above_low = number >= low if low_inclusive else number > low
    if not (math.isfinite(number) and above_low and number <= high):
        bracket = "[" if low_inclusive else "("
        raise ConfigError(f"{name}: must be a finite number in {bracket}{low:g}, {high:g}], got {value!r}")
    return number


def _integer(default: int, low: int, high: int):
    """An integer setting that must lie in [low, high] (checked when Settings is built)."""
    return field(default=default, metadata={"integer": (low, high)})


def _real(default: float, low: float, high: float, low_inclusive: bool = True):
    """A number setting that must lie in [low, high] (or (low, high]), as _number checks it."""
    return field(default=default, metadata={"real": (low, high, low_inclusive)})


def _url():
    """An optional http(s) URL setting (checked when Settings is built); empty: none."""
    return field(default="", metadata={"url": True})


_SIZE = re.compile(r"^\d{1,6}(B|KB|MB|GB|TB)$")
_JVM_SIZE = re.compile(r"^(\d{1,7})([mMgG])$")
# A JVM smaller than this does not get Spark started.
MIN_JVM_BYTES = 512 * 2**20


def jvm_bytes(text: str, name: str) -> int:
    """A JVM memory size as Spark takes it ('4g', '1536m') in bytes; at least 512m."""
    match = _JVM_SIZE.match(text)
    size = int(match.group(1)) * 2 ** (30 if match.group(2) in "gG" else 20) if match else 0
    if size < MIN_JVM_BYTES:
        raise ConfigError(f"{name}: a JVM memory size of at least 512m, such as 4g or 1536m, got {text!r}")
    return size


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    readings_topic: str = "energy_readings"
    alerts_topic: str = "energy_alerts"
    dlq_topic: str = "energy_readings_dlq"
    readings_partitions: int = _integer(4, 1, 10_000)
    alerts_partitions: int = _integer(1, 1, 10_000)
    dlq_partitions: int = _integer(1, 1, 10_000)
    # 0: as many replicas as the cluster has brokers, at most 3 (see kafka_io.replication_for).
    replication_factor: int = _integer(0, 0, 32)
    # 0: one less than the replication factor, at least 1 (2 of 3: one broker may be lost).
    min_insync_replicas: int = _integer(0, 0, 32)
    kafka_brokers: int = _integer(1, 1, 9)
    run_mode: str = "demo"
    window_duration: str = ""
    slide_duration: str = ""
    threshold_kwh: str = ""
    watermark_delay: str = "10 minutes"
    max_reading_kwh: float = _real(10.0, 0.0, MAX_READING_KWH_LIMIT, low_inclusive=False)
    max_line_bytes: int = _integer(1024, 64, 65_536)
    max_future_skew: str = "1 hour"
    starting_offsets: str = "recent"
    checkpoint_root: str = str(PROJECT_ROOT / "var" / "checkpoints")
    var_dir: str = str(PROJECT_ROOT / "var")
    spark_master: str = "local[2]"
    spark_driver_host: str = "127.0.0.1"
    spark_bind_address: str = "127.0.0.1"
    spark_driver_memory: str = "4g"
    spark_executor_memory: str = "4g"
    max_households: int = _integer(2_000_000, 1, 1_000_000_000)
    shuffle_partitions: int = _integer(2, 1, 10_000)
    state_buckets: int = _integer(64, 1, 4_096)
    trigger_interval: str = "1 second"
    spark_ui_port: int = _integer(4040, 1, 65_535)
    alert_latency_slo_seconds: float = _real(2.0, 0.0, 3600.0, low_inclusive=False)
    max_offsets_per_trigger: int = _integer(200_000, 1, 100_000_000)
    households: int = _integer(50, 1, 10_000_000)
    tick_seconds: int = _integer(15, 1, 86_400)
    speedup: float = _real(30.0, 0.0, 1e6, low_inclusive=False)
    jitter_pct: float = _real(10.0, 0.0, 99.0)
    sim_seed: int = 42
    kafka_controller_port: int = _integer(9094, 1, 65_535)
    metrics_host: str = "127.0.0.1"
    producer_metrics_port: int = _integer(9101, 0, 65_535)
    stream_metrics_port: int = _integer(9102, 0, 65_535)
    exporter_port: int = _integer(9103, 1, 65_535)
    view_host: str = "127.0.0.1"
    view_port: int = _integer(8501, 1, 65_535)
    view_refresh_seconds: float = _real(2.0, 0.1, 3600.0)
    history_root: str = str(PROJECT_ROOT / "var" / "history")
    history_retention_days: int = _integer(7, 1, 3650)
    history_flush_seconds: float = _real(5.0, 0.1, 3600.0)
    history_group: str = "energy-history"
    history_metrics_port: int = _integer(9104, 0, 65_535)
    prometheus_port: int = _integer(9090, 1, 65_535)
    alertmanager_port: int = _integer(9093, 1, 65_535)
    alert_webhook_url: str = _url()
    watchdog_webhook_url: str = _url()
    grafana_api_token: str = ""
    grafana_admin_user: str = "admin"
    grafana_admin_password: str = ""
    kafka_retention_bytes: int = _integer(1_073_741_824, 1_048_576, 2**50)
    prometheus_retention_size: str = "2GB"
    log_max_bytes: int = _integer(10_485_760, 65_536, 2**30)
    log_backups: int = _integer(3, 1, 100)
    log_level: str = "INFO"
    baseline: str = "on"
    baseline_slot: str = ""
    baseline_slots: str = ""
    baseline_alpha: float = 0.1
    baseline_k: float = 3.0
    baseline_warmup: int = 8
    baseline_min_kwh: str = ""
    baseline_min_sigma_kwh: str = ""
    baseline_forget_after: str = "35 days"
    # Derived when built (never read from the environment): the parsed forms of the above.
    rule: Rule = field(init=False, compare=False, repr=False)
    baseline_rule: BaselineRule | None = field(init=False, compare=False, repr=False)
    trigger_s: int = field(init=False, compare=False, repr=False)
    future_skew_s: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        rule = make_rule(self.run_mode, self.window_duration, self.slide_duration, self.threshold_kwh,
                         self.watermark_delay)
        if self.baseline not in ("on", "off"):
            raise ConfigError(f"BASELINE: must be on or off, got {self.baseline!r}")
        derived = {
            "rule": rule,
            "baseline_rule": None if self.baseline == "off" else make_baseline(
                self.run_mode, rule, self.baseline_slot, self.baseline_slots, self.baseline_alpha, self.baseline_k,
                self.baseline_warmup, self.baseline_min_kwh, self.baseline_min_sigma_kwh,
                self.baseline_forget_after),
            "trigger_s": parse_duration(self.trigger_interval, "TRIGGER_INTERVAL"),
            "future_skew_s": parse_duration(self.max_future_skew, "MAX_FUTURE_SKEW"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        self._check_declared()
        self._check_values()

    def _check_declared(self) -> None:
        """The bounds declared with the fields (_integer, _real, _url)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if "integer" in f.metadata:
                low, high = f.metadata["integer"]
                if not low <= value <= high:
                    raise ConfigError(f"{env_name(f.name)}: must be an integer in [{low}, {high}], got {value}")
            elif "real" in f.metadata:
                low, high, low_inclusive = f.metadata["real"]
                _number(env_name(f.name), value, low, high, low_inclusive)
            elif "url" in f.metadata and value and not re.fullmatch(r"https?://[^\s'\"]+", value):
                raise ConfigError(f"{env_name(f.name)}: an http:// or https:// URL without spaces or quotes, "
                                  f"got {value!r}")

    def _check_values(self) -> None:
        if self.starting_offsets not in STARTING_OFFSETS:
            raise ConfigError(f"STARTING_OFFSETS: must be one of {', '.join(STARTING_OFFSETS)}, "
                              f"got {self.starting_offsets!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        for name in ("spark_driver_memory", "spark_executor_memory"):
            jvm_bytes(getattr(self, name), env_name(name))
        if not _SIZE.match(self.prometheus_retention_size):
            raise ConfigError(f"PROMETHEUS_RETENTION_SIZE: a size such as 2GB or 500MB, got "
                              f"{self.prometheus_retention_size!r}")
        if not self.bootstrap_servers.strip():
            raise ConfigError("BOOTSTRAP_SERVERS: must name at least one host:port")
        if self.replication_factor and self.min_insync_replicas > self.replication_factor:
            raise ConfigError(f"MIN_INSYNC_REPLICAS ({self.min_insync_replicas}) must not exceed "
                              f"REPLICATION_FACTOR ({self.replication_factor}): no write could succeed")
        addresses = self.bootstrap_list
        if len(addresses) < self.kafka_brokers:
            raise ConfigError(f"KAFKA_BROKERS={self.kafka_brokers} needs as many host:port addresses in "
                              f"BOOTSTRAP_SERVERS (one listener per local broker), got {len(addresses)}")
        if any(not re.fullmatch(r"[^\s:,]+:\d{1,5}", a) for a in addresses):
            raise ConfigError(f"BOOTSTRAP_SERVERS: a comma-separated list of host:port, got {self.bootstrap_servers!r}")

    @property
    def state_memory(self) -> tuple[str, str]:
        """The setting that sizes the JVMs holding the state's tasks, and its value: the driver's
        in local mode, the executors' on a cluster."""
        if self.spark_master.startswith("local"):
            return "SPARK_DRIVER_MEMORY", self.spark_driver_memory
        return "SPARK_EXECUTOR_MEMORY", self.spark_executor_memory

    @property
    def bucket_capacity(self) -> int:
        """The households one state bucket may hold: MAX_HOUSEHOLDS shared out evenly."""
        return -(-self.max_households // self.state_buckets)

    @property
    def bootstrap_list(self) -> list[str]:
        return [a.strip() for a in self.bootstrap_servers.split(",") if a.strip()]

    @property
    def topics(self) -> dict[str, int]:
        """Every topic the pipeline uses -> its partition count when it is created."""
        return {self.readings_topic: self.readings_partitions, self.alerts_topic: self.alerts_partitions,
                self.dlq_topic: self.dlq_partitions}

    @property
    def topic_replication(self) -> dict[str, int]:
        """How `ensure_topics` replicates the topics it creates (0: derived from the cluster)."""
        return {"replication_factor": self.replication_factor, "min_insync_replicas": self.min_insync_replicas}

    @property
    def simulator_lead_s(self) -> int:
        """How far the simulator's event time may run ahead of the wall clock: half the skew the
        job accepts, the other half left for clock differences between hosts."""
        return self.future_skew_s // 2

    def checkpoint_dir(self) -> Path | str:
        """A checkpoint per everything that shapes the job's state, so a mode or window switch
        starts a fresh state of its own and switching back resumes the old one. The scoring
        parameters (THRESHOLD_KWH, BASELINE_K, BASELINE_WARMUP, the floors) are not part of it:
        changing them keeps what the baseline learned (the state notes which rule its alerted
        windows belong to)."""
        rule = self.rule
        learning = self.baseline_rule.learning_shape if self.baseline_rule else "off"
        shape = "|".join(str(v) for v in (
            rule.window_s, rule.slide_s, rule.watermark_s, self.max_reading_kwh, learning,
            self.state_buckets, self.shuffle_partitions, self.readings_topic, self.alerts_topic,
            self.dlq_topic, STATE_FORMAT))
        digest = hashlib.sha256(shape.encode()).hexdigest()[:10]
        name = f"{rule.mode}-w{rule.window_s}-s{rule.slide_s}-wm{rule.watermark_s}-{digest}"
        if "://" in self.checkpoint_root:  # s3a://, hdfs://: Spark's storage, not a local folder
            return f"{self.checkpoint_root.rstrip('/')}/{name}"
        return Path(self.checkpoint_root) / name

    def to_env(self) -> dict[str, str]:
        """The variables that make `load_settings` in another process build exactly these."""
        return {env_name(f.name): str(getattr(self, f.name)) for f in fields(self) if f.init}


def env_names() -> dict[str, str]:
    """Field -> its environment variable (aliases in `ALIASES` are also read)."""
    return {f.name: env_name(f.name) for f in fields(Settings) if f.init}


def read_env_file(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}


def _convert(name: str, kind: type, raw: str):
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{env_name(name)}: expected {'an integer' if kind is int else 'a number'}, "
                          f"got {raw!r}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env`, or from the process environment over `./.env`."""
    if env is None:
        env = {**read_env_file(Path.cwd() / ".env"), **os.environ}
    values = {}
    for f in fields(Settings):
        if not f.init:
            continue
        for var in (env_name(f.name), *ALIASES.get(f.name, ())):
            if env.get(var, "") != "":
                kind = type(f.default)
                values[f.name] = env[var].strip() if kind is str else _convert(f.name, kind, env[var])
                break
    for name in ("checkpoint_root", "var_dir", "history_root"):
        if name in values and "://" not in values[name] and not Path(values[name]).is_absolute():
            values[name] = str(PROJECT_ROOT / values[name])
    return Settings(**values)
