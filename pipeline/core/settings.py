"""Settings: read from the environment once, at the entry point, into frozen groups.

`load_settings()` reads the process environment over the `.env` file of the working directory.
Each field of a group is one variable, its name in capitals (plus the aliases of the original
design in ALIASES), with its default and bounds written once, on the field. Values are typed:
durations are whole seconds, and an empty variable is None where the mode gives the value, which
`Rule` and `BaselineRule` resolve from MODES, the one table of mode defaults. The shared groups
(Kafka, readings, rule, baseline, metrics) are built first and handed to the component groups
that use them, so each component takes only its own group.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

PROJECT_ROOT = Path(__file__).resolve().parents[2]

MODES = {
    "demo": {"window": 60, "slide": 15, "threshold": 0.05, "baseline_slot": 600, "baseline_slots": 1,
             "baseline_excess_kwh": 0.01, "baseline_persist_kwh": 0.02, "baseline_fast_kwh": 0.03},
    "prod": {"window": 900, "slide": 15, "threshold": 2.0, "baseline_slot": 3600, "baseline_slots": 24,
             "baseline_excess_kwh": 0.12, "baseline_persist_kwh": 0.3, "baseline_fast_kwh": 0.4},
}
ALIASES = {"READINGS_TOPIC": ("SOURCE_TOPIC", "TOPIC")}
BASELINE_SWITCH = "BASELINE"  # on (the default) or off: whether Settings.baseline is a rule or None
KWH_UNITS = 1_000_000_000  # energy is summed as integer nano-kWh: exact and order-independent
# 1000 kWh per reading keeps a window's nano-kWh sum inside 64 bits for up to 9.2 million
# maximal readings of one household in one window.
MAX_READING_KWH_LIMIT = 1000.0
MAX_KWH = MAX_READING_KWH_LIMIT * 1e6  # the largest threshold or floor a setting may give
# The most readings a micro-batch may hold: a batch's Python memory grows with its readings, up to
# about 4 KB each in prod when every reading is its household's only one in its windows
# (docs/operations.md, "A batch's memory").
MAX_BATCH_READINGS = 1_000_000


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot run with; the message names it."""


_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([a-z]+)\s*$")


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


_JVM_SIZE = re.compile(r"^(\d{1,7})([mMgG])$")
MIN_JVM_BYTES = 512 * 2**20  # a JVM smaller than this does not get Spark started


def jvm_bytes(text: str, name: str) -> int:
    """A JVM memory size as Spark takes it ('4g', '1536m') in bytes; at least 512m."""
    match = _JVM_SIZE.match(text)
    size = int(match.group(1)) * 2 ** (30 if match.group(2) in "gG" else 20) if match else 0
    if size < MIN_JVM_BYTES:
        raise ConfigError(f"{name}: a JVM memory size of at least 512m, such as 4g or 1536m, got {text!r}")
    return size


# How a field is read, checked and written back: the kinds of `setting`.
_SIZE = re.compile(r"^\d{1,6}(B|KB|MB|GB|TB)$")
_URL = re.compile(r"https?://[^\s'\"]+")
_HOST_PORT = re.compile(r"[^\s:,]+:\d{1,5}")


def setting(default, kind: str = "", low: float | None = None, high: float | None = None,
            low_inclusive: bool = True, choices: tuple = ()):
    """A field read from its variable. `kind`: '' (the default's own type), 'duration' (seconds,
    written '15 seconds'), 'optional_duration' and 'optional_real' (None: the mode's value),
    'url', 'size' (2GB), 'jvm' (4g). Numbers must lie in [low, high] (or (low, high])."""
    return field(default=default, metadata={"kind": kind, "bounds": (low, high, low_inclusive), "choices": choices})


def group(kind):
    """A field that holds a shared group, handed over when the settings are built."""
    return field(default=None, metadata={"group": kind}, compare=False, repr=False)


def _env_fields(cls) -> list:
    return [f for f in fields(cls) if "kind" in f.metadata]


