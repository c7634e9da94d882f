"""Writes the expected results of the baseline rule's public cases (excess_<mode>_expected.json)
from the independent model of the contract (tests/reference.py), with each mode's defaults:

    .venv/bin/python tests/conformance/make_expected.py

The inputs are the shared baseline cases' two phases (gzipped here); the fixed rule's alerts, the
dead letters and the late readings of those cases do not depend on the baseline rule and are taken
from the shared expected files, which were computed independently of this project.
"""
from __future__ import annotations

import gzip
import json
import sys
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from reference import BaselineExpectation, valid_readings  # noqa: E402

from pipeline.core.settings import load_settings  # noqa: E402

UNITS = 10**9
SHARED = HERE.parents[2] / "shared" / "conformance"


def main() -> None:
    for mode in ("demo", "prod"):
        rule = load_settings({"RUN_MODE": mode}).baseline
        model = BaselineExpectation(rule.window_s, rule.slide_s, rule.watermark_s, rule.slot_s, rule.slots,
                                    rule.quantile, rule.alpha, rule.warmup, rule.excess_kwh, rule.persist_kwh, rule.run,
                                    rule.fast_run, rule.fast_kwh, rule.fast_scale)
        for phase in (1, 2):
            lines = gzip.decompress((HERE / f"excess_{mode}_phase{phase}.csv.gz").read_bytes())
            model.batch([(h, t, Decimal(u) / UNITS) for h, t, u in valid_readings(lines)])
        shared = json.loads((SHARED / f"baseline_{mode}_expected.json").read_text())
        alerts = [[h, start, *model.end_and_sum(h, start), *values] for (h, start), values in sorted(model.alerts().items())]
        expected = {"mode": mode, "window_s": rule.window_s, "slide_s": rule.slide_s, "watermark_s": rule.watermark_s,
                    "slot_s": rule.slot_s, "slots": rule.slots, "quantile": rule.quantile, "alpha": rule.alpha,
                    "warmup": rule.warmup, "excess_kwh": rule.excess_kwh, "persist_kwh": rule.persist_kwh,
                    "run": rule.run, "fast_run": rule.fast_run, "fast_kwh": rule.fast_kwh,
                    "fast_scale": rule.fast_scale, "dead_letters": shared["dead_letters"],
                    "late_readings_dropped": shared["late_readings_dropped"],
                    "threshold_alerts": shared["threshold_alerts"], "baseline_alerts": alerts}
        (HERE / f"excess_{mode}_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(f"{mode}: {len(alerts)} baseline alerts, {len(expected['threshold_alerts'])} threshold alerts")


if __name__ == "__main__":
    main()
