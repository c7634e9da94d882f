"""Turn recorded files into readings lines for `energy-monitor replay`.

- `readings`: each line of the file as it is (bytes, so non-UTF-8 lines reach the dead-letter
  topic exactly as recorded).
- `lcl`: Low Carbon London half-hourly files (`LCLid,DateTime|tstp,KWH/hh`): the value is already
  kWh per half hour, stamped with the row's DateTime. Household id: `H` + the digits of the
  LCLid (MAC000002 -> H000002). `per_minute` turns such a reading into one a minute over the
  half hour it starts: the baseline rule's windows in prod are 15 minutes, and a run of windows
  needs a reading in each.
- `uci`: the UCI household power file, raw (`Date;Time;...` or comma) or as written by R
  (index column, quoted): Global_active_power is kW averaged over the minute, so the minute's
  energy is kW / 60, stamped at the start of the minute. The dataset has one household; it is
  `H900001` unless `--household` names another.

Files are read line by line (never whole), so a file of any size streams. A UTF-8 byte-order
mark is dropped, a line that is not UTF-8 is skipped and reported with its number, and LCL
columns are found by their header names (the 3-column sample layouts and the full data set's
`LCLid,stdorToU,DateTime,KWH/hh (per half hour)` layout alike).

Rows repeating an earlier row's household and time are skipped as duplicates (the LCL sample
has such real duplicates), so no interval is counted twice. Converted values keep 9 decimals
(the pipeline sums nano-kWh), so the readings' total equals the source's.

Converters yield `Converted` items: a line to publish or a skipped row with its line number and
why; the caller reports both and prints the summary.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

from pipeline.core.clock import parse_utc
from pipeline.ingest.simulator import format_reading

FORMATS = ("readings", "lcl", "uci")
UCI_DEFAULT_HOUSEHOLD = "H900001"
HALF_HOUR_MINUTES = 30
NANO = Decimal(10**9)
# Above the Kafka client's default message.max.bytes (1,000,000), so a longer line is refused
# by it and reported, never sent cut short.
MAX_RAW_LINE_BYTES = 1 << 20
_LCL_ID = re.compile(r"^MAC(\d+)$")


@dataclass(frozen=True)
class Converted:
    line_no: int
    key: str | None = None
    value: bytes | None = None
    skipped: str | None = None  # why the row could not be converted
    end_offset: int = 0  # bytes of the file read up to the end of this line (for progress)


def household_from_line(line: bytes) -> str | None:
    parts = line.split(b",")
    if len(parts) >= 2:
        try:
            return parts[1].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line without its terminator, bytes read so far), one line at a time. Of a
    line longer than MAX_RAW_LINE_BYTES only that much is kept (no record that large can be
    sent), so memory stays bounded whatever the file holds."""
    with path.open("rb") as handle:
        offset = number = 0
        while line := handle.readline(MAX_RAW_LINE_BYTES + 1):
            number += 1
            offset += len(line)
            if len(line) > MAX_RAW_LINE_BYTES and not line.endswith(b"\n"):
                offset += _skip_rest_of_line(handle)
            yield number, line.rstrip(b"\n").rstrip(b"\r"), offset


def _skip_rest_of_line(handle) -> int:
    skipped = 0
    while chunk := handle.readline(MAX_RAW_LINE_BYTES):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def read_lines(path: Path) -> Iterator[Converted]:
    for number, line, offset in _raw_lines(path):
        yield Converted(number, household_from_line(line), line, end_offset=offset)


def _text_rows(path: Path, delimiter: str | None = None) -> Iterator[tuple[int, list[str] | None, int]]:
    """CSV rows decoded line by line: (number, fields or None if not UTF-8, offset). The
    delimiter, when not given, is the header's most frequent of ';' and ','."""
    for number, line, offset in _raw_lines(path):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None, offset
            continue
        if number == 1:
            text = text.lstrip("\ufeff")
            delimiter = delimiter or (";" if text.count(";") > text.count(",") else ",")
        yield number, next(csv.reader([text], delimiter=delimiter or ","), []), offset


def _utc(stamp: datetime) -> int:
    return int(stamp.replace(tzinfo=timezone.utc).timestamp())


def _lcl_columns(header: list[str]) -> tuple[int, int, int] | None:
    names = [name.strip().lower() for name in header]
    time_col = next((i for i, n in enumerate(names) if n in ("datetime", "tstp")), None)
    kwh_col = next((i for i, n in enumerate(names) if "kwh" in n), None)
    if "lclid" not in names or time_col is None or kwh_col is None:
        return None
    return names.index("lclid"), time_col, kwh_col