def _number(name: str, value, low: float | None, high: float | None, low_inclusive: bool = True) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: not a number: {value!r}") from None
    above_low = low is None or (number >= low if low_inclusive else number > low)
    if not (math.isfinite(number) and above_low and (high is None or number <= high)):
        bracket = "[" if low_inclusive else "("
        raise ConfigError(f"{name}: must be a finite number in {bracket}{low:g}, {high:g}], got {value!r}")
    return number


def _parse(f, raw: str):
    """One variable's text as the field's value (raw is never empty)."""
    name, kind, default = f.name.upper(), f.metadata["kind"], f.default
    low, high, low_inclusive = f.metadata["bounds"]
    if kind in ("duration", "optional_duration"):
        return parse_duration(raw, name)
    if kind == "optional_real" or isinstance(default, float):
        return _number(name, raw, low, high, low_inclusive)
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be an integer from {low:,.0f} to {high:,.0f}, got {value:,}")
        return value
    return raw.strip()


def _check(f, value) -> None:
    """The declared checks of a text field."""
    name, kind, choices = f.name.upper(), f.metadata["kind"], f.metadata["choices"]
    if choices and value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    if kind == "url" and value and not _URL.fullmatch(value):
        raise ConfigError(f"{name}: an http:// or https:// URL without spaces or quotes, got {value!r}")
    if kind == "size" and not _SIZE.match(value):
        raise ConfigError(f"{name}: a size such as 2GB or 500MB, got {value!r}")
    if kind == "jvm":
        jvm_bytes(value, name)


def _validate(f, value) -> None:
    """A field's value against what its declaration allows."""
    if value is None:
        return
    if isinstance(value, str):
        _check(f, value)
        return
    low, high, low_inclusive = f.metadata["bounds"]
    if f.metadata["kind"] in ("duration", "optional_duration") and not (low or 0) <= value <= (high or value):
        raise ConfigError(f"{f.name.upper()}: must be from {human_duration(low or 0)} to {human_duration(high)}, "
                          f"got {human_duration(value)}")
    if low is not None or high is not None:
        _number(f.name.upper(), value, low, high, low_inclusive)


class _Group:
    """A settings group checks its values when it is built, however it is built."""

    def __post_init__(self) -> None:
        for f in _env_fields(type(self)):
            _validate(f, getattr(self, f.name))


def _written(f, value) -> str:
    """A value as its variable holds it."""
    if value is None:
        return ""
    if f.metadata["kind"] in ("duration", "optional_duration"):
        return f"{value} seconds"
    return str(value)


@dataclass(frozen=True)
class KafkaSettings(_Group):
    bootstrap_servers: str = setting("127.0.0.1:9092")
    readings_topic: str = setting("energy_readings")
    alerts_topic: str = setting("energy_alerts")
    dlq_topic: str = setting("energy_readings_dlq")
    readings_partitions: int = setting(4, low=1, high=10_000)
    alerts_partitions: int = setting(1, low=1, high=10_000)
    dlq_partitions: int = setting(1, low=1, high=10_000)
    # 0: as many replicas as the cluster has brokers, at most 3 (see kafka.replication_for).
    replication_factor: int = setting(0, low=0, high=32)
    # 0: one less than the replication factor, at least 1 (2 of 3: one broker may be lost).
    min_insync_replicas: int = setting(0, low=0, high=32)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bootstrap_list:
            raise ConfigError("BOOTSTRAP_SERVERS: must name at least one host:port")
        if any(not _HOST_PORT.fullmatch(a) for a in self.bootstrap_list):
            raise ConfigError(f"BOOTSTRAP_SERVERS: a comma-separated list of host:port, got {self.bootstrap_servers!r}")
        if self.replication_factor and self.min_insync_replicas > self.replication_factor:
            raise ConfigError(f"MIN_INSYNC_REPLICAS ({self.min_insync_replicas}) must not exceed "
                              f"REPLICATION_FACTOR ({self.replication_factor}): no write could succeed")

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


