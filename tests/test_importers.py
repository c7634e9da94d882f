"""Real public smart-meter files -> readings: totals preserved, unreadable rows reported."""
from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import SHARED
from pipeline.ingest import importers
from pipeline.core.clock import parse_utc
from pipeline.ingest.importers import HALF_HOUR_MINUTES, convert, per_minute

REAL = SHARED / "data" / "real"


def readings_total(path: Path, fmt: str) -> tuple[Decimal, list, list]:
    items = list(convert(path, fmt))
    lines = [i.value.decode() for i in items if i.value is not None]
    skipped = [(i.line_no, i.skipped) for i in items if i.skipped]
    return sum(Decimal(line.split(",")[2]) for line in lines), lines, skipped


def lcl_source_total(path: Path) -> Decimal:
    """Sum of the file's kWh over distinct (household, time), ignoring non-numeric values."""
    seen, total = set(), Decimal(0)
    with path.open(newline="") as handle:
        rows = csv.reader(handle)
        next(rows)
        for household, stamp, value in rows:
            value = value.strip()
            if (household, stamp) in seen or not value.replace(".", "", 1).isdigit():
                continue
            seen.add((household, stamp))
            total += Decimal(value)
    return total


def uci_source_total(path: Path) -> Decimal:
    """Sum of Global_active_power (kW over one minute) / 60 over rows with a value."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    column = [c.strip().lower() for c in rows[0]].index("global_active_power")
    values = [r[column] for r in rows[1:] if r[column] not in ("?", "", "NA")]
    return sum(Decimal(v) for v in values) / 60


@pytest.mark.parametrize("name", ["lcl_MAC000002.csv", "lcl_MAC000323_block.csv"])
def test_lcl_totals_match_source(name):
    path = REAL / name
    total, lines, skipped = readings_total(path, "lcl")
    assert total == lcl_source_total(path)
    household = "H" + name.split("MAC")[1][:6]
    assert all(line.split(",")[1] == household for line in lines)
    assert len(lines) + len(skipped) == sum(1 for _ in path.open()) - 1


def test_lcl_per_minute_keeps_the_total_and_spreads_each_half_hour_over_its_minutes():
    path = REAL / "lcl_MAC000002.csv"
    total, lines, _ = readings_total(path, "lcl")
    spread = [per_minute(line.encode()) for line in lines]
    assert all(len(minutes) == HALF_HOUR_MINUTES for minutes in spread)
    assert sum(Decimal(m.split(b",")[2].decode()) for minutes in spread for m in minutes) == total
    for line, minutes in zip(lines, spread):
        start = parse_utc(line.split(",")[0])
        values = [Decimal(m.split(b",")[2].decode()) for m in minutes]
        assert [parse_utc(m.split(b",")[0].decode()) for m in minutes] == list(range(start, start + 1800, 60))
        assert {m.split(b",")[1].decode() for m in minutes} == {line.split(",")[1]}
        assert sum(values) == Decimal(line.split(",")[2]) and max(values) - min(values) <= Decimal("1e-9")


def test_lcl_reports_null_and_duplicates_with_line_numbers():
    _, _, skipped = readings_total(REAL / "lcl_MAC000002.csv", "lcl")
    reasons = [why for _, why in skipped]
    assert sum("duplicate of line" in r for r in reasons) == 17
    assert any("Null" in r for r in reasons)
    assert all(isinstance(n, int) and n >= 2 for n, _ in skipped)


@pytest.mark.parametrize("name", ["uci_household_2007-02.csv", "uci_household_2006-12_raw.csv"])
def test_uci_totals_match_source(name):
    path = REAL / name
    total, lines, skipped = readings_total(path, "uci")
    assert abs(total - uci_source_total(path)) <= Decimal("0.0000000005") * len(lines)
    assert lines[0].startswith("2007-02-01T00:00:00Z,H900001," if "2007" in name else "2006-12-16T17:24:00Z,H900001,")


def test_uci_question_marks_are_skipped_and_reported():
    _, _, skipped = readings_total(REAL / "uci_household_2006-12_raw.csv", "uci")
    assert len(skipped) == 2 and all("'?'" in why for _, why in skipped)


def test_readings_format_keeps_lines_as_they_are(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"2026-01-05T17:00:15Z,H001,0.01234\r\n\xff,H002,1\n\nlast,line")
    items = list(convert(path, "readings"))
    assert [i.value for i in items] == [b"2026-01-05T17:00:15Z,H001,0.01234", b"\xff,H002,1", b"", b"last,line"]
    assert [i.key for i in items] == ["H001", "H002", None, "line"]


def test_a_huge_line_is_read_cut_to_the_bound_and_numbering_goes_on(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_bytes(b"a\n" + b"x" * (3 * importers.MAX_RAW_LINE_BYTES) + b"\nb\n")
    items = list(importers.read_lines(path))
    assert [i.line_no for i in items] == [1, 2, 3]
    assert [items[0].value, items[2].value] == [b"a", b"b"]
    assert len(items[1].value) == importers.MAX_RAW_LINE_BYTES + 1
    assert items[2].end_offset == path.stat().st_size
