"""Crash recovery and mode switching, through the real `energy-monitor stream` process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.settings import with_values

from helpers import publish, records, run_cli, run_job_once, settings_env
from pipeline.ingest.simulator import Simulator
from pipeline.core.checkpoint import checkpoint_dir
from reference import iso

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

T0 = 1_783_000_800


def simulated_lines(households: int, ticks: int, start: int, seed: int = 7) -> list[str]:
    return [line for _, line in Simulator(households, 15, 10.0, seed, start).lines(ticks)]


def alert_ids(settings) -> set[str]:
    return {a["alert_id"] for a in records(settings, settings.kafka.alerts_topic)}


@pytest.mark.parametrize("operator", ["python", "jvm"])
def test_sigkill_and_restart_gives_the_same_alert_ids(make_settings, spark, tmp_path, operator):
    base = make_settings(run_mode="demo", max_offsets_per_trigger=300, trigger_interval="1 second",
                         state_operator=operator)
    publish(base, simulated_lines(households=20, ticks=120, start=T0))  # 2400 readings, 8+ batches

    uninterrupted = with_values(base, alerts_topic=base.kafka.alerts_topic + "_ref",
                                        checkpoint_root=str(tmp_path / "ref"))
    run_job_once(spark, uninterrupted)
    expected = alert_ids(uninterrupted)
    assert len(expected) > 20
    assert {a["kind"] for a in records(uninterrupted, uninterrupted.kafka.alerts_topic)} == {"threshold", "baseline"}

    log = (tmp_path / "crashing.log").open("wb")
    job = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stream"], env=settings_env(base),
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    commits = Path(checkpoint_dir(base.job)) / "commits"
    deadline = time.monotonic() + 240
    while not (commits.is_dir() and len(list(commits.glob("[0-9]*"))) >= 2):
        assert job.poll() is None, (tmp_path / "crashing.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the job committed no batches"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    before_restart = alert_ids(base)
    assert before_restart < expected, "the kill came too late to interrupt the stream"

    run_cli(base, "stream", "--once")
    assert alert_ids(base) == expected


def test_mode_switch_needs_no_checkpoint_cleanup(make_settings, spark):
    demo = make_settings(run_mode="demo")
    prod = with_values(demo, run_mode="prod")
    first = [f"{iso(T0 + 15 * i)},H010,0.3" for i in range(12)]  # alerts in both modes
    publish(demo, first)

    out = run_cli(demo, "stream", "--once")
    assert "rule 'kwh>0.05 over 1 minute'" in out.stderr and str(checkpoint_dir(demo.job)) in out.stderr
    run1 = records(demo, demo.kafka.alerts_topic)
    assert run1 and {a["mode"] for a in run1} == {"demo"}

    out = run_cli(prod, "stream", "--once")
    assert "rule 'kwh>2.0 over 15 minutes'" in out.stderr and str(checkpoint_dir(prod.job)) in out.stderr
    run2 = records(demo, demo.kafka.alerts_topic)[len(run1):]
    assert run2 and {(a["mode"], a["rule"]) for a in run2} == {("prod", "kwh>2.0 over 15 minutes")}

    publish(demo, [f"{iso(T0 + 1800 + 15 * i)},H010,0.3" for i in range(4)])
    run_job_once(spark, demo)
    run3 = records(demo, demo.kafka.alerts_topic)[len(run1) + len(run2):]
    assert run3 and {a["mode"] for a in run3} == {"demo"}
    # Resumed from the demo checkpoint: only the new readings' windows, none of run 1's again.
    assert not {a["alert_id"] for a in run3} & {a["alert_id"] for a in run1}
    assert min(a["window_start"] for a in run3) >= iso(T0 + 1800 - 45)


def test_checkpoint_files_go_through_the_filesystem_manager(spark, tmp_path):
    """The manager Spark builds for a checkpoint (query offsets, commits, state deltas) is the
    FileSystem-based one: without Hadoop's native library the default (FileContext) one runs
    `readlink` as a child process for every rename, about 16 a batch (driver.spark_session)."""
    jvm = spark._jvm
    checkpoint = jvm.org.apache.hadoop.fs.Path(tmp_path.as_uri())
    hadoop_conf = spark._jsparkSession.sessionState().newHadoopConf()
    manager = jvm.org.apache.spark.sql.execution.streaming.CheckpointFileManager.create(checkpoint, hadoop_conf)
    assert manager.getClass().getSimpleName() == "FileSystemBasedCheckpointFileManager"


def test_a_job_that_died_twice_in_one_batch_says_so_and_runs_it_in_smaller_batches(make_settings, spark, tmp_path):
    settings = make_settings(run_mode="demo", max_offsets_per_trigger=100_000)
    publish(settings, simulated_lines(households=30, ticks=40, start=T0))  # 1,200 readings: one batch
    reference = with_values(settings, alerts_topic=settings.kafka.alerts_topic + "_ref",
                                    checkpoint_root=str(tmp_path / "ref"))
    run_job_once(spark, reference)
    expected = alert_ids(reference)
    assert expected

    offsets = Path(checkpoint_dir(settings.job)) / "offsets"
    for death in range(2):
        with (tmp_path / f"death-{death}.log").open("wb") as log:
            job = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stream", "--once"], env=settings_env(settings),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline, said = time.monotonic() + 240, tmp_path / f"death-{death}.log"
            # batch 0 planned, and this run's query running it
            while not ((offsets / "0").exists() and "query energy-alerts-demo started" in said.read_text()):
                assert job.poll() is None and time.monotonic() < deadline, said.read_text()[-3000:]
                time.sleep(0.01)
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert not (offsets.parent / "commits" / "0").exists() and not alert_ids(settings)

    third = run_cli(with_values(settings, max_offsets_per_trigger=500), "stream", "--once")
    loop = [line for line in third.stderr.splitlines() if "crash loop" in line]
    assert len(loop) == 1, third.stderr[-3000:]
    assert ("died 2 times in batch 0 (last cause: the run ended without saying why" in loop[0]
            and "raise SPARK_DRIVER_MEMORY" in loop[0] and "below its 1,200 readings" in loop[0])
    assert "batches 3," in third.stdout  # planned again: 500 + 500 + 200
    assert alert_ids(settings) == expected
    assert "crash loop" not in run_cli(settings, "stream", "--once").stderr
