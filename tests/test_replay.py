"""`energy-monitor replay` against the real broker: what Kafka refuses is reported and passed
over, everything else is delivered, and the summary and exit code say so."""
from __future__ import annotations

import pytest

from helpers import run_cli
from pipeline.core.kafka import read_topic

pytestmark = [pytest.mark.kafka]


def test_a_line_kafka_refuses_is_reported_by_number_and_the_rest_is_delivered(make_settings, tmp_path):
    settings = make_settings()
    good = ["2026-01-05T17:00:15Z,H001,0.01234", "2026-01-05T17:00:30Z,H002,0.5"]
    path = tmp_path / "readings.csv"
    with path.open("wb") as handle:
        handle.write(good[0].encode() + b"\n")
        handle.write(b"2026-01-05T17:00:15Z,H003," + b"9" * 3_000_000 + b"\n")  # over any record size
        handle.write(good[1].encode() + b"\n")
    result = run_cli(settings, "replay", str(path), check=False)
    assert result.returncode == 1, result.stderr
    assert f"{path}:2: skipped: refused by Kafka" in result.stderr
    assert "Traceback" not in result.stderr
    assert "lines read 3, published 2, skipped 0, refused 1, failed 0" in result.stdout
    delivered = [m.value().decode() for m in read_topic(settings.kafka.bootstrap_servers, settings.kafka.readings_topic,
                                                        stop_at_end=True)]
    assert sorted(delivered) == good


def test_a_file_without_refusals_exits_0(make_settings, tmp_path):
    settings = make_settings()
    path = tmp_path / "readings.csv"
    path.write_text("2026-01-05T17:00:15Z,H001,0.01234\nnot a reading\n")
    result = run_cli(settings, "replay", str(path))
    assert "lines read 2, published 2, skipped 0, refused 0, failed 0" in result.stdout


def test_per_minute_publishes_each_half_hour_as_thirty_readings_of_its_energy(make_settings, tmp_path):
    settings = make_settings()
    path = tmp_path / "lcl.csv"
    path.write_text("LCLid,DateTime,KWH/hh (per half hour)\nMAC000002,2012-10-12 00:30:00.0000000, 0.301\n"
                    "MAC000002,2012-10-12 01:00:00.0000000,Null\n")
    result = run_cli(settings, "replay", str(path), "--format", "lcl", "--per-minute", check=False)
    assert result.returncode == 0, result.stderr
    assert "lines read 2, published 30, skipped 1, refused 0, failed 0" in result.stdout
    delivered = sorted(m.value().decode() for m in read_topic(settings.kafka.bootstrap_servers,
                                                               settings.kafka.readings_topic, stop_at_end=True))
    assert delivered[0] == "2012-10-12T00:30:00Z,H000002,0.010033334"
    assert delivered[-1] == "2012-10-12T00:59:00Z,H000002,0.010033333"
    assert len(delivered) == 30


def test_per_minute_with_another_format_is_refused(make_settings, tmp_path):
    settings = make_settings()
    path = tmp_path / "readings.csv"
    path.write_text("2026-01-05T17:00:15Z,H001,0.01234\n")
    result = run_cli(settings, "replay", str(path), "--per-minute", check=False)
    assert result.returncode != 0 and "--per-minute spreads half-hourly readings" in result.stderr
    assert "Traceback" not in result.stderr
