"""UTC timestamps as the readings contract writes them: `2026-01-05T17:00:15Z`."""
from __future__ import annotations

from datetime import datetime, timezone


def utc_stamp(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(stamp: str) -> int:
    """ISO-8601 with `Z` or a numeric offset -> epoch seconds. Raises ValueError otherwise,
    including for a time without a zone (it would silently be read as local time)."""
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"no time zone in {stamp!r}")
    return int(parsed.timestamp())
