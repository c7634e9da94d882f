"""What the bench reports beside its rates: peak memory, the machine, the chart and the table."""
from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path


def peak_rss_mib() -> dict:
    """Peak resident memory (VmHWM) of this process's driver JVM and Spark Python workers, read
    from /proc while they still run (other sessions' processes are not counted), and of this
    Python process (the PySpark driver side)."""
    parents, status = {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            status[int(proc.name)] = ((proc / "cmdline").read_bytes().replace(b"\0", b" "), (proc / "status").read_text())
        except OSError:
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    jvm = workers = 0
    for pid, (cmdline, text) in status.items():
        if not _descends_from(pid, os.getpid(), parents):
            continue
        hwm = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmHWM")), 0)
        if b"org.apache.spark.deploy.SparkSubmit" in cmdline:
            jvm = max(jvm, hwm)
        elif b"pyspark.daemon" in cmdline or b"pyspark.worker" in cmdline:
            workers += hwm
    return {"driver_jvm_mib": round(jvm / 1024), "python_workers_mib": round(workers / 1024),
            "driver_python_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _descends_from(pid: int, ancestor: int, parents: dict) -> bool:
    while pid > 1:
        pid = parents.get(pid, 0)
        if pid == ancestor:
            return True
    return False


def machine() -> dict:
    import pyspark

    return {"cores": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "pyspark": pyspark.__version__, "kafka": "4.1.1",
            "platform": platform.platform()}


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, sweep) = plt.subplots(1, 3, figsize=(14, 4))
    modes = ["demo", "prod"]
    drained = ("ours", "ours_baseline_off", "original")
    for i, which in enumerate(drained):
        values = [result["drain_readings_per_s"][m][which] for m in modes]
        left.bar([x + i * 0.27 for x in range(2)], values, width=0.27, label=which.replace("_", " "))
    left.set_xticks([0.27, 1.27], modes)
    left.set_ylabel("readings/s")
    left.set_title("Drain throughput")
    left.legend()
    lat = result["latency_s"]["demo"]
    names = [w for w in ("ours", "ours+history", "original") if lat[w]["p99"] is not None]
    colours = {"ours": "tab:blue", "ours+history": "tab:cyan", "original": "tab:green"}
    right.bar(names, [lat[w]["p99"] for w in names], color=[colours[w] for w in names])
    right.set_ylabel("seconds")
    right.set_title("p99 reading→alert latency (demo)")
    households = sorted(int(h) for h in result["drain_by_households"])
    sweep.plot(households, [result["drain_by_households"][str(h)] for h in households], marker="o")
    sweep.set_xscale("log")
    sweep.set_ylim(bottom=0)
    sweep.set_xlabel("households")
    sweep.set_ylabel("readings/s")
    sweep.set_title("Drain by households (prod, ours)")
    fig.suptitle(f"{result['machine']['cores']} cores, pyspark {result['machine']['pyspark']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def print_drains(drained: dict) -> None:
    """Each mode's drain rates, ours (BASELINE=on, off) beside the original, with the ratios."""
    print(f"\n{'measure':<34}{'ours':>14}{'original':>14}{'ratio':>10}")
    for mode, rates in drained.items():
        on, off, original = (rates[w]["readings_per_s"] for w in ("ours", "ours_baseline_off", "original"))
        print(f"{'drain readings/s ' + mode:<34}{on:>14,}{original:>14,}{on / original:>10.2f}")
        print(f"{'  BASELINE=off':<34}{off:>14,}{'':>14}{off / original:>10.2f}  (on/off {on / off:.3f})")
        for label, which in (("on", "ours"), ("off", "ours_baseline_off")):
            print(f"{'  ' + label + ' / original, each turn':<34}"
                  f"{', '.join(f'{r:.2f}' for r in rates[which]['ratio_per_turn']):>38}")


def print_table(result: dict) -> None:
    """The run's figures, one measure a line, ours beside the original where both ran."""
    print_drains(result["drain_detail"])
    lat = result["latency_s"]["demo"]
    for q in ("p50", "p95", "p99"):
        print(f"{'latency demo ' + q + ' (s)':<34}{str(lat['ours'][q]):>14}{str(lat['original'][q]):>14}")
    runs = lat["ours_runs"]
    print(f"{f'latency demo p99, {len(runs)} run(s) (s)':<34}{', '.join(str(r['p99']) for r in runs):>14}")
    for households, rate in result["drain_by_households"].items():
        print(f"{'drain prod, ' + f'{int(households):,}' + ' households':<34}{rate:>14,}")
    _print_live_prod(result)
    print(f"{'latency demo p99, history on (s)':<34}{str(lat['ours+history']['p99']):>14}"
          f"{'':>14}{str(lat['history_p99_over_without']):>10}  (history on / off)")
    check = lat["histogram_p99"]
    print(f"{'latency p99, job histogram (s)':<34}{str(check['histogram']):>14}   measured {check['measured']}, "
          f"{check['buckets_apart']} bucket(s) apart")
    for name, value in result["producer_readings_per_s"].items():
        print(f"{'producer ' + name + ' readings/s':<34}{value:>14,}")
    for mode in ("demo", "prod"):
        detail = result["drain_detail"][mode]
        print(f"{'state after drain ' + mode + ' (MiB)':<34}{detail['ours']['state_memory_mib']:>14}"
              f"{detail['original']['state_memory_mib']:>14}")
    print(f"{'peak RSS (MiB)':<34}{json.dumps({k: v for k, v in result['memory'].items() if k != 'drain_sessions'})}")
    for session, memory in result["memory"]["drain_sessions"].items():
        print(f"{'  drain session ' + session:<34}{json.dumps(memory)}")


def _print_live_prod(result: dict) -> None:
    live_prod, first = result["live_prod"], result["live_prod_first_run"]
    print(f"{'live prod batch p50/p95/max (ms)':<34}{live_prod['batch_ms_p50']:>14}{'':>14}"
          f"  p95 {live_prod['batch_ms_p95']}, max {live_prod['batch_ms_max']} at "
          f"{live_prod['households']:,} households, trigger 1000 ms")
    steady = live_prod["steady"]
    label = f"  after the first {steady['after_s']:.0f} s"
    print(f"{label:<34}{steady['batch_ms_p50']!s:>14}{'':>14}"
          f"  p95 {steady['batch_ms_p95']}, max {steady['batch_ms_max']} ({steady['batches']} batches)")
    off = result["live_prod_baseline_off"]["steady"]
    label = "  the same, BASELINE=off"
    print(f"{label:<34}{off['batch_ms_p50']!s:>14}{'':>14}"
          f"  p95 {off['batch_ms_p95']}, max {off['batch_ms_max']} ({off['batches']} batches)")
    label = "  this JVM's first live run"
    print(f"{label:<34}{first['batch_ms_p50']!s:>14}{'':>14}"
          f"  p95 {first['batch_ms_p95']}, max {first['batch_ms_max']}; after the first {steady['after_s']:.0f} s "
          f"max {first['steady']['batch_ms_max']}")
