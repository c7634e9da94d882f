"""The readings contract in plain Python (docs/contract.md): patterns, reasons, bounds and units.

The stream job applies it as Spark expressions (validate.py), the archiver and the tests as
Python (`parse_reading`); both read the same constants from here, and this module imports
nothing heavier than the standard library, so the archiver runs without a JVM or pyspark.
"""
from __future__ import annotations

import re
import time

from pipeline.core.clock import parse_utc

# Java patterns (the job's): anchored with `\A` and `\z`, since Java's `$` would also match
# before a final line terminator and let `0.5\r` through.
TIMESTAMP_RE = r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})\z"
HOUSEHOLD_RE = r"\AH\d{3,12}\z"
DECIMAL_RE = r"\A[+-]?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})([eE][+-]?\d{1,3})?\z"
# The common line: each field a strict subset of its pattern above, energy unsigned and plain.
COMMON_LINE_RE = (r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2}),H\d{3,12},"
                  r"\d{1,18}(\.\d{1,18})?\z")
# Event times are held as epoch seconds and pane indexes in 64-bit integers; the contract's
# years keep them far from overflow.
MIN_EPOCH_S = 0
MAX_EPOCH_S = 4102444800  # 2100-01-01
# A dead letter carries at most this many characters of the raw line (base64 of this many bytes
# when it is not UTF-8), so even a fully JSON-escaped prefix stays far below Kafka's 1 MiB.
DEAD_LETTER_RAW_CHARS = 1024

# Why a line is a dead letter: the contract's checks, then a valid reading of a new household
# beyond MAX_HOUSEHOLDS (the job's bound on its state).
REASONS = ("empty", "too_long", "not_utf8", "bad_field_count", "bad_timestamp", "future_timestamp",
           "bad_household_id", "bad_kwh", "kwh_out_of_range", "household_limit")


def python_pattern(pattern: str) -> re.Pattern:
    """A Java pattern above as a Python one: `\\z` (end of input) is `\\Z` in Python."""
    return re.compile(pattern.replace(r"\z", r"\Z"))


_TIMESTAMP, _HOUSEHOLD, _DECIMAL = (python_pattern(p) for p in (TIMESTAMP_RE, HOUSEHOLD_RE, DECIMAL_RE))


def parse_reading(value: bytes | None, max_line_bytes: int, max_kwh: float, future_skew_s: int,
                  now_s: float | None = None) -> tuple[str, int, float] | None:
    """(household, epoch s, kWh) of a line the stream job accepts, else None: the job's checks,
    the future-timestamp one against `now_s` (default: the wall clock) included."""
    if not value or len(value) > max_line_bytes:
        return None
    try:
        fields = value.decode("utf-8").split(",")
    except UnicodeDecodeError:
        return None
    if len(fields) != 3 or not (_TIMESTAMP.match(fields[0]) and _HOUSEHOLD.match(fields[1])
                                and _DECIMAL.match(fields[2])):
        return None
    try:
        epoch, kwh = parse_utc(fields[0]), float(fields[2])
    except (ValueError, OverflowError):
        return None
    newest_allowed = (time.time() if now_s is None else now_s) + future_skew_s
    if not (MIN_EPOCH_S <= epoch < MAX_EPOCH_S and epoch <= newest_allowed and 0 <= kwh <= max_kwh):
        return None
    return fields[1], epoch, kwh
