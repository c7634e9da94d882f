"""Turn recorded files into readings lines for `energy-monitor replay`.

- `readings`: each line of the file as it is (bytes, so non-UTF-8 lines reach the dead-letter
  topic exactly as recorded).
- `lcl`: Low Carbon London half-hourly files (`LCLid,DateTime|tstp,KWH/hh`): the value is already
  kWh per half hour, stamped with the row's DateTime. Household id: `H` + the digits of the
  LCLid (MAC000002 -> H000002).
- `uci`: the UCI household power file, raw (`Date;Time;...` or comma) or as written by R
  (index column, quoted): Global_active_power is kW averaged over the minute, so the minute's
  energy is kW / 60, stamped at the start of the minute. The dataset has one household; it is
  `H900001` unless `--household` names another.

Rows repeating an earlier row's household and time are skipped as duplicates (the LCL sample
has such real duplicates), so no interval is counted twice. Converted values keep 9 decimals
(the pipeline sums nano-kWh), so the readings' total equals the source's.

Converters yield `Converted` items: a line to publish or a skipped row with its line number and
why; the caller reports both and prints the summary.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .simulator import format_reading

FORMATS = ("readings", "lcl", "uci")
UCI_DEFAULT_HOUSEHOLD = "H900001"
_LCL_ID = re.compile(r"^MAC(\d+)$")


@dataclass(frozen=True)
class Converted:
    line_no: int
    key: str | None = None
    value: bytes | None = None
    skipped: str | None = None  # why the row could not be converted


def household_from_line(line: bytes) -> str | None:
    parts = line.split(b",")
    if len(parts) >= 2:
        try:
            return parts[1].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def read_lines(path: Path) -> Iterator[Converted]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a final newline ends the last line; it does not start an empty one
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r")
        yield Converted(number, household_from_line(line), line)


def _utc(stamp: datetime) -> int:
    return int(stamp.replace(tzinfo=timezone.utc).timestamp())


def convert_lcl(path: Path) -> Iterator[Converted]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None or len(header) < 3:
            yield Converted(1, skipped="no LCL header (LCLid,DateTime,KWH/hh)")
            return
        for number, row in enumerate(rows, start=2):
            if len(row) < 3:
                yield Converted(number, skipped=f"expected 3 fields, got {len(row)}")
                continue
            match = _LCL_ID.match(row[0].strip())
            try:
                end = datetime.strptime(row[1].strip()[:19], "%Y-%m-%d %H:%M:%S")
                kwh = float(row[2].strip())
            except ValueError:
                yield Converted(number, skipped=f"unreadable time or value: {row[1].strip()!r}, {row[2].strip()!r}")
                continue
            if match is None:
                yield Converted(number, skipped=f"household id {row[0]!r} is not MACnnnnnn")
                continue
            household = f"H{match.group(1)}"
            yield Converted(number, household, format_reading(_utc(end), household, kwh, 9).encode())


def _uci_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    text = path.read_text(encoding="utf-8")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [name.strip().lower() for name in next(reader)]
    for number, row in enumerate(reader, start=2):
        yield number, dict(zip(header, row))


def convert_uci(path: Path, household: str = UCI_DEFAULT_HOUSEHOLD) -> Iterator[Converted]:
    for number, row in _uci_rows(path):
        date, clock, power = row.get("date"), row.get("time"), row.get("global_active_power")
        if not date or not clock or power is None:
            yield Converted(number, skipped="missing date, time or global_active_power")
            continue
        try:
            start = datetime.strptime(f"{date.strip()} {clock.strip()}", "%d/%m/%Y %H:%M:%S")
        except ValueError:
            yield Converted(number, skipped=f"unreadable date/time {date!r} {clock!r}")
            continue
        try:
            kw = float(power)
        except ValueError:
            yield Converted(number, skipped=f"missing value {power!r}")
            continue
        yield Converted(number, household, format_reading(_utc(start), household, kw / 60.0, 9).encode())


def _without_duplicates(items: Iterator[Converted]) -> Iterator[Converted]:
    first_seen: dict[tuple[str, bytes], int] = {}
    for item in items:
        if item.value is not None:
            stamp = item.value.split(b",", 1)[0]
            earlier = first_seen.setdefault((item.key, stamp), item.line_no)
            if earlier != item.line_no:
                item = Converted(item.line_no, skipped=f"duplicate of line {earlier}")
        yield item


def convert(path: Path, fmt: str, household: str | None = None) -> Iterator[Converted]:
    if fmt == "readings":
        return read_lines(path)
    if fmt == "lcl":
        return _without_duplicates(convert_lcl(path))
    if fmt == "uci":
        return _without_duplicates(convert_uci(path, household or UCI_DEFAULT_HOUSEHOLD))
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
