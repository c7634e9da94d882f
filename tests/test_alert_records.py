"""Every consumer of the alerts topic reads any record: parse_alert turns it into an alert or a
reason, and what it accepts the history can store (no pyspark, no broker)."""
from __future__ import annotations

import json
import random

import pytest

from pipeline.core.alert import parse_alert
from pipeline.core.history import alert_documents, alerts_table

GOOD = {"alert_id": "a1", "household_id": "H001", "window_start": "2026-07-02T14:00:00Z",
        "window_end": "2026-07-02T14:01:00Z", "kwh": 0.07, "threshold_kwh": 0.05, "rule": "kwh>0.05 over 1 minute",
        "mode": "demo", "detected_at": "2026-07-02T14:01:00Z", "kind": "baseline", "baseline_kwh": 0.01,
        "excess_kwh": 0.002, "baseline_windows": 9, "slot": 0}


@pytest.mark.parametrize("raw", [
    b'{"kwh": 1e400}', json.dumps({**GOOD, "kwh": "1e400"}).encode(),
    json.dumps(GOOD).replace('"kwh": 0.07', '"kwh": 1' + "0" * 400).encode(),
    json.dumps({**GOOD, "kwh": 1e20}).encode(), json.dumps({**GOOD, "window_start": "9999-01-01T00:00:00Z",
                                                          "window_end": "9999-01-01T00:01:00Z"}).encode(),
    json.dumps({**GOOD, "detected_at": 1783000800}).encode(), json.dumps({**GOOD, "kind": 3}).encode(),
    json.dumps({**GOOD, "baseline_windows": 2.5}).encode(), json.dumps({**GOOD, "slot": "0"}).encode(),
    json.dumps({**GOOD, "window_end": GOOD["window_start"]}).encode(), b"[" * 100_000,
])
def test_shapes_that_broke_consumers_are_reasons(raw):
    parsed = parse_alert(raw)
    assert parsed.alert is None and parsed.problem


def values() -> list:
    return [0, -1, 1.5, 1e308, -1e308, 10**30, 10**400, True, None, "", "x" * 300, "2026-07-02T14:00:00Z",
            "9999-12-31T23:59:59Z", "1970-01-01T00:00:00+00:00", "nan", "H001", [1], {"a": 1}, 1e-300]


def test_any_json_value_in_any_field_is_an_alert_the_history_stores_or_a_reason():
    rng = random.Random(7)
    accepted = []
    for _ in range(3000):
        record = dict(GOOD, alert_id=f"a{len(accepted)}")
        for name in rng.sample(sorted(GOOD), rng.randint(1, 4)):
            record[name] = rng.choice(values())
        raw = json.dumps(record).replace("NaN", "1e999")  # json.dumps writes NaN; a producer may write anything
        parsed = parse_alert(raw.encode())
        assert (parsed.alert is None) != (parsed.problem is None)
        if parsed.alert is not None:
            accepted.append(parsed.alert)
    assert accepted, "some records stay alerts"
    documents = alert_documents(alerts_table(accepted).to_pandas())
    assert [d["alert_id"] for d in documents] == [a["alert_id"] for a in accepted]


def test_the_archiver_imports_without_pyspark():
    import subprocess
    import sys

    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('pyspark', 'py4j'):\n"
               "            raise ImportError('blocked: ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "import pipeline.archiver.archive, pipeline.core.contract, pipeline.core.history\n"
               "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