def _lcl_row(number: int, row: list[str], columns: tuple[int, int, int], offset: int) -> Converted:
    id_col, time_col, kwh_col = columns
    if len(row) <= max(columns):
        return Converted(number, skipped=f"expected at least {max(columns) + 1} fields, got {len(row)}",
                         end_offset=offset)
    match = _LCL_ID.match(row[id_col].strip())
    try:
        end = datetime.strptime(row[time_col].strip()[:19], "%Y-%m-%d %H:%M:%S")
        kwh = float(row[kwh_col].strip())
    except ValueError:
        return Converted(number, skipped=f"unreadable time or value: {row[time_col].strip()!r}, "
                                         f"{row[kwh_col].strip()!r}", end_offset=offset)
    if match is None:
        return Converted(number, skipped=f"household id {row[id_col]!r} is not MACnnnnnn", end_offset=offset)
    household = f"H{match.group(1)}"
    return Converted(number, household, format_reading(_utc(end), household, kwh, 9).encode(), end_offset=offset)


def convert_lcl(path: Path) -> Iterator[Converted]:
    columns = None
    for number, row, offset in _text_rows(path, ","):
        if row is None:
            yield Converted(number, skipped="not UTF-8", end_offset=offset)
        elif columns is None:
            columns = _lcl_columns(row) if number == 1 else None
            if columns is None:
                yield Converted(number, skipped="no LCL header (LCLid, DateTime or tstp, a kWh column); "
                                                "the file is not converted", end_offset=offset)
                return
        else:
            yield _lcl_row(number, row, columns, offset)


def _uci_row(number: int, row: dict[str, str], household: str, offset: int) -> Converted:
    date, clock, power = row.get("date"), row.get("time"), row.get("global_active_power")
    if not date or not clock or power is None:
        return Converted(number, skipped="missing date, time or global_active_power", end_offset=offset)
    try:
        start = datetime.strptime(f"{date.strip()} {clock.strip()}", "%d/%m/%Y %H:%M:%S")
    except ValueError:
        return Converted(number, skipped=f"unreadable date/time {date!r} {clock!r}", end_offset=offset)
    try:
        kw = float(power)
    except ValueError:
        return Converted(number, skipped=f"missing value {power!r}", end_offset=offset)
    return Converted(number, household, format_reading(_utc(start), household, kw / 60.0, 9).encode(),
                     end_offset=offset)


def convert_uci(path: Path, household: str = UCI_DEFAULT_HOUSEHOLD) -> Iterator[Converted]:
    header = None
    for number, row, offset in _text_rows(path):
        if row is None:
            yield Converted(number, skipped="not UTF-8", end_offset=offset)
        elif header is None:
            header = [name.strip().lower() for name in row]
        else:
            yield _uci_row(number, dict(zip(header, row)), household, offset)


def _without_duplicates(items: Iterator[Converted]) -> Iterator[Converted]:
    first_seen: dict[tuple[str, bytes], int] = {}
    for item in items:
        if item.value is not None:
            stamp = item.value.split(b",", 1)[0]
            earlier = first_seen.setdefault((item.key, stamp), item.line_no)
            if earlier != item.line_no:
                item = Converted(item.line_no, skipped=f"duplicate of line {earlier}", end_offset=item.end_offset)
        yield item


def per_minute(line: bytes, minutes: int = HALF_HOUR_MINUTES) -> list[bytes]:
    """A converted reading of an interval (stamped at its start) as one reading a minute over the
    interval, the energy split in nano-kWh so that the minutes add up to the interval's exactly."""
    stamp, household, kwh = line.decode("utf-8").split(",")
    start, units = parse_utc(stamp), int(Decimal(kwh) * NANO)
    share, rest = divmod(units, minutes)
    return [format_reading(start + 60 * minute, household, (share + (minute < rest)) / NANO, 9).encode()
            for minute in range(minutes)]


def convert(path: Path, fmt: str, household: str | None = None) -> Iterator[Converted]:
    if fmt == "readings":
        return read_lines(path)
    if fmt == "lcl":
        return _without_duplicates(convert_lcl(path))
    if fmt == "uci":
        return _without_duplicates(convert_uci(path, household or UCI_DEFAULT_HOUSEHOLD))
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