@dataclass(frozen=True)
class ReadingsSettings(_Group):
    """The bounds of the readings contract (docs/contract.md)."""

    max_reading_kwh: float = setting(10.0, low=0.0, high=MAX_READING_KWH_LIMIT, low_inclusive=False)
    max_line_bytes: int = setting(1024, low=64, high=65_536)
    max_future_skew: int = setting(3600, "duration")

    @property
    def simulator_lead_s(self) -> int:
        """How far the simulator's event time may run ahead of the wall clock: half the skew the
        job accepts, the other half left for clock differences between hosts."""
        return self.max_future_skew // 2


@dataclass(frozen=True)
class Rule(_Group):
    """The fixed rule: sum of kWh per household over sliding event-time windows, above a
    threshold. Window, slide and threshold are the mode's unless set."""

    run_mode: str = setting("demo", choices=tuple(MODES))
    window_duration: int | None = setting(None, "optional_duration")
    slide_duration: int | None = setting(None, "optional_duration")
    threshold_kwh: float | None = setting(None, "optional_real", low=0.0, high=MAX_KWH)
    watermark_delay: int = setting(600, "duration")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.slide_s > self.window_s or self.window_s % self.slide_s:
            raise ConfigError(f"SLIDE_DURATION ({self.slide_s}s) must divide WINDOW_DURATION ({self.window_s}s): "
                              "windows are built from slide-sized panes")

    @property
    def mode(self) -> str:
        return self.run_mode

    @property
    def window_s(self) -> int:
        return self.window_duration or MODES[self.run_mode]["window"]

    @property
    def slide_s(self) -> int:
        return self.slide_duration or MODES[self.run_mode]["slide"]

    @property
    def watermark_s(self) -> int:
        return self.watermark_delay

    @property
    def threshold(self) -> float:
        """The threshold in kWh."""
        return MODES[self.run_mode]["threshold"] if self.threshold_kwh is None else self.threshold_kwh

    @property
    def panes_per_window(self) -> int:
        return self.window_s // self.slide_s

    @property
    def threshold_units(self) -> int:
        return int(round(self.threshold * KWH_UNITS))

    @property
    def description(self) -> str:
        return f"kwh>{self.threshold!r} over {human_duration(self.window_s)}"

    @property
    def key(self) -> str:
        """What identifies the rule in alert ids: the mode name is only a label for it."""
        return f"w{self.window_s}-s{self.slide_s}-t{self.threshold:g}"

    def first_open_pane(self, watermark_ms: int) -> int:
        """The smallest window-start pane whose window ends after the watermark."""
        return watermark_ms // (self.slide_s * 1000) - self.panes_per_window + 1


