"""Reading an alert record back from Kafka, whatever the record holds.

The job writes alerts of one shape (shared/design.md), but the alerts topic is open to any
producer: a consumer meets tombstones, bytes that are not UTF-8, text that is not JSON, and JSON
of another shape. `parse_alert` turns a record value into an alert or a reason it is not one,
so the view and `energy-monitor alerts` count such records instead of failing on them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from .clock import parse_utc

MAX_ALERT_BYTES = 64 * 1024
_TEXT_FIELDS = ("alert_id", "household_id", "rule", "mode")
_TIME_FIELDS = ("window_start", "window_end")
_NUMBER_FIELDS = ("kwh", "threshold_kwh")


@dataclass(frozen=True)
class Parsed:
    alert: dict | None  # the alert, its required fields checked
    problem: str | None = None  # why the record is not an alert


def _field_problem(alert: dict) -> str | None:
    for name in _TEXT_FIELDS:
        if not isinstance(alert.get(name), str) or not alert[name]:
            return f"{name} missing or not a string"
    for name in _TIME_FIELDS:
        try:
            parse_utc(alert.get(name) if isinstance(alert.get(name), str) else "")
        except ValueError:
            return f"{name} is not a UTC timestamp"
    for name in _NUMBER_FIELDS:
        value = alert.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name} missing or not a number"
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
    if not isinstance(alert, dict):
        return Parsed(None, f"JSON {type(alert).__name__}, not an object")
    problem = _field_problem(alert)
    return Parsed(None, problem) if problem else Parsed(alert)
