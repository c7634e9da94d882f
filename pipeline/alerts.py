"""Reading an alert record back from Kafka, whatever the record holds.

The job writes alerts of one shape (docs/contract.md), but the alerts topic is open to any
producer: a consumer meets tombstones, bytes that are not UTF-8, text that is not JSON, and JSON
of another shape. `parse_alert` turns a record value into an alert or a reason it is not one,
so the view and `energy-monitor alerts` count such records instead of failing on them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from .clock import parse_utc
from .contract import MAX_EPOCH_S, MIN_EPOCH_S

MAX_ALERT_BYTES = 64 * 1024
MAX_TEXT_CHARS = 256
# Numbers a consumer stores as a double and prints back; anything larger is not an energy.
MAX_KWH = 1e12
_TEXT_FIELDS = ("alert_id", "household_id", "rule", "mode")
_TIME_FIELDS = ("window_start", "window_end")
_NUMBER_FIELDS = ("kwh", "threshold_kwh")
_OPTIONAL_NUMBERS = ("baseline_kwh", "baseline_sigma_kwh")
_OPTIONAL_COUNTS = ("baseline_windows", "slot")
KINDS = ("threshold", "baseline")


@dataclass(frozen=True)
class Parsed:
    alert: dict | None  # the alert, its fields checked
    problem: str | None = None  # why the record is not an alert


def _number(value, low: float, high: float) -> bool:
    """A JSON number (not a boolean) in [low, high]; an integer too large for a double is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and low <= number <= high


def _stamp(value) -> bool:
    """A UTC timestamp in the contract's years (1970-2099)."""
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        return MIN_EPOCH_S <= parse_utc(value) < MAX_EPOCH_S
    except (ValueError, OverflowError):
        return False


def _field_problem(alert: dict) -> str | None:
    for name in _TEXT_FIELDS:
        value = alert.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS:
            return f"{name} missing or not a string of at most {MAX_TEXT_CHARS} characters"
    for name in _TIME_FIELDS:
        if not _stamp(alert.get(name)):
            return f"{name} is not a UTC timestamp in 1970-2099"
    if parse_utc(alert["window_end"]) <= parse_utc(alert["window_start"]):
        return "window_end is not after window_start"
    for name in _NUMBER_FIELDS:
        if not _number(alert.get(name), -MAX_KWH, MAX_KWH):
            return f"{name} missing or not a number of at most {MAX_KWH:g}"
    if alert.get("detected_at") is not None and not _stamp(alert["detected_at"]):
        return "detected_at is not a UTC timestamp in 1970-2099"
    if alert.get("kind", "threshold") not in KINDS:
        return f"kind is not one of {', '.join(KINDS)}"
    for name in _OPTIONAL_NUMBERS:
        if alert.get(name) is not None and not _number(alert[name], -MAX_KWH, MAX_KWH):
            return f"{name} is not a number of at most {MAX_KWH:g}"
    for name in _OPTIONAL_COUNTS:
        value = alert.get(name)
        if value is not None and not (isinstance(value, int) and _number(value, 0, 2**53)):
            return f"{name} is not a whole number"
    return None


def parse_alert(value: bytes | None) -> Parsed:
    if value is None:
        return Parsed(None, "tombstone (no value)")
    if len(value) > MAX_ALERT_BYTES:
        return Parsed(None, f"{len(value)} bytes, more than an alert can be")
    try:
        alert = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        return Parsed(None, "not UTF-8")
    except ValueError:
        return Parsed(None, "not JSON")
    except RecursionError:
        return Parsed(None, "JSON nested too deeply")
    if not isinstance(alert, dict):
        return Parsed(None, f"JSON {type(alert).__name__}, not an object")
    problem = _field_problem(alert)
    return Parsed(None, problem) if problem else Parsed(alert)