@dataclass(frozen=True)
class BaselineRule(_Group):
    """The per-household baseline rule (docs/contract.md, "Baseline rule"): per household and slot,
    the usual level of its tumbling windows (an upper quantile) learned from its own use; a window
    alerts when the use above that level, and an allowance, has lasted and added up. Slot layout,
    allowance and persistence are the mode's unless set."""

    baseline_slot: int | None = setting(None, "optional_duration")
    baseline_slots: int | None = setting(None, "optional_real", low=1, high=10_000)
    baseline_quantile: float = setting(0.95, low=0.5, high=1.0, low_inclusive=False)
    baseline_alpha: float = setting(0.1, low=0.0, high=1.0, low_inclusive=False)
    baseline_warmup: int = setting(8, low=1, high=65_535)
    baseline_excess_kwh: float | None = setting(None, "optional_real", low=0.0, high=MAX_KWH, low_inclusive=False)
    baseline_persist_kwh: float | None = setting(None, "optional_real", low=0.0, high=MAX_KWH)
    baseline_run: int = setting(3, low=1, high=255)
    baseline_fast_run: int = setting(2, low=0, high=255)
    baseline_fast_kwh: float | None = setting(None, "optional_real", low=0.0, high=MAX_KWH)
    baseline_fast_scale: float = setting(4.0, low=0.0, high=1000.0)
    baseline_forget_after: int = setting(35 * 86400, "duration", low=1, high=3650 * 86400)
    rule: Rule = group(Rule)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline_slots is not None and self.baseline_slots != int(self.baseline_slots):
            raise ConfigError(f"BASELINE_SLOTS: must be a whole number, got {self.baseline_slots!r}")

    def _mode(self, name: str):
        return MODES[self.rule.run_mode][name]

    window_s = property(lambda self: self.rule.window_s)
    slide_s = property(lambda self: self.rule.slide_s)
    watermark_s = property(lambda self: self.rule.watermark_s)
    quantile = property(lambda self: self.baseline_quantile)
    alpha = property(lambda self: self.baseline_alpha)
    warmup = property(lambda self: self.baseline_warmup)
    run = property(lambda self: self.baseline_run)
    fast_run = property(lambda self: self.baseline_fast_run)
    fast_scale = property(lambda self: self.baseline_fast_scale)
    forget_after_s = property(lambda self: self.baseline_forget_after)

    @property
    def slot_s(self) -> int:
        return self.baseline_slot or self._mode("baseline_slot")

    @property
    def slots(self) -> int:
        return int(self.baseline_slots or self._mode("baseline_slots"))

    @property
    def excess_kwh(self) -> float:
        """δ: the use a window may have above its slot's usual level without counting as excess."""
        return self._mode("baseline_excess_kwh") if self.baseline_excess_kwh is None else self.baseline_excess_kwh

    @property
    def persist_kwh(self) -> float:
        """H: the excess that must add up over the windows in a row before one alerts."""
        return self._mode("baseline_persist_kwh") if self.baseline_persist_kwh is None else self.baseline_persist_kwh

    @property
    def fast_kwh(self) -> float:
        """F: the fast level is F plus `fast_scale` times the slot's usual level, the excess that
        alerts after `fast_run` windows in a row (a large load is told before `run` windows)."""
        return self._mode("baseline_fast_kwh") if self.baseline_fast_kwh is None else self.baseline_fast_kwh

    @property
    def slot_name(self) -> str:
        if self.slot_s == 3600 and self.slots == 24:
            return "hour of day"
        if self.slots == 1:
            return "one for all times"
        return f"{human_duration(self.slot_s)} of {human_duration(self.slot_s * self.slots)}"

    @property
    def description(self) -> str:
        fast = (f", or for {self.fast_run}, excess>{self.fast_kwh:g}+{self.fast_scale:g}*usual"
                if self.fast_run else "")
        return (f"kwh>usual+{self.excess_kwh:g} for {self.run} windows of {human_duration(self.window_s)}, "
                f"excess>{self.persist_kwh:g}{fast} (slot: {self.slot_name})")

    @property
    def key(self) -> str:
        """What identifies the rule in alert ids."""
        return (f"excess-w{self.window_s}-s{self.slide_s}-slot{self.slot_s}x{self.slots}-p{self.quantile:g}"
                f"-a{self.alpha:g}-n{self.warmup}-d{self.excess_kwh:g}-h{self.persist_kwh:g}-r{self.run}"
                + (f"-f{self.fast_kwh:g}x{self.fast_scale:g}r{self.fast_run}" if self.fast_run else ""))

    @property
    def learning_shape(self) -> tuple:
        """What the learned state depends on: the slot layout and how a slot learns (the
        allowance clips what a warm slot learns). The persistence (H, the run) is not in it, so
        changing it keeps what was learned."""
        return (self.window_s, self.slot_s, self.slots, self.quantile, self.alpha)


@dataclass(frozen=True)
class MetricsSettings(_Group):
    """Where the components serve their metrics."""

    metrics_host: str = setting("127.0.0.1")


@dataclass(frozen=True)
class HistorySettings(_Group):
    """The alert and energy history (docs/history.md) and the archiver that keeps it."""

    history_root: str = setting(str(PROJECT_ROOT / "var" / "history"))
    history_retention_days: int = setting(7, low=1, high=3650)
    history_flush_seconds: float = setting(5.0, low=0.1, high=3600.0)
    history_group: str = setting("energy-history")
    history_metrics_port: int = setting(9104, low=0, high=65_535)
    kafka: KafkaSettings = group(KafkaSettings)
    readings: ReadingsSettings = group(ReadingsSettings)
    rule: Rule = group(Rule)
    metrics: MetricsSettings = group(MetricsSettings)


