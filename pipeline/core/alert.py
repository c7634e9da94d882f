"""The alert, declared once: its fields (name, type, whether every alert has it), its kinds, and
reading one back from Kafka whatever the record holds.

The job builds the JSON document from FIELDS (job/query.py), the history its table's schema and
the columns an older table gains (core/history.py), `parse_alert` its checks, the view its
columns. The alerts topic is open to any producer: a consumer meets tombstones, bytes that are not
UTF-8, text that is not JSON, and JSON of another shape; `parse_alert` turns a record value into
an alert or a reason it is not one, so consumers count such records instead of failing on them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum

from pipeline.core.clock import parse_utc
from pipeline.core.contract import MAX_EPOCH_S, MIN_EPOCH_S


class Kind(str, Enum):
    """Which rule raised an alert. An alert written before kinds existed is THRESHOLD."""

    THRESHOLD = "threshold"
    BASELINE = "baseline"


DEFAULT_KIND = Kind.THRESHOLD


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # text, time (a UTC stamp), number (a double), count (a whole number)
    only: Kind | None = None  # set only on alerts of this kind; None: on every alert
    required: bool = True  # in every record a consumer reads (not so for detected_at and kind,
    # which early alerts lack)


ALERT_ID = Field("alert_id", "text")
HOUSEHOLD = Field("household_id", "text")
WINDOW_START = Field("window_start", "time")
WINDOW_END = Field("window_end", "time")
KWH = Field("kwh", "number")
THRESHOLD = Field("threshold_kwh", "number")
RULE = Field("rule", "text")
MODE = Field("mode", "text")
DETECTED_AT = Field("detected_at", "time", required=False)
KIND = Field("kind", "text", required=False)
BASELINE_USUAL = Field("baseline_kwh", "number", only=Kind.BASELINE)
EXCESS = Field("excess_kwh", "number", only=Kind.BASELINE)
BASELINE_WINDOWS = Field("baseline_windows", "count", only=Kind.BASELINE)
SLOT = Field("slot", "count", only=Kind.BASELINE)
FIELDS = (ALERT_ID, HOUSEHOLD, WINDOW_START, WINDOW_END, KWH, THRESHOLD, RULE, MODE, DETECTED_AT, KIND,
          BASELINE_USUAL, EXCESS, BASELINE_WINDOWS, SLOT)
NAMES = tuple(f.name for f in FIELDS)
EXPLAINING = tuple(f for f in FIELDS if f.only is not None)  # what a kind's alert adds to explain itself

MAX_ALERT_BYTES = 64 * 1024
MAX_TEXT_CHARS = 256
# Numbers a consumer stores as a double and prints back; anything larger is not an energy.
MAX_KWH = 1e12


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


def _value_problem(field: Field, value) -> str | None:
    if field.type == "text" and (not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS):
        return f"{field.name} missing or not a string of at most {MAX_TEXT_CHARS} characters"
    if field.type == "time" and not _stamp(value):
        return f"{field.name} is not a UTC timestamp in 1970-2099"
    if field.type == "number" and not _number(value, -MAX_KWH, MAX_KWH):
        return f"{field.name} missing or not a number of at most {MAX_KWH:g}"
    if field.type == "count" and not (isinstance(value, int) and _number(value, 0, 2**53)):
        return f"{field.name} is not a whole number"
    return None


def _field_problem(alert: dict) -> str | None:
    for field in FIELDS:
        value = alert.get(field.name)
        if value is None and (field.only is not None or not field.required):
            continue
        problem = _value_problem(field, value)
        if problem:
            return problem
    if parse_utc(alert[WINDOW_END.name]) <= parse_utc(alert[WINDOW_START.name]):
        return "window_end is not after window_start"
    if alert.get(KIND.name, DEFAULT_KIND.value) not in {k.value for k in Kind}:
        return f"kind is not one of {', '.join(k.value for k in Kind)}"
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