@dataclass(frozen=True)
class JobSettings(_Group):
    """The Spark job: its session, query, state and checkpoint."""

    starting_offsets: str = setting("recent", choices=("recent", "earliest", "latest"))
    checkpoint_root: str = setting(str(PROJECT_ROOT / "var" / "checkpoints"))
    spark_master: str = setting("local[2]")
    spark_driver_host: str = setting("127.0.0.1")
    spark_bind_address: str = setting("127.0.0.1")
    spark_driver_memory: str = setting("4g", "jvm")
    spark_executor_memory: str = setting("4g", "jvm")
    max_households: int = setting(2_000_000, low=1, high=1_000_000_000)
    shuffle_partitions: int = setting(2, low=1, high=10_000)
    state_buckets: int = setting(64, low=1, high=4_096)
    state_operator: str = setting("jvm", choices=("python", "jvm"))
    trigger_interval: int = setting(1, "duration")
    spark_ui_port: int = setting(4040, low=1, high=65_535)
    alert_latency_slo_seconds: float = setting(2.0, low=0.0, high=3600.0, low_inclusive=False)
    max_offsets_per_trigger: int = setting(200_000, low=1, high=MAX_BATCH_READINGS)
    stream_metrics_port: int = setting(9102, low=0, high=65_535)
    kafka: KafkaSettings = group(KafkaSettings)
    readings: ReadingsSettings = group(ReadingsSettings)
    rule: Rule = group(Rule)
    baseline: BaselineRule | None = group(BaselineRule)
    metrics: MetricsSettings = group(MetricsSettings)
    history: HistorySettings = group(HistorySettings)

    @property
    def bucket_capacity(self) -> int:
        """The households one state bucket may hold: MAX_HOUSEHOLDS shared out evenly."""
        return -(-self.max_households // self.state_buckets)

    @property
    def state_memory(self) -> tuple[str, str]:
        """The setting that sizes the JVMs holding the state's tasks, and its value: the driver's
        in local mode, the executors' on a cluster."""
        if self.spark_master.startswith("local"):
            return "SPARK_DRIVER_MEMORY", self.spark_driver_memory
        return "SPARK_EXECUTOR_MEMORY", self.spark_executor_memory


@dataclass(frozen=True)
class SimulatorSettings(_Group):
    """The simulated meters and their producer."""

    households: int = setting(50, low=1, high=10_000_000)
    tick_seconds: int = setting(15, low=1, high=86_400)
    speedup: float = setting(30.0, low=0.0, high=1e6, low_inclusive=False)
    jitter_pct: float = setting(10.0, low=0.0, high=99.0)
    sim_seed: int = setting(42, low=-2**63, high=2**63 - 1)
    producer_metrics_port: int = setting(9101, low=0, high=65_535)
    kafka: KafkaSettings = group(KafkaSettings)
    readings: ReadingsSettings = group(ReadingsSettings)
    metrics: MetricsSettings = group(MetricsSettings)


@dataclass(frozen=True)
class ViewSettings(_Group):
    """The Streamlit alert view."""

    view_host: str = setting("127.0.0.1")
    view_port: int = setting(8501, low=1, high=65_535)
    view_refresh_seconds: float = setting(2.0, low=0.1, high=3600.0)
    history: HistorySettings = group(HistorySettings)
    rule: Rule = group(Rule)
    baseline: BaselineRule | None = group(BaselineRule)


@dataclass(frozen=True)
class StackSettings(_Group):
    """The local stack and its monitoring: files, ports of what only `up` starts, receivers, logs."""

    var_dir: str = setting(str(PROJECT_ROOT / "var"))
    kafka_brokers: int = setting(1, low=1, high=9)
    kafka_controller_port: int = setting(9094, low=1, high=65_535)
    kafka_retention_bytes: int = setting(1_073_741_824, low=1_048_576, high=2**50)
    exporter_port: int = setting(9103, low=1, high=65_535)
    prometheus_port: int = setting(9090, low=1, high=65_535)
    alertmanager_port: int = setting(9093, low=1, high=65_535)
    alert_webhook_url: str = setting("", "url")
    watchdog_webhook_url: str = setting("", "url")
    prometheus_retention_size: str = setting("2GB", "size")
    log_max_bytes: int = setting(10_485_760, low=65_536, high=2**30)
    log_backups: int = setting(3, low=1, high=100)
    log_level: str = setting("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


@dataclass(frozen=True)
class GrafanaSettings(_Group):
    """Credentials of `dashboards publish`."""

    grafana_api_token: str = setting("")
    grafana_admin_user: str = setting("admin")
    grafana_admin_password: str = setting("")


# Built in this order: a group's shared groups before it.
_GROUPS = {"kafka": KafkaSettings, "readings": ReadingsSettings, "rule": Rule, "baseline": BaselineRule,
           "metrics": MetricsSettings, "history": HistorySettings, "job": JobSettings,
           "simulator": SimulatorSettings, "view": ViewSettings, "stack": StackSettings, "grafana": GrafanaSettings}
_PATHS = ("history_root", "checkpoint_root", "var_dir")  # relative ones are under the project


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    readings: ReadingsSettings = field(default_factory=ReadingsSettings)
    rule: Rule = field(default_factory=Rule)
    baseline: BaselineRule | None = None
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    job: JobSettings = field(default_factory=JobSettings)
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    view: ViewSettings = field(default_factory=ViewSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    grafana: GrafanaSettings = field(default_factory=GrafanaSettings)

    def __post_init__(self) -> None:
        if len(self.kafka.bootstrap_list) < self.stack.kafka_brokers:
            raise ConfigError(f"KAFKA_BROKERS={self.stack.kafka_brokers} needs as many host:port addresses in "
                              f"BOOTSTRAP_SERVERS (one listener per local broker), got {len(self.kafka.bootstrap_list)}")

    def to_env(self) -> dict[str, str]:
        """The variables that make `load_settings` in another process build exactly these."""
        env = {BASELINE_SWITCH: "on" if self.baseline is not None else "off"}
        for name in _GROUPS:
            value = getattr(self, name)
            for f in _env_fields(type(value)) if value is not None else ():
                env[f.name.upper()] = _written(f, getattr(value, f.name))
        return env


def env_names() -> list[str]:
    """Every variable the settings read (aliases in ALIASES are also read)."""
    return [BASELINE_SWITCH] + [f.name.upper() for cls in _GROUPS.values() for f in _env_fields(cls)]


def read_env_file(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}


def _value(env: Mapping[str, str], f):
    """A field's value from the environment: its variable (or an alias), else its default."""
    for var in (f.name.upper(), *ALIASES.get(f.name.upper(), ())):
        raw = env.get(var, "")
        if raw != "":
            value = _parse(f, raw)
            if f.name in _PATHS and "://" not in value and not Path(value).is_absolute():
                value = str(PROJECT_ROOT / value)
            break
    else:
        value = f.default
    return value


def _build(cls, env: Mapping[str, str], built: dict):
    values = {f.name: _value(env, f) for f in _env_fields(cls)}
    values.update({f.name: built[f.name] for f in fields(cls) if "group" in f.metadata})
    return cls(**values)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env`, or from the process environment over `./.env`."""
    if env is None:
        env = {**read_env_file(Path.cwd() / ".env"), **os.environ}
    switch = env.get(BASELINE_SWITCH, "") or "on"
    if switch not in ("on", "off"):
        raise ConfigError(f"{BASELINE_SWITCH}: must be on or off, got {switch!r}")
    built: dict = {}
    for name, cls in _GROUPS.items():
        built[name] = _build(cls, env, built)
    if switch == "off":
        built["baseline"] = None
        for name in ("job", "view"):
            built[name] = dataclasses.replace(built[name], baseline=None)
    return Settings(**built)


def with_values(settings: Settings | None, **values) -> Settings:
    """These settings (None: the defaults) with some variables changed, by their lower-case
    names, built as `load_settings` builds them."""
    changed = {name.upper(): "" if v is None else str(v) for name, v in values.items()}
    unknown = set(changed) - set(env_names())
    if unknown:
        raise ConfigError(f"no such settings: {', '.join(sorted(unknown))}")
    return load_settings({**(settings.to_env() if settings is not None else {}), **changed})
